#!/usr/bin/env bash
# prepare.sh - everything the VM lab needs, from a fresh Debian 12 machine:
# Debian packages (qemu, static busybox, kmod, cpio, xz), Debian's kernel
# package (which has IPVS as modules, unlike many CI and sandbox kernels),
# its uncompressed vmlinux for fast direct boot, and an initramfs holding
# busybox, the IPVS/dummy/veth/bridge/9p/virtio_net modules in load order and /init,
# and the modules a boot on a disk needs (virtio_blk, ext4) in their own list.
#
# Everything downloaded or built is cached in $VIPCTL_CACHE/vm (default
# ~/.cache/vipctl/vm) and reused; a warm run takes well under a second.
# On success the last lines on stdout are KEY=VALUE pairs for the Go harness:
#   KERNEL=... INITRD=... KVER=...
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VIPCTL_CACHE:-${HOME:-/root}/.cache/vipctl}/vm
KFLAVOUR=${KFLAVOUR:-amd64}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[vm-prepare] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, kernel modules)"
mkdir -p "$CACHE"

# ---------------------------------------------------------------- packages
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[[ $(file -L /bin/busybox) == *"statically linked"* ]] || die "/bin/busybox is not static (install busybox-static)"

# ---------------------------------------------------------------- kernel
if [ -z "${KPKG:-}" ]; then
  if [ -f "$CACHE/kpkg" ] && [ -z "${VIPCTL_REFRESH_KERNEL:-}" ]; then
    KPKG=$(cat "$CACHE/kpkg")
  else
    apt-cache show "linux-image-$KFLAVOUR" >/dev/null 2>&1 || apt-get update -qq
    KPKG=$(apt-cache depends "linux-image-$KFLAVOUR" | awk '/Depends: linux-image-/{print $2; exit}')
    [ -n "$KPKG" ] || die "could not resolve linux-image-$KFLAVOUR"
    echo "$KPKG" > "$CACHE/kpkg"
  fi
fi
KVER=${KPKG#linux-image-}
KROOT=$CACHE/kernel-$KVER
if [ ! -f "$KROOT/.extracted" ]; then
  log "downloading $KPKG"
  mkdir -p "$CACHE/dl"; chmod 777 "$CACHE/dl"   # apt's _apt user downloads
  (cd "$CACHE/dl" && rm -f "${KPKG}"_*.deb && apt-get download -q "$KPKG" 2>&1 | grep -v 'unsandboxed' || true)
  deb=$(ls "$CACHE/dl/${KPKG}"_*.deb 2>/dev/null | head -1)
  [ -f "$deb" ] || die "apt-get download $KPKG failed"
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  dpkg -x "$deb" "$KROOT"
  depmod -b "$KROOT" "$KVER"   # the .deb ships no modules.dep
  rm -f "$deb"
  echo "$KPKG" > "$KROOT/.extracted"
fi
for opt in CONFIG_IP_VS CONFIG_IP_VS_RR CONFIG_IP_VS_WRR CONFIG_IP_VS_LC CONFIG_DUMMY CONFIG_VETH \
           CONFIG_BRIDGE CONFIG_NET_NS CONFIG_PVH CONFIG_INET_DIAG_DESTROY CONFIG_NET_9P_VIRTIO; do
  grep -qE "^$opt=[ym]" "$KROOT/boot/config-$KVER" || die "$opt not enabled in $KPKG"
done
# The uncompressed vmlinux has a PVH entry note: qemu boots it directly,
# skipping the in-guest XZ decompression that is slow under TCG.
VMLINUX=$KROOT/boot/vmlinux-$KVER
if [ ! -s "$VMLINUX" ]; then
  VMLINUZ=$KROOT/boot/vmlinuz-$KVER
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | head -1 | cut -d: -f1)
  [ -n "$off" ] || die "no XZ payload in $VMLINUZ"
  tail -c +$((off + 1)) "$VMLINUZ" | xz -dc --single-stream > "$VMLINUX.tmp" 2>/dev/null || true
  file "$VMLINUX.tmp" | grep -q 'ELF 64-bit' || die "extracted vmlinux is not an ELF"
  mv "$VMLINUX.tmp" "$VMLINUX"
fi

# ---------------------------------------------------------------- initramfs
# inet_diag/tcp_diag are not loaded up front: the kernel loads them on
# demand (through /proc/sys/kernel/modprobe) when the watchdog resets
# connections, as on a real node.
MODS=(ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh dummy veth bridge
      virtio_pci 9pnet_virtio 9p virtio_net)
ONDEMAND=(inet_diag tcp_diag)
# A boot with a disk (vm.Config.Disk) loads these first, in the order of
# /etc/modules.disk, to mount it; a boot without one never loads them.
DISKMODS=(virtio_pci virtio_blk ext4)
# The initramfs depends on the kernel, the module lists, /init and this
# script: rebuild when any of them changes.
key=$( { echo "$KVER ${MODS[*]} ${ONDEMAND[*]} ${DISKMODS[*]}"; cat "$HERE/init.sh" "$0"; } | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$KVER-$key.gz
if [ ! -s "$INITRD" ]; then
  log "building initramfs"
  root=$(mktemp -d "$CACHE/initramfs.XXXX")
  chmod 755 "$root"   # mktemp makes it 0700: it becomes /, which every user must traverse
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,mnt/share,lib/modules/"$KVER"}
  mkdir -p "$root/var"; ln -s ../run "$root/var/run"   # netns names live in /var/run/netns
  cp /bin/busybox "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  # copy_mods LIST MODULE...: the modules and their dependencies, in load
  # order, into the initramfs; their paths appended to LIST (none: "").
  copy_mods() {
    local list=$1; shift
    for m in "$@"; do
      modprobe -C /dev/null -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r path; do
      rel=${path#"$KROOT"/lib/modules/"$KVER"/}
      mkdir -p "$root/lib/modules/$KVER/$(dirname "$rel")"
      cp -n "$path" "$root/lib/modules/$KVER/$rel"
      [ -z "$list" ] || echo "$rel" >> "$list"
    done
  }
  : > "$root/etc/modules.order"
  copy_mods "$root/etc/modules.order" "${MODS[@]}"
  copy_mods "" "${ONDEMAND[@]}"
  : > "$root/etc/modules.disk"
  copy_mods "$root/etc/modules.disk" "${DISKMODS[@]}"
  cp "$KROOT/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$KVER/"
  depmod -b "$root" "$KVER"   # so modprobe (moby/ipvs runs it) finds the modules
  cp "$HERE/init.sh" "$root/init"; chmod +x "$root/init"
  (cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -6 > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  # Old initramfs builds for this kernel are dead weight.
  find "$CACHE" -maxdepth 1 -name "initramfs-*.gz" ! -name "$(basename "$INITRD")" -delete
fi
echo "KVER=$KVER"
echo "KERNEL=$VMLINUX"
echo "INITRD=$INITRD"
