#!/usr/bin/env bash
# The etcd of the lab's real control plane (docs/lab.md): Debian's etcd-server
# package (3.4.23 on Debian 12, which kube-apiserver 1.34 accepts), downloaded
# with apt-get and unpacked into the cache rather than installed, so that no
# system etcd service is started on the machine running the tests.
#
# usage:  scripts/fetch-etcd.sh        prints the etcd binary's path on stdout
# env:    VIPCTL_CACHE  cache folder (default $HOME/.cache/vipctl); the binary goes
#                       to $VIPCTL_CACHE/etcd/<package version>/etcd
# Needs root on the first run (apt-get); a warm run takes well under a second.
set -euo pipefail

CACHE=${VIPCTL_CACHE:-$HOME/.cache/vipctl}/etcd
log() { echo "fetch-etcd: $*" >&2; }

if [ -f "$CACHE/current" ]; then
	bin=$CACHE/$(cat "$CACHE/current")/etcd
	if [ -x "$bin" ]; then
		echo "$bin"
		exit 0
	fi
fi

[ "$(id -u)" = 0 ] || { log "not cached yet and not root: run as root once (apt-get download etcd-server)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-cache show etcd-server >/dev/null 2>&1 || apt-get update -qq
ver=$(apt-cache policy etcd-server | awk '/Candidate:/ {print $2}')
[ -n "$ver" ] && [ "$ver" != "(none)" ] || { log "no etcd-server package in the apt sources"; exit 1; }
dir=$CACHE/${ver//[:\/]/_}
mkdir -p "$CACHE/dl"
chmod 777 "$CACHE/dl" # apt's _apt user downloads
log "downloading etcd-server $ver"
rm -f "$CACHE"/dl/etcd-server_*.deb
(cd "$CACHE/dl" && apt-get download -q "etcd-server=$ver" 2>&1 | grep -v unsandboxed >&2 || true)
deb=$(ls "$CACHE"/dl/etcd-server_*.deb 2>/dev/null | head -1)
[ -f "$deb" ] || { log "apt-get download etcd-server=$ver failed"; exit 1; }
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
dpkg -x "$deb" "$dir.tmp/root"
mv "$dir.tmp/root/usr/bin/etcd" "$dir.tmp/etcd"
rm -rf "$dir.tmp/root" "$deb"
"$dir.tmp/etcd" --version >/dev/null || { log "$dir.tmp/etcd does not run"; exit 1; }
rm -rf "$dir"
mv "$dir.tmp" "$dir"
basename "$dir" >"$CACHE/current"
log "etcd $ver in $dir/etcd"
echo "$dir/etcd"
