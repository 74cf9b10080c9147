#!/usr/bin/env bash
# Build Kubernetes components (kube-apiserver, kubectl, kubeadm, ...) from the Go
# module proxy alone (no GitHub, no dl.k8s.io), for the tests that run the real
# thing: `kubeadm config validate` on vipctl's output, and the lab's real control
# plane (three kube-apiservers and kubectl clients, see docs/lab.md), and the
# cluster e2e's kubelet, kube-controller-manager, kube-scheduler and kube-proxy
# (e2e/cluster; after kube-apiserver on a cold cache: ~10 min more on 2 busy cores).
#
# The k8s.io/kubernetes module has replace directives pointing at ./staging, which
# its module zip does not contain, so `go install` fails. This script copies the
# module out of the module cache, removes go.work, drops every ./staging replace
# (requiring the published k8s.io/* module of the same version instead, v0.X.Y for
# v1.X.Y; sample-* modules are not published and are simply dropped) and builds
# ./cmd/<component> for each component asked for.
#
# usage:  scripts/build-k8s.sh [COMPONENT...]   default: kube-apiserver kubectl
#         prints each binary's path on stdout, one a line, in the order asked
#         e.g. VIPCTL_K8S_BIN=$(dirname "$(scripts/build-k8s.sh kube-apiserver)")
# env:    K8S_VERSION   Kubernetes version to build (default v1.34.4)
#         VIPCTL_CACHE  cache folder (default $HOME/.cache/vipctl); binaries go to
#                       $VIPCTL_CACHE/k8s/$K8S_VERSION/<component> and are not
#                       rebuilt when present.
# Cold caches on 2 cores: go mod download ~30 s, kube-apiserver ~4-5 min, then
# kubectl ~45 s and kubeadm ~20 s (they share most packages); the Go build cache
# grows by ~3 GB. A warm run (binaries present) takes well under a second.
# Concurrent runs for the same version wait for each other (flock).
set -euo pipefail

V=${K8S_VERSION:-v1.34.4}
case "$V" in
v1.[0-9]*.[0-9]*) ;;
*) echo "build-k8s: K8S_VERSION=$V: want v1.MINOR.PATCH" >&2; exit 2 ;;
esac
SV=v0.${V#v1.}                      # staging modules: v1.34.4 -> v0.34.4
MINOR=$(echo "$V" | cut -d. -f2)
CACHE=${VIPCTL_CACHE:-$HOME/.cache/vipctl}
DIR=$CACHE/k8s/$V
COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(kube-apiserver kubectl)

log() { echo "build-k8s: $*" >&2; }

for c in "${COMPONENTS[@]}"; do
	case "$c" in
	kube-apiserver | kubectl | kubeadm | kubelet | kube-proxy | kube-controller-manager | kube-scheduler) ;;
	*) log "unknown component \"$c\": want kube-apiserver, kubectl, kubeadm, kubelet, kube-proxy, kube-controller-manager or kube-scheduler"; exit 2 ;;
	esac
done

missing=()
for c in "${COMPONENTS[@]}"; do
	[ -x "$DIR/$c" ] || missing+=("$c")
done

if [ ${#missing[@]} -gt 0 ]; then
	export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
	mkdir -p "$DIR"
	exec 9>"$DIR/.lock"
	flock 9
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
	# Both version packages: component-base for servers, client-go for kubectl's client version.
	LD="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		LD="$LD -X $p.gitVersion=$V -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
	done
	for c in "${COMPONENTS[@]}"; do
		OUT=$DIR/$c
		[ -x "$OUT" ] && continue # built by a concurrent run meanwhile
		start=$(date +%s)
		log "building $c $V (minutes on a cold build cache)"
		(cd "$SRC" && go build -trimpath -ldflags "$LD" -o "$OUT.tmp" "./cmd/$c")
		mv "$OUT.tmp" "$OUT"
		log "built $OUT in $(($(date +%s) - start))s ($(stat -c %s "$OUT") bytes)"
	done
fi

for c in "${COMPONENTS[@]}"; do
	echo "$DIR/$c"
done
