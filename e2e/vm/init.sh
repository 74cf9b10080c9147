#!/bin/sh
# /init of the vipctl VM lab: load the modules, mount the 9p share the host
# exports, run its run.sh and power off. Everything goes to the serial
# console, which the host harness reads.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
[ -e /var/run ] || { mkdir -p /var; ln -s /run /var/run; }   # netns names live in /var/run/netns
kver=$(uname -r)
while read -r ko; do
  opts=""
  case $ko in */dummy.ko) opts="numdummies=0" ;; esac
  # crc32c-intel fails with ENODEV on CPUs without SSE4.2: harmless.
  insmod "/lib/modules/$kver/$ko" $opts 2>/tmp/insmod.err || echo "LAB: insmod $ko: $(cat /tmp/insmod.err)"
done < /etc/modules.order
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
echo "LAB EXIT $rc"
sync
poweroff -f
