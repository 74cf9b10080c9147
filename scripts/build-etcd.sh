#!/usr/bin/env bash
# Build etcd's server from the Go module proxy, for the e2e cluster's etcd image
# (e2e/cluster, docs/lab.md): kubeadm 1.34 runs etcd 3.6 (its static pod uses
# 3.6's flags and the /livez and /readyz probes, which Debian's etcd 3.4 lacks).
#
# The go.etcd.io/etcd/server/v3 module replaces its sibling modules with ../
# folders its module zip does not hold: this script copies the module out of
# the module cache, drops those replaces (so the published siblings of the
# same version are used) and builds the module's main package.
#
# usage:  scripts/build-etcd.sh     prints the etcd binary's path on stdout
# env:    ETCD_VERSION  etcd version (default v3.6.5, kubeadm 1.34's etcd 3.6.5-0)
#         VIPCTL_CACHE  cache folder (default $HOME/.cache/vipctl); the binary goes
#                       to $VIPCTL_CACHE/etcd-build/$ETCD_VERSION/etcd and is not
#                       rebuilt when present.
# Cold: ~1-2 min on 2 cores; warm: well under a second.
set -euo pipefail

V=${ETCD_VERSION:-v3.6.5}
case "$V" in
v3.[0-9]*.[0-9]*) ;;
*) echo "build-etcd: ETCD_VERSION=$V: want v3.MINOR.PATCH" >&2; exit 2 ;;
esac
DIR=${VIPCTL_CACHE:-$HOME/.cache/vipctl}/etcd-build/$V
log() { echo "build-etcd: $*" >&2; }

if [ ! -x "$DIR/etcd" ]; then
	export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	flock 9
	if [ ! -x "$DIR/etcd" ]; then
		log "downloading go.etcd.io/etcd/server/v3@$V"
		MOD=$(go mod download -json "go.etcd.io/etcd/server/v3@$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -n "$MOD" ] && [ -f "$MOD/go.mod" ] || { log "go mod download gave no module folder"; exit 1; }
		rm -rf "$DIR/src"
		cp -r "$MOD" "$DIR/src"
		chmod -R u+w "$DIR/src"
		cd "$DIR/src"
		edits=()
		for m in $(awk '$2 == "=>" && $3 ~ /^\.\.\// {print $1} $1 == "replace" && $3 == "=>" && $4 ~ /^\.\.\// {print $2}' go.mod); do
			edits+=("-dropreplace=$m")
		done
		[ ${#edits[@]} -eq 0 ] || go mod edit "${edits[@]}"
		start=$(date +%s)
		log "building etcd $V"
		go build -trimpath -ldflags "-s -w" -o "$DIR/etcd.tmp" .
		mv "$DIR/etcd.tmp" "$DIR/etcd"
		log "built $DIR/etcd in $(($(date +%s) - start))s ($(stat -c %s "$DIR/etcd") bytes)"
	fi
fi
echo "$DIR/etcd"
