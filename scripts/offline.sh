#!/usr/bin/env bash
# Build vipctl's air-gapped bundles (make offline), with no Docker engine:
#
#   $DIST/vipctl-offline-$VERSION-linux-$ARCH.tar.gz   one per architecture
#   $DIST/vipctl-image-$VERSION.oci.tar                 multi-arch OCI archive of the image
#                                                       (for a registry mirror: skopeo copy oci-archive:...)
#   $DIST/SHA256SUMS                                    of the files above
#
# Each bundle unpacks to vipctl-offline-$VERSION-linux-$ARCH/ holding:
#   vipctl            static binary (CGO_ENABLED=0, -trimpath, version and commit stamped)
#   images/vipctl-$VERSION-linux-$ARCH.tar   watchdog image, docker-archive (ctr/docker/podman)
#   manifests/vipctl-care.yaml, kubeadm/kubeadm-config.yaml   examples, when vipctl can render them
#   install.sh, README.md, bundle.env, SHA256SUMS
#
# Reproducible: the same commit and toolchain give byte-identical bundles (every
# timestamp is SOURCE_DATE_EPOCH, names and owners are normalized).
#
# env (all optional):
#   VERSION            default: git describe --tags --always --dirty (v0.0.0-<commit> without a tag)
#   COMMIT             default: git rev-parse HEAD
#   SOURCE_DATE_EPOCH  default: the commit time (git log -1 --format=%ct)
#   ARCHES             default: "amd64 arm64"
#   DIST               default: dist
#   IMAGE_REPO         default: ghcr.io/vipctl/vipctl (the image is IMAGE_REPO:VERSION)
#   EXAMPLE_MASTERS    masters of the example manifest and kubeadm config
#                      (default: 192.168.0.2 192.168.0.3 192.168.0.4)
#   GO                 default: go
# needs: go, git (for the defaults), GNU tar, gzip, sha256sum.
set -euo pipefail

say() { printf 'offline: %s\n' "$*" >&2; }
die() {
	printf 'offline: error: %s\n' "$*" >&2
	exit 1
}

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$repo"

GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
DIST=${DIST:-dist}
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/vipctl/vipctl}
EXAMPLE_MASTERS=${EXAMPLE_MASTERS:-192.168.0.2 192.168.0.3 192.168.0.4}
if [ -z "${VERSION:-}" ]; then
	VERSION=$(git describe --tags --always --dirty 2>/dev/null) || die "VERSION is not set and git describe failed"
	case $VERSION in
	v[0-9]*) ;;
	*) VERSION=v0.0.0-$VERSION ;;
	esac
fi
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null)} || die "COMMIT is not set and git rev-parse HEAD failed"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null)} || die "SOURCE_DATE_EPOCH is not set and git log failed"
export SOURCE_DATE_EPOCH

[[ $VERSION =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "VERSION=$VERSION: not usable as an image tag ([A-Za-z0-9_.-], at most 128)"
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: want seconds since the epoch"
[ -n "$ARCHES" ] || die "ARCHES is empty"
for arch in $ARCHES; do
	case $arch in
	amd64 | arm64) ;;
	*) die "ARCHES: $arch: want amd64 and/or arm64" ;;
	esac
done
tar --version 2>/dev/null | head -n 1 | grep -q 'GNU tar' || die "GNU tar is needed (for --sort=name and --mtime)"
command -v gzip >/dev/null || die "gzip is needed"
command -v sha256sum >/dev/null || die "sha256sum is needed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DIST"
DIST=$(CDPATH='' cd -- "$DIST" && pwd)

pkg=github.com/vipctl/vipctl/internal/version
ldflags="-s -w -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT"
build() { # build GOOS GOARCH OUT [go build flags...]
	local os=$1 arch=$2 out=$3
	shift 3
	say "go build $os/$arch $* -> $out"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$GO" build -trimpath -ldflags "$ldflags" "$@" -o "$out" ./cmd/vipctl
}

# The node's vipctl has every command; the image's is the watchdog build
# (-tags watchdog: care, status, ipvs, hosts, version), which does not link
# the Kubernetes API types and so runs in far less memory.
for arch in $ARCHES; do
	build linux "$arch" "$work/bin/$arch/vipctl"
	build linux "$arch" "$work/bin/$arch/watchdog/vipctl" -tags watchdog
done
# vipctl itself builds the image and renders the examples: use this host's build.
host_os=$("$GO" env GOOS)
host_arch=$("$GO" env GOARCH)
tool=$work/bin/$host_arch/vipctl
if [ "$host_os" != linux ] || [ ! -x "$tool" ]; then
	tool=$work/bin/host/vipctl
	build "$host_os" "$host_arch" "$tool"
fi

# has_cmd NAME [SUB]: does the vipctl built here have that (sub)command?
has_cmd() {
	local help
	if [ $# -eq 2 ]; then
		help=$("$tool" "$1" --help 2>/dev/null) || return 1
		set -- "$2"
	else
		help=$("$tool" --help 2>/dev/null) || return 1
	fi
	awk -v c="$1" '/^Available Commands:/ { f = 1; next } /^[^ ]/ { f = 0 } f && $1 == c { found = 1 } END { exit !found }' <<<"$help"
}
has_cmd image || die "this vipctl has no 'image' command: register newImageCmd in cmd/vipctl/root.go"

tag=$IMAGE_REPO:$VERSION
image_build() {
	"$tool" --log-level warn image build --tag "$tag" --version "$VERSION" --revision "$COMMIT" --created "$SOURCE_DATE_EPOCH" "$@" |
		while read -r what digest; do say "image $tag $what $digest"; done
}

master_flags=()
for m in $EXAMPLE_MASTERS; do master_flags+=(--master "$m"); done

outputs=()
for arch in $ARCHES; do
	name=vipctl-offline-$VERSION-linux-$arch
	stage=$work/stage/$name
	image_file=images/vipctl-$VERSION-linux-$arch.tar
	mkdir -p "$stage/images"
	cp "$work/bin/$arch/vipctl" "$stage/vipctl"
	image_build --binary "linux/$arch=$work/bin/$arch/watchdog/vipctl" --format docker-archive -o "$stage/$image_file"

	# Examples, rendered by this vipctl (same version, same image tag) for EXAMPLE_MASTERS.
	if has_cmd manifest; then
		mkdir -p "$stage/manifests"
		"$tool" manifest --image "$tag" "${master_flags[@]}" >"$stage/manifests/vipctl-care.yaml"
	else
		say "warning: vipctl has no 'manifest' command yet: the bundle has no example static pod manifest"
	fi
	if has_cmd kubeadm config; then
		mkdir -p "$stage/kubeadm"
		"$tool" kubeadm config "${master_flags[@]}" >"$stage/kubeadm/kubeadm-config.yaml"
	else
		say "warning: vipctl has no 'kubeadm config' command yet: the bundle has no example kubeadm config"
	fi

	cp scripts/install.sh "$stage/install.sh"
	cat >"$stage/bundle.env" <<EOF
VIPCTL_VERSION=$VERSION
VIPCTL_COMMIT=$COMMIT
VIPCTL_ARCH=$arch
VIPCTL_IMAGE=$tag
VIPCTL_IMAGE_FILE=$image_file
EOF
	cat >"$stage/README.md" <<EOF
# vipctl $VERSION offline bundle for linux/$arch

Everything one node needs to run vipctl with no network: the static \`vipctl\`
binary, the watchdog image \`$tag\` ($image_file, docker-archive format)
and \`install.sh\`. Commit $COMMIT.

On every node (masters and workers), as root:

    tar -xzf $name.tar.gz
    cd $name
    ./install.sh --dry-run     # checks only: architecture, SHA256SUMS, runtime, kernel modules
    ./install.sh

install.sh verifies SHA256SUMS, installs /usr/local/bin/vipctl, imports the image
into containerd (\`ctr -n k8s.io images import\`), docker or podman, whichever
runs on the node, writes /etc/modules-load.d/vipctl.conf, loads the IPVS modules
and prints the next commands (\`vipctl init\` on the first master, \`vipctl join\`
on the others). It changes nothing when a check
fails, and running it again is harmless. See \`./install.sh --help\`.

manifests/ and kubeadm/ (when present) hold examples rendered for the masters
$EXAMPLE_MASTERS; render your own with the installed binary:

    vipctl kubeadm config --master IP --master IP ... > kubeadm.yaml
    vipctl manifest --image $tag --master IP --master IP ... \\
      --output-file /etc/kubernetes/manifests/vipctl-care.yaml

The image runs as user 0: it programs IPVS and the VIP
interface over netlink and needs CAP_NET_ADMIN in the host network namespace.
EOF
	chmod -R u=rwX,go=rX "$stage"
	chmod 0755 "$stage/vipctl" "$stage/install.sh"
	(cd "$stage" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum) >"$work/SHA256SUMS"
	mv "$work/SHA256SUMS" "$stage/SHA256SUMS"

	say "packing $DIST/$name.tar.gz"
	tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
		-C "$work/stage" -cf - "$name" | gzip -n -9 >"$DIST/$name.tar.gz.tmp"
	mv -f "$DIST/$name.tar.gz.tmp" "$DIST/$name.tar.gz"
	outputs+=("$name.tar.gz")
done

# The multi-arch image for a registry mirror.
oci=vipctl-image-$VERSION.oci.tar
bins=()
for arch in $ARCHES; do bins+=(--binary "linux/$arch=$work/bin/$arch/watchdog/vipctl"); done
image_build "${bins[@]}" --format oci-archive -o "$DIST/$oci"
outputs+=("$oci")

(cd "$DIST" && sha256sum "${outputs[@]}" >SHA256SUMS)
say "done: $DIST"
sed 's/^/  /' "$DIST/SHA256SUMS" >&2
