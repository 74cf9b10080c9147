#!/bin/sh
# install.sh: install vipctl on one node from an offline bundle, with no network.
#
# Run it as root from the unpacked bundle, on every node (masters and workers).
# It checks everything first (architecture, SHA256SUMS, a container runtime,
# the IPVS kernel modules) and changes nothing when a check fails. Then it
#   1. installs <root>/usr/local/bin/vipctl (atomically: copy, then rename),
#   2. imports the watchdog image into every runtime it finds running
#      (containerd: ctr -n k8s.io images import; docker load; podman load)
#      and checks the tag is present afterwards,
#   3. loads the kernel modules now (persisting them for boot is `vipctl join`'s
#      job: it alone owns /etc/modules-load.d/vipctl.conf, and `vipctl reset`
#      removes it),
#   4. prints the next command.
# Running it again changes nothing that is already right.
set -eu

prog=install.sh
# The modules vipctl needs: IPVS with the schedulers kube-proxy preloads (the
# kernel loads other ip_vs_* schedulers on demand), conntrack for masquerading,
# and the dummy interface the VIP is bound to.
modules="ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack dummy"

usage() {
	cat <<EOF
usage: $prog [--dry-run] [--root DIR] [--runtime auto|containerd|docker|podman] [--skip-modules]

Installs vipctl and its watchdog image from this offline bundle.

  --dry-run        run every check, print what would change, change nothing
  --root DIR       install files under DIR instead of / (env VIPCTL_ROOT);
                   the image still goes to the runtime(s) running here
  --runtime NAME   import the image into NAME only; auto (default) imports into
                   every runtime that answers: containerd (ctr, honours
                   CONTAINERD_ADDRESS), docker, podman (env VIPCTL_RUNTIME)
  --skip-modules   neither check nor load kernel modules ($modules)
  -h, --help       show this help
EOF
}

say() { printf '%s: %s\n' "$prog" "$*"; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}

dry_run=0
skip_modules=0
root=${VIPCTL_ROOT:-/}
runtime=${VIPCTL_RUNTIME:-auto}
while [ $# -gt 0 ]; do
	case $1 in
	--dry-run) dry_run=1 ;;
	--skip-modules) skip_modules=1 ;;
	--root)
		[ $# -ge 2 ] || die "--root: needs a directory"
		root=$2
		shift
		;;
	--root=*) root=${1#--root=} ;;
	--runtime)
		[ $# -ge 2 ] || die "--runtime: needs auto, containerd, docker or podman"
		runtime=$2
		shift
		;;
	--runtime=*) runtime=${1#--runtime=} ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die "unknown argument \"$1\" (see --help)" ;;
	esac
	shift
done

case $runtime in
auto | containerd | docker | podman) ;;
*) die "--runtime \"$runtime\": want auto, containerd, docker or podman" ;;
esac
[ -d "$root" ] || die "--root \"$root\": not a directory"
prefix=$(CDPATH='' cd -- "$root" && pwd)
[ "$prefix" = / ] && prefix=

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

# --- checks: nothing below changes the node until every check has passed ---

[ -f "$here/bundle.env" ] || die "$here/bundle.env is missing: run $prog from an unpacked vipctl offline bundle"
bundle_var() { sed -n "s/^$1=//p" "$here/bundle.env" | head -n 1; }
version=$(bundle_var VIPCTL_VERSION)
arch=$(bundle_var VIPCTL_ARCH)
image=$(bundle_var VIPCTL_IMAGE)
image_file=$(bundle_var VIPCTL_IMAGE_FILE)
for v in version arch image image_file; do
	eval "val=\$$v"
	[ -n "$val" ] || die "bundle.env: $v is not set: the bundle is damaged"
done

machine=$(uname -m)
case $machine in
x86_64 | amd64) node_arch=amd64 ;;
aarch64 | arm64) node_arch=arm64 ;;
*) node_arch=$machine ;;
esac
[ "$node_arch" = "$arch" ] || die "this bundle is for linux/$arch but this node is $machine ($node_arch): use vipctl-offline-$version-linux-$node_arch.tar.gz"

[ -f "$here/SHA256SUMS" ] || die "$here/SHA256SUMS is missing: the bundle is damaged"
for f in vipctl "$image_file" bundle.env; do
	awk -v f="$f" '$2 == f || $2 == "*" f { found = 1 } END { exit !found }' "$here/SHA256SUMS" ||
		die "SHA256SUMS does not list $f: the bundle is damaged"
done
if command -v sha256sum >/dev/null 2>&1; then
	sumcmd="sha256sum -c"
elif command -v shasum >/dev/null 2>&1; then
	sumcmd="shasum -a 256 -c"
else
	die "neither sha256sum nor shasum is installed: cannot verify the bundle"
fi
if ! sums=$(cd "$here" && $sumcmd SHA256SUMS 2>&1); then
	printf '%s\n' "$sums" | grep -v ': OK$' >&2 || true
	die "checksum mismatch in $here: the bundle is corrupt or was modified; nothing was changed"
fi
say "bundle vipctl $version linux/$arch: checksums OK"

runtime_up() {
	case $1 in
	containerd) command -v ctr >/dev/null 2>&1 && ctr -n k8s.io version >/dev/null 2>&1 ;;
	docker) command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ;;
	podman) command -v podman >/dev/null 2>&1 && podman version >/dev/null 2>&1 ;;
	esac
}
runtimes=
if [ "$runtime" = auto ]; then
	for r in containerd docker podman; do
		runtime_up "$r" && runtimes="$runtimes $r"
	done
	[ -n "$runtimes" ] || die "no container runtime answers: start containerd (ctr), docker or podman, or name one with --runtime; nothing was changed"
else
	runtime_up "$runtime" || die "--runtime $runtime: it is not installed or does not answer; nothing was changed"
	runtimes=" $runtime"
fi
say "container runtime(s):$runtimes"

# module_present NAME: loaded, or built into the kernel.
module_present() { [ -d "/sys/module/$1" ]; }
if [ "$skip_modules" = 0 ]; then
	command -v modprobe >/dev/null 2>&1 || die "modprobe is not installed (kmod): cannot load $modules; nothing was changed"
	missing=
	for m in $modules; do
		module_present "$m" || modprobe -n -q "$m" 2>/dev/null || missing="$missing $m"
	done
	[ -z "$missing" ] || die "kernel modules not available on $(uname -r):$missing; vipctl needs a kernel with IPVS (CONFIG_IP_VS), or pass --skip-modules; nothing was changed"
fi

if [ "$dry_run" = 0 ] && [ -z "$prefix" ] && [ "$(id -u)" != 0 ]; then
	die "run as root (or use --dry-run)"
fi

# --- changes ---

act() {
	if [ "$dry_run" = 1 ]; then
		say "would $*"
		return 1
	fi
	say "$*"
}

tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT

# write_file DEST MODE: atomically replace DEST with stdin (temporary file, then rename).
write_file() {
	mkdir -p "$(dirname -- "$1")"
	tmp=$1.vipctl-install.$$
	cat >"$tmp"
	chmod "$2" "$tmp"
	mv -f "$tmp" "$1"
	tmp=
}

bin=$prefix/usr/local/bin/vipctl
if cmp -s "$here/vipctl" "$bin"; then
	say "$bin is already vipctl $version"
elif act "install $bin (vipctl $version)"; then
	write_file "$bin" 0755 <"$here/vipctl"
fi

for r in $runtimes; do
	if ! act "import $image into $r"; then
		continue
	fi
	case $r in
	containerd)
		ctr -n k8s.io images import "$here/$image_file" >/dev/null || die "ctr -n k8s.io images import $image_file failed"
		ctr -n k8s.io images ls -q | grep -Fqx "$image" || die "containerd: $image is not present after the import"
		# Keep the kubelet's image garbage collector off it (containerd 1.7+).
		ctr -n k8s.io images label "$image" io.cri-containerd.pinned=pinned >/dev/null 2>&1 ||
			warn "containerd: could not pin $image; the kubelet may garbage-collect it when the disk fills"
		;;
	docker)
		docker load -i "$here/$image_file" >/dev/null || die "docker load -i $image_file failed"
		docker image inspect "$image" >/dev/null 2>&1 || die "docker: $image is not present after the load"
		;;
	podman)
		podman load -i "$here/$image_file" >/dev/null || die "podman load -i $image_file failed"
		podman image exists "$image" || die "podman: $image is not present after the load"
		;;
	esac
	say "$r: $image is present"
done

if [ "$skip_modules" = 0 ]; then
	if act "load kernel modules: $modules"; then
		for m in $modules; do
			module_present "$m" || modprobe "$m" || die "modprobe $m failed"
		done
	fi
else
	say "skipping kernel modules (--skip-modules)"
fi

if [ "$dry_run" = 1 ]; then
	say "dry run: nothing was changed"
	exit 0
fi
cat <<EOF
$prog: vipctl $version is installed and $image is imported.
Next (docs/join.md, "The cluster's life"):
  on the first master:
    vipctl init --master THIS-MASTER --master MASTER2 --master MASTER3
  on every other node, the vipctl join line that vipctl init printed, e.g. on a worker:
    vipctl join --master MASTER1 --master MASTER2 --master MASTER3 \\
      --token-file /etc/kubernetes/vipctl-join/token -- --discovery-token-ca-cert-hash sha256:...
  (--master, once per master, and -- before kubeadm's flags are required; see vipctl join --help)
EOF
