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

// workerModules are the kernel modules a VM node needs beyond the
// initramfs's: overlay for containerd's snapshotter; and with kube-proxy,
// nf_tables and the expressions its nftables mode uses, and the conntrack
// netlink interface it cleans up stale flows with. The node has them in
// /lib/modules/<version>/extra on its disk (writeMachine), loaded on
// demand as on any node.
var (
	workerModules    = []string{"overlay"}
	kubeProxyModules = []string{"nf_tables", "nfnetlink", "nf_conntrack_netlink", "nft_ct", "nft_chain_nat", "nft_nat",
		"nft_masq", "nft_numgen", "nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6", "nft_reject_inet", "nft_reject_ipv4",
		"nft_reject_ipv6", "nft_limit"}
)

// WorkerVM is one boot of the VM as a node joining the host masters: the
// worker (RunWorkerVM) or a master (RunMasterJoinVM).
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
	// environment (the Run function sets its role's variable).
	TestArgs []string
	Env      map[string]string
	// AfterReboot, when set, is the test binary's flags after the reboot
	// the first boot asks for (vmBoot).
	AfterReboot []string
	Console     io.Writer
	// Memory of the VM; the Run function's default when empty.
	Memory string
	// Log receives the builds' progress.
	Log io.Writer
}

// RunWorkerVM installs the worker on its disk (the programs, the init
// system: writeMachine), builds its share (the offline bundle, the spec
// with the join's inputs), plugs a tap on the lab bridge and boots the VM
// on it, under the lab lock; VIPCTL_E2E_CLUSTER=1 is always in the VM's
// environment, and the VM gets 3G unless w.Memory says otherwise. With
// w.AfterReboot the VM may reboot once (vmBoot). It returns the in-VM
// scenarios' exit code (the last boot's), as vm.Run does.
func (l *Lab) RunWorkerVM(ctx context.Context, w WorkerVM) (int, error) {
	return l.bootVM(ctx, vmBoot{Assets: w.Assets, Root: w.Root, Dir: WorkerDir, TestArgs: w.TestArgs, Env: withEnv("VIPCTL_E2E_CLUSTER", w.Env),
		Console: w.Console, Memory: orDefault(w.Memory, "3G"), Tap: WorkerTap, AfterReboot: w.AfterReboot}, func(dir, machine string) error { return l.writeWorkerShare(ctx, dir, machine, w) })
}

// writeWorkerShare fills dir with what the worker needs (see WorkerSpec)
// and installs the node in machine, the disk's future / (writeMachine).
func (l *Lab) writeWorkerShare(ctx context.Context, dir, machine string, w WorkerVM) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	spec := vmNodeSpec("worker1")
	spec.KubeProxyMode, spec.AdminConf = l.KubeProxyMode, "admin.conf"
	if err := writeJoinInputs(dir, &spec, w.First, w.Masters, w.FaultMaster, w.Secrets); err != nil {
		return err
	}
	admin, err := os.ReadFile(w.First.Path("/etc/kubernetes/admin.conf"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, spec.AdminConf), admin, 0o600); err != nil {
		return err
	}
	// The node's files; kube-proxy's image and modules when it runs.
	if err := l.writeVMNode(ctx, dir, vmNode{Assets: w.Assets, Root: w.Root, Cache: w.Cache, Log: w.Log, Modules: l.vmModules(), PodCIDR: PodCIDR(50), Machine: machine,
		Image: func(ref string) bool { return l.KubeProxyMode != "" && strings.Contains(ref, "/kube-proxy:") }}, &spec); err != nil {
		return err
	}
	return WriteWorkerSpec(dir, spec)
}

// vmNodeSpec is the VM node's part of a spec that does not depend on its
// role: its name, its address on the lab bridge, the gateway and the
// cluster's service subnet (what `vipctl kubeadm config` gives kubeadm).
func vmNodeSpec(name string) WorkerSpec {
	return WorkerSpec{Name: name, NodeIP: netip.PrefixFrom(WorkerIP, 24).String(), Gateway: gateway, ServiceSubnet: "10.96.0.0/16"}
}

// writeJoinInputs records in spec what a VM node joining the host masters'
// cluster needs: every master's apiserver, the master the host's faults
// hit (none when fault is nil), the discovery hash of first's CA, and the
// bootstrap token of s in a file of mode 0600 (TokenFile).
func writeJoinInputs(dir string, spec *WorkerSpec, first *Node, masters []*Node, fault *Node, s Secrets) error {
	spec.TokenFile = "token"
	for _, m := range masters {
		spec.Masters = append(spec.Masters, netip.AddrPortFrom(m.IP, 6443).String())
	}
	if fault != nil {
		spec.FaultMaster = netip.AddrPortFrom(fault.IP, 6443).String()
	}
	var err error
	if spec.CACertHash, err = CACertHash(first); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, spec.TokenFile), []byte(s.Token+"\n"), 0o600)
}

// vmModules are the kernel modules a VM node loads from the share: the
// worker's, and kube-proxy's when it runs (in ipvs mode, its IPVS ones too).
func (l *Lab) vmModules() []string {
	mods := workerModules
	if l.KubeProxyMode != "" {
		mods = append(append([]string(nil), mods...), kubeProxyModules...)
	}
	if l.KubeProxyMode == "ipvs" {
		mods = append(mods, kubeProxyIPVSModules...)
	}
	return mods
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
