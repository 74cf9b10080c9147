package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vipctl/vipctl/e2e/k8simage"
	"github.com/vipctl/vipctl/e2e/vm"
)

// WorkerDebs are the Debian packages the VM worker runs: containerd (with
// its shim and ctr), runc and its libseccomp, and the CNI plugins (bridge,
// host-local, loopback). Nothing is installed: FetchDebs unpacks them and
// the harness copies the programs and the libraries they link into the
// share, laid out as the worker's /.
var WorkerDebs = []string{"containerd", "runc", "libseccomp2", "containernetworking-plugins"}

// Worker addresses: the VM's NIC on the lab bridge, and its pod range.
const (
	// WorkerTap is the tap device, in LabNS on the bridge, behind the VM's NIC.
	WorkerTap = "tapw"
	// WorkerVersion is the version the offline bundle for the worker is
	// built with: its image is ghcr.io/vipctl/vipctl:WorkerVersion.
	WorkerVersion = "v0.0.0-cluster-e2e"
)

// WorkerIP is the VM worker's address on the lab bridge.
var WorkerIP = netip.MustParseAddr("10.31.0.50")

// PodCIDR is node i's pod range for the bridge CNI (the VM worker is 50).
func PodCIDR(i int) string { return fmt.Sprintf("10.244.%d.0/24", i) }

// workerModules are the kernel modules the worker loads from the share (not
// in the VM's initramfs): overlay for containerd's snapshotter; and with
// kube-proxy, nf_tables and the expressions its nftables mode uses, and the
// conntrack netlink interface it cleans up stale flows with. The VM's
// modprobe only knows the initramfs's modules, so they are loaded up front.
var (
	workerModules    = []string{"overlay"}
	kubeProxyModules = []string{"nf_tables", "nfnetlink", "nf_conntrack_netlink", "nft_ct", "nft_chain_nat", "nft_nat",
		"nft_masq", "nft_numgen", "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6", "nft_reject_inet", "nft_reject_ipv4",
		"nft_reject_ipv6", "nft_limit"}
)

// WorkerVM is one boot of the VM as the cluster's worker.
type WorkerVM struct {
	Assets vm.Assets
	// Root is the module root: vipctl, the bundle and e2e/vmtests are built from it.
	Root string
	// Cache is the project's cache folder (FetchDebs).
	Cache string
	// First is the first master: its CA, admin kubeconfig; Masters every master.
	First   *Node
	Masters []*Node
	Secrets Secrets
	// FaultMaster, when set, is the master the host's faults hit
	// (FaultDriver, which must be among Console's writers); the spec
	// tells the VM.
	FaultMaster *Node
	// TestArgs are the in-VM test binary's flags (-test.run=...); Env its
	// environment (VIPCTL_E2E_CLUSTER=1 is always set).
	TestArgs []string
	Env      map[string]string
	Console  io.Writer
	// Memory of the VM; default 3G.
	Memory string
	// Log receives the builds' progress.
	Log io.Writer
}

// RunWorkerVM builds the worker's share (the programs, the offline bundle,
// the spec with the join's inputs), plugs a tap on the lab bridge and boots
// the VM on it, under the lab lock. It returns the in-VM scenarios' exit
// code, as vm.Run does.
func (l *Lab) RunWorkerVM(ctx context.Context, w WorkerVM) (int, error) {
	share, err := os.MkdirTemp("", "vipctl-cluster-share-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(share)
	env := map[string]string{"VIPCTL_E2E_CLUSTER": "1"}
	for k, v := range w.Env {
		env[k] = v
	}
	t0 := time.Now()
	if err := vm.BuildShare(ctx, w.Root, share, w.TestArgs, env); err != nil {
		return -1, err
	}
	if err := l.writeWorkerShare(ctx, filepath.Join(share, WorkerDir), w); err != nil {
		return -1, err
	}
	l.logf("cluster: worker share built in %s", time.Since(t0).Round(time.Millisecond))
	for _, c := range [][]string{
		{"-n", LabNS, "tuntap", "add", "dev", WorkerTap, "mode", "tap"},
		{"-n", LabNS, "link", "set", WorkerTap, "master", bridge, "up"},
	} {
		if err := ip(c...); err != nil {
			return -1, err
		}
	}
	defer ip("-n", LabNS, "link", "del", WorkerTap)
	lock, err := acquireLock(ctx)
	if err != nil {
		return -1, err
	}
	defer lock.Close()
	mem := w.Memory
	if mem == "" {
		mem = "3G"
	}
	return vm.Run(ctx, vm.Config{Assets: w.Assets, Share: share, Console: w.Console, Memory: mem, NetNS: LabNS, Tap: WorkerTap})
}

// writeWorkerShare fills dir with what the worker needs (see WorkerSpec).
func (l *Lab) writeWorkerShare(ctx context.Context, dir string, w WorkerVM) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	log := w.Log
	if log == nil {
		log = io.Discard
	}
	spec := WorkerSpec{
		Name: "worker1", NodeIP: netip.PrefixFrom(WorkerIP, 24).String(), Gateway: gateway,
		ServiceSubnet: "10.96.0.0/16", Root: "root", KernelConfig: "kernel-config",
		PauseRef: l.pauseRef(), KubeProxyMode: l.KubeProxyMode, Bundle: "bundle.tar.gz",
		TokenFile: "token", AdminConf: "admin.conf", CNIConfig: "10-vipctl-lab.conflist",
	}
	for _, m := range w.Masters {
		spec.Masters = append(spec.Masters, netip.AddrPortFrom(m.IP, 6443).String())
	}
	if w.FaultMaster != nil {
		spec.FaultMaster = netip.AddrPortFrom(w.FaultMaster.IP, 6443).String()
	}
	var err error
	if spec.CACertHash, err = CACertHash(w.First); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, spec.TokenFile), []byte(w.Secrets.Token+"\n"), 0o600); err != nil {
		return err
	}
	admin, err := os.ReadFile(w.First.Path("/etc/kubernetes/admin.conf"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, spec.AdminConf), admin, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, spec.CNIConfig), []byte(CNIConfig(PodCIDR(50))), 0o644); err != nil {
		return err
	}
	for _, img := range l.Images {
		if img.Ref == spec.PauseRef || (l.KubeProxyMode != "" && strings.Contains(img.Ref, "/kube-proxy:")) {
			name := filepath.Base(img.Tar)
			if err := vm.LinkOrCopy(img.Tar, filepath.Join(dir, name)); err != nil {
				return err
			}
			spec.Images = append(spec.Images, name)
		}
	}
	// The kernel's files: its config (kubeadm's SystemVerification reads
	// /boot/config-$(uname -r)) and the modules the initramfs lacks.
	kroot := filepath.Dir(filepath.Dir(w.Assets.Kernel))
	if err := vm.LinkOrCopy(filepath.Join(kroot, "boot", "config-"+w.Assets.KVer), filepath.Join(dir, spec.KernelConfig)); err != nil {
		return err
	}
	mods := workerModules
	if l.KubeProxyMode != "" {
		mods = append(append([]string(nil), mods...), kubeProxyModules...)
	}
	if l.KubeProxyMode == "ipvs" {
		mods = append(mods, kubeProxyIPVSModules...)
	}
	if spec.Modules, err = copyModules(ctx, kroot, w.Assets.KVer, filepath.Join(dir, "modules"), mods); err != nil {
		return err
	}
	// Debian's containerd, runc and CNI plugins, and the Kubernetes programs.
	debRoot, err := FetchDebs(ctx, w.Cache, WorkerDebs, log)
	if err != nil {
		return err
	}
	files := []k8simage.File{
		{Dst: "/usr/local/bin/kubelet", Src: l.Bin.Kubelet},
		{Dst: "/usr/local/bin/kubeadm", Src: l.Bin.Kubeadm},
		{Dst: "/usr/local/bin/kubectl", Src: l.Bin.Kubectl},
	}
	for _, p := range []string{"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr", "/usr/sbin/runc",
		"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		files = append(files, k8simage.File{Dst: p, Src: filepath.Join(debRoot, p)})
	}
	files, err = k8simage.WithLibraries(files, []string{debRoot, "/"})
	if err != nil {
		return err
	}
	for _, f := range files {
		dst := filepath.Join(dir, spec.Root, f.Dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if f.Link != "" {
			if err := os.Symlink(f.Link, dst); err != nil {
				return err
			}
			continue
		}
		if err := vm.LinkOrCopy(f.Src, dst); err != nil {
			return err
		}
	}
	// The offline bundle, built as a user builds it (make offline).
	dist := filepath.Join(dir, "dist")
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(w.Root, "scripts", "offline.sh"))
	cmd.Dir = w.Root
	cmd.Env = append(os.Environ(), "ARCHES=amd64", "DIST="+dist, "VERSION="+WorkerVersion)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scripts/offline.sh: %w", err)
	}
	if err := os.Rename(filepath.Join(dist, "vipctl-offline-"+WorkerVersion+"-linux-amd64.tar.gz"), filepath.Join(dir, spec.Bundle)); err != nil {
		return err
	}
	if err := os.RemoveAll(dist); err != nil {
		return err
	}
	return WriteWorkerSpec(dir, spec)
}

// copyModules copies the modules mods and what they depend on, in load
// order, from the kernel package unpacked in kroot into dir, and returns
// their names there. Modules built into the kernel add nothing.
func copyModules(ctx context.Context, kroot, kver, dir string, mods []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range mods {
		b, err := exec.CommandContext(ctx, "modprobe", "-C", "/dev/null", "-d", kroot, "-S", kver, "--show-depends", m).Output()
		if err != nil {
			return nil, fmt.Errorf("modprobe --show-depends %s: %w", m, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue
			}
			seen[f[1]] = true
			name := filepath.Base(f[1])
			if err := vm.LinkOrCopy(f[1], filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			out = append(out, filepath.Join("modules", name))
		}
	}
	return out, nil
}

// lockFile serialises the VM labs (e2e/realcp takes the same lock): one
// VM under emulation at a time is all this machine's two cores carry.
const lockFile = "/run/lock/vipctl-lab.lock"

// acquireLock takes the lab lock, waiting for another lab to finish. The
// kernel releases it if the holder dies.
func acquireLock(ctx context.Context) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab lock: %w", err)
	}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lab lock %s: %w", lockFile, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lab lock %s: another lab is running: %w", lockFile, ctx.Err())
		case <-tk.C:
		}
	}
}
