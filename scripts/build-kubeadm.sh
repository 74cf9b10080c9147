#!/usr/bin/env bash
# Build kubeadm from the Go module proxy alone (no GitHub, no dl.k8s.io), for the
# tests that run the real `kubeadm config validate` on vipctl's output.
#
# The k8s.io/kubernetes module has replace directives pointing at ./staging, which
# its module zip does not contain, so `go install` fails. This script copies the
# module out of the module cache, removes go.work, drops every ./staging replace
# (requiring the published k8s.io/* module of the same version instead, v0.X.Y for
# v1.X.Y; sample-* modules are not published and are simply dropped) and builds
# ./cmd/kubeadm.
#
# usage:  scripts/build-kubeadm.sh            prints the binary's path on stdout
#         VIPCTL_KUBEADM=$(scripts/build-kubeadm.sh) go test ./kubeadm/
# env:    KUBEADM_VERSION  Kubernetes version to build (default v1.34.4)
#         VIPCTL_CACHE     cache folder (default $HOME/.cache/vipctl); the binary
#                          goes to $VIPCTL_CACHE/k8s/$KUBEADM_VERSION/kubeadm and is
#                          not rebuilt when present.
# Cold cache on 2 cores: a few minutes, and the Go build cache grows by ~1-2 GB.
set -euo pipefail

V=${KUBEADM_VERSION:-v1.34.4}
case "$V" in
v1.[0-9]*.[0-9]*) ;;
*) echo "build-kubeadm: KUBEADM_VERSION=$V: want v1.MINOR.PATCH" >&2; exit 2 ;;
esac
SV=v0.${V#v1.}                      # staging modules: v1.34.4 -> v0.34.4
MINOR=$(echo "$V" | cut -d. -f2)
CACHE=${VIPCTL_CACHE:-$HOME/.cache/vipctl}
DIR=$CACHE/k8s/$V
OUT=$DIR/kubeadm

log() { echo "build-kubeadm: $*" >&2; }

if [ -x "$OUT" ]; then
	log "$OUT already present, not rebuilding"
	echo "$OUT"
	exit 0
fi

export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
mkdir -p "$DIR"
start=$(date +%s)

SRC=$DIR/src
if [ ! -f "$SRC/.vipctl-prepared" ]; then
	log "downloading k8s.io/kubernetes@$V"
	MOD=$(go mod download -json "k8s.io/kubernetes@$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [ -z "$MOD" ] || [ ! -f "$MOD/go.mod" ]; then
		log "go mod download k8s.io/kubernetes@$V gave no module folder"; exit 1
	fi
	rm -rf "$SRC" "$SRC.tmp"
	cp -r "$MOD" "$SRC.tmp"
	chmod -R u+w "$SRC.tmp"
	(
		cd "$SRC.tmp"
		rm -f go.work go.work.sum
		# Every "k8s.io/X => ./staging/src/k8s.io/X" replace becomes a require of k8s.io/X@$SV.
		edits=()
		for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1} $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// {print $2}' go.mod); do
			case "$m" in
			k8s.io/sample-*) edits+=("-dropreplace=$m" "-droprequire=$m") ;;
			*) edits+=("-dropreplace=$m" "-require=$m@$SV") ;;
			esac
		done
		if [ ${#edits[@]} -eq 0 ]; then log "no ./staging replaces found in k8s.io/kubernetes@$V go.mod"; exit 1; fi
		go mod edit "${edits[@]}"
		if grep -q '=> \./staging' go.mod; then
			log "unhandled ./staging replace left in go.mod:"; grep '=> \./staging' go.mod >&2; exit 1
		fi
		log "downloading dependencies"
		go mod download
	)
	touch "$SRC.tmp/.vipctl-prepared"
	mv "$SRC.tmp" "$SRC"
fi

log "building kubeadm $V (this takes a few minutes on a cold build cache)"
LD="-s -w -X k8s.io/component-base/version.gitVersion=$V -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR -X k8s.io/component-base/version.gitTreeState=clean"
(cd "$SRC" && go build -trimpath -ldflags "$LD" -o "$OUT.tmp" ./cmd/kubeadm)
mv "$OUT.tmp" "$OUT"
log "built $OUT in $(($(date +%s) - start))s ($(stat -c %s "$OUT") bytes)"
echo "$OUT"
