package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// KubeProxyDebs are the Debian packages whose files go into the kube-proxy
// image: nft for its nftables mode, iptables and ipset for its ipvs mode,
// modprobe (kmod), which kube-proxy runs before it touches IPVS (upstream's
// image has it too: without it, the nftables mode's start-up cleanup skips
// the IPVS flush), and the libraries they link that a minimal machine may
// lack. libc and the
// like are taken from this (Debian) machine by k8simage.WithLibraries.
var KubeProxyDebs = []string{
	"nftables", "libnftables1", "libnftnl11", "libmnl0", "libjansson4", "libgmp10", "libedit2",
	"iptables", "libxtables12", "libip4tc2", "libip6tc2", "libnetfilter-conntrack3", "libnfnetlink0",
	"ipset", "libipset13", "kmod", "libkmod2",
}

// FetchDebs downloads the Debian packages pkgs with apt-get (the candidate
// versions of this machine's apt sources) and unpacks them, without
// installing them, into a folder it returns: cache/debs/<hash of the names>/root.
// A warm cache returns at once. Needs root the first time.
func FetchDebs(ctx context.Context, cache string, pkgs []string, log io.Writer) (string, error) {
	names := slices.Sorted(slices.Values(pkgs))
	dir := filepath.Join(cache, "debs", fmt.Sprintf("%x", sha256.Sum256([]byte(strings.Join(names, " "))))[:16])
	root := filepath.Join(dir, "root")
	if _, err := os.Stat(filepath.Join(dir, ".done")); err == nil {
		return root, nil
	}
	dl := filepath.Join(dir, "dl")
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(dl, 0o777); err != nil { // apt's _apt user downloads
		return "", err
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, names...)...)
	cmd.Dir = dl
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		// The package lists may be missing on a fresh machine.
		up := exec.CommandContext(ctx, "apt-get", "update", "-qq")
		up.Stdout, up.Stderr = log, log
		if uerr := up.Run(); uerr != nil {
			return "", fmt.Errorf("apt-get download %s: %w; apt-get update: %v", strings.Join(names, " "), err, uerr)
		}
		cmd = exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, names...)...)
		cmd.Dir = dl
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("apt-get download %s: %w", strings.Join(names, " "), err)
		}
	}
	debs, err := filepath.Glob(filepath.Join(dl, "*.deb"))
	if err != nil {
		return "", err
	}
	if len(debs) != len(names) {
		return "", fmt.Errorf("apt-get download %s: got %d packages, want %d", strings.Join(names, " "), len(debs), len(names))
	}
	for _, d := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", d, root).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", d, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".done"), nil, 0o644); err != nil {
		return "", err
	}
	return root, nil
}
