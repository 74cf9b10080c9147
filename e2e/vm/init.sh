#!/bin/sh
# /init of the vipctl VM lab: load the modules, mount the 9p share the host
# exports, run its run.sh and power off. Everything goes to the serial
# console, which the host harness reads.
#
# With a disk (vm.Config.Disk: vipctl.disk= on the kernel's command line)
# the VM is a machine with a disk: this script, started from the
# initramfs, mounts the disk, fills it with the initramfs's files on the
# first boot, and switches root to it, where it runs again as "init disk":
# everything written outside /tmp, /run, /proc, /sys and /dev is kept from
# one boot to the next. The IPVS modules are then not loaded here: as on a
# real node, whoever needs them loads them (vipctl's modprobe,
# /etc/modules-load.d). run.sh asks for a reboot by creating
# /run/lab-reboot: once it has ended with 0, this script prints
# "LAB REBOOT" and restarts the kernel (qemu, run with -no-reboot, exits;
# the host boots it again on the same disk).
#
# A disk whose machine has an init system installed (systemd, as
# /lib/systemd/systemd: the host installs it on the cluster lab's VM
# disks, /init included, so those are never filled here) boots with it:
# this script loads the initramfs's modules, as an initramfs
# would, and hands over to systemd. The machine's unit vipctl-lab.service
# then runs "init lab": the share's run.sh, its exit reported as above,
# then systemd's poweroff (or reboot when asked).
export PATH=/bin:/sbin
if [ "$1" = lab ]; then
  exec >/dev/console 2>&1
  rc=0
  mkdir -p /mnt/share
  if mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share /mnt/share; then
    cd /mnt/share && sh ./run.sh || rc=$?
  else
    echo "LAB: cannot mount the 9p share"; rc=1
  fi
  cd /
  if [ "$rc" = 0 ] && [ -e /run/lab-reboot ]; then
    echo "LAB REBOOT"
    exec systemctl --no-block start reboot.target --job-mode=replace-irreversibly
  fi
  echo "LAB EXIT $rc"
  exec systemctl --no-block start poweroff.target --job-mode=replace-irreversibly
fi
/bin/busybox --install -s /bin
if [ "$1" != disk ]; then
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
fi
disk=$(sed -n 's/.*vipctl\.disk=\([^ ]*\).*/\1/p' /proc/cmdline)
kver=$(uname -r)
if [ -n "$disk" ] && [ "$1" != disk ]; then
  while read -r ko; do
    e=$(insmod "/lib/modules/$kver/$ko" 2>&1) || echo "LAB: insmod $ko: $e"
  done < /etc/modules.disk
  echo "LAB: initramfs: disk modules loaded at $(cut -d' ' -f1 /proc/uptime)s"
  i=0
  while [ ! -b "$disk" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  mkdir -p /newroot
  if ! mount -t ext4 "$disk" /newroot; then
    echo "LAB: cannot mount the disk $disk"; echo "LAB EXIT 1"; poweroff -f
  fi
  if [ ! -e /newroot/init ]; then
    # The first boot: the machine's / is the initramfs's.
    for f in /*; do
      case $f in /proc|/sys|/dev|/newroot) ;; *) cp -a "$f" /newroot/ ;; esac
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    chmod 755 /newroot
    echo "LAB: disk $disk filled from the initramfs"
  fi
  echo "LAB: initramfs: disk mounted at $(cut -d' ' -f1 /proc/uptime)s"
  for m in /proc /sys /dev; do mount --move "$m" "/newroot$m"; done
  exec switch_root /newroot /init disk
fi
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
[ -e /var/run ] || { mkdir -p /var; ln -s /run /var/run; }   # netns names live in /var/run/netns
order=/etc/modules.order
if [ -n "$disk" ]; then
  # What the disk's boot loaded already, and IPVS: left to the node.
  grep -vxF -f /etc/modules.disk /etc/modules.order | grep -v '/ipvs/' > /tmp/modules.order
  order=/tmp/modules.order
fi
systemd=""
[ "$1" = disk ] && [ -x /lib/systemd/systemd ] && systemd=1
while read -r ko; do
  opts=""
  case $ko in */dummy.ko) opts="numdummies=0" ;; esac
  # crc32c-intel fails with ENODEV on CPUs without SSE4.2: harmless.
  insmod "/lib/modules/$kver/$ko" $opts 2>/tmp/insmod.err || echo "LAB: insmod $ko: $(cat /tmp/insmod.err)"
done < $order
if [ -n "$systemd" ]; then
  echo "LAB: modules loaded at $(cut -d' ' -f1 /proc/uptime)s; starting the machine's init, systemd"
  exec /lib/systemd/systemd
fi
# Let the kernel load modules on demand, as on a real node (busybox modprobe
# reads the modules.dep and modules.alias depmod wrote).
echo /bin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
echo "LAB: modules loaded at $(cut -d' ' -f1 /proc/uptime)s"
rc=0
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share /mnt/share; then
  cd /mnt/share && sh ./run.sh || rc=$?
else
  echo "LAB: cannot mount the 9p share"; rc=1
fi
cd /
reboot=""
[ "$rc" = 0 ] && [ -e /run/lab-reboot ] && reboot=1
if [ -n "$disk" ]; then
  # A machine's shutdown: every process asked to end, then killed; every
  # mount but the kernel's undone (deepest first), the disk written and
  # remounted read-only.
  kill -TERM -1 2>/dev/null
  sleep 1
  kill -KILL -1 2>/dev/null
  awk '$2 != "/" && $2 !~ "^/(proc|sys|dev)(/|$)" {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  sync
  mount -o remount,ro / || echo "LAB: cannot remount the disk read-only"
fi
if [ -n "$reboot" ]; then
  echo "LAB REBOOT"
  reboot -f
fi
echo "LAB EXIT $rc"
sync
poweroff -f
