package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vipctl/vipctl/e2e/k8simage"
	"github.com/vipctl/vipctl/e2e/vm"
)

// What every VM node of the cluster lab gets, whatever its role (the worker
// of TestClusterWorker, the first master of TestClusterInit), and how the
// VM is booted on the lab bridge. The roles' own inputs (a join's token, an
// init's configuration) are added by their callers.

// vmBoot is one boot of the lab VM on the cluster lab's bridge.
type vmBoot struct {
	Assets vm.Assets
	// Root is the module root: vipctl and e2e/vmtests are built from it.
	Root string
	// Dir is the node's folder in the share (WorkerDir, InitDir), filled by fill.
	Dir string
	// TestArgs and Env are the in-VM test binary's flags and environment.
	TestArgs []string
	Env      map[string]string
	Console  io.Writer
	Memory   string
	// Tap is the tap device in LabNS on the bridge, behind the VM's NIC.
	Tap string
	// AfterReboot is the in-VM test binary's flags after a
	// reboot: when the first boot asks for one (vm.RebootRequest), the VM
	// boots again on the same disk and tap, its run.sh rewritten to run
	// them. One reboot at most; none when AfterReboot is nil.
	AfterReboot []string
}

// DiskSize is the VM node's disk (sparse: only what the node writes takes
// room on the host).
const DiskSize = 8 << 30

// bootVM builds the share (vipctl, the test binary, then fill's node
// folder) and the VM's disk (vm.Config.Disk, DiskSize), whose file system
// is made from the folder machine, where fill installs the node
// (writeMachine): a machine systemd boots. It plugs the tap on the lab
// bridge and boots the VM on it, under the lab lock, and returns the
// in-VM scenarios' exit code, as vm.Run does (with b.AfterReboot, the
// last boot's). Each boot's share of the host's CPU is logged (logBoot).
func (l *Lab) bootVM(ctx context.Context, b vmBoot, fill func(dir, machine string) error) (int, error) {
	share, err := os.MkdirTemp("", "vipctl-cluster-share-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(share)
	ddir, err := os.MkdirTemp("", "vipctl-cluster-disk-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(ddir)
	machine, disk := filepath.Join(ddir, "root"), filepath.Join(ddir, "disk.img")
	if err := os.Mkdir(machine, 0o755); err != nil {
		return -1, err
	}
	t0 := time.Now()
	if err := vm.BuildShare(ctx, b.Root, share, b.TestArgs, b.Env); err != nil {
		return -1, err
	}
	if err := fill(filepath.Join(share, b.Dir), machine); err != nil {
		return -1, err
	}
	l.logf("cluster: VM share %s built in %s", b.Dir, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := vm.NewDisk(ctx, disk, DiskSize, machine); err != nil {
		return -1, err
	}
	// The image holds it now: the folder's hard links into the cache go.
	if err := os.RemoveAll(machine); err != nil {
		return -1, err
	}
	l.logf("cluster: VM disk made from the installed node in %s", time.Since(t0).Round(time.Millisecond))
	for _, c := range [][]string{
		{"-n", LabNS, "tuntap", "add", "dev", b.Tap, "mode", "tap"},
		{"-n", LabNS, "link", "set", b.Tap, "master", bridge, "up"},
	} {
		if err := ip(c...); err != nil {
			return -1, err
		}
	}
	defer ip("-n", LabNS, "link", "del", b.Tap)
	lock, err := acquireLock(ctx)
	if err != nil {
		return -1, err
	}
	defer lock.Close()
	cfg := vm.Config{Assets: b.Assets, Share: share, Console: b.Console, Memory: b.Memory, NetNS: LabNS, Tap: b.Tap, Disk: disk}
	r, err := vm.Boot(ctx, cfg)
	l.logBoot(r)
	if err != nil || !r.Reboot {
		return r.Code, err
	}
	if b.AfterReboot == nil {
		return -1, errors.New("the VM asked for a reboot, and this scenario has none")
	}
	// The reboot: qemu has exited; the tap stays on the bridge, the
	// masters run on. The next boot runs the scenarios after the reboot.
	if out, err := exec.Command("ip", "-n", LabNS, "-o", "link", "show", "dev", b.Tap).CombinedOutput(); err != nil || !strings.Contains(string(out), " master "+bridge+" ") {
		return -1, fmt.Errorf("the reboot: the tap %s is no longer on the bridge %s: %v: %s", b.Tap, bridge, err, out)
	}
	if err := vm.WriteRunScript(share, b.AfterReboot, b.Env); err != nil {
		return -1, err
	}
	l.logf("cluster: VM reboot: booting again on its disk, with %v", b.AfterReboot)
	r, err = vm.Boot(ctx, cfg)
	l.logBoot(r)
	if err == nil && r.Reboot {
		return -1, errors.New("the VM asked for a second reboot")
	}
	return r.Code, err
}

// logBoot says how much of the host the VM took (qemu's CPU time against
// its wall time: docs/lab.md, the two-core budget of the emulated nodes),
// and when vm.Boot had to power-cycle a VM whose kernel hung at boot (an
// emulation fault, not the node's).
func (l *Lab) logBoot(r vm.Result) {
	if r.Wall > 0 {
		l.logf("cluster: the VM's qemu used %s of host CPU in %s: %.0f %% of one host core (the host has %d)",
			r.CPU.Round(100*time.Millisecond), r.Wall.Round(100*time.Millisecond), 100*r.CPU.Seconds()/r.Wall.Seconds(), runtime.NumCPU())
	}
	if r.PowerCycles > 0 {
		l.logf("cluster: the VM's kernel hung at boot (nothing from /init within %s) and was powered off and booted again", vm.DefaultBootDeadline)
	}
}

// withEnv is the in-VM test binary's environment: extra, and key=1 (the
// variable that enables the role's scenario in e2e/vmtests).
func withEnv(key string, extra map[string]string) map[string]string {
	env := map[string]string{key: "1"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// orDefault is v, or def when v is empty.
func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// vmNode describes the files of a VM node, whatever its role.
type vmNode struct {
	Assets vm.Assets
	// Root is the module root (scripts/offline.sh builds the bundle there).
	Root string
	// Cache is the project's cache folder (FetchDebs).
	Cache string
	// Image reports whether the lab's image ref goes into the node's containerd.
	Image func(ref string) bool
	// Modules are the kernel modules the node loads (with their
	// dependencies), beyond the initramfs's.
	Modules []string
	// PodCIDR is the node's range for its bridge CNI config.
	PodCIDR string
	// Machine is the folder where the node is installed (writeMachine),
	// the disk's future / .
	Machine string
	Log     io.Writer
}

// writeVMNode fills dir with what any VM node needs and records the files'
// names in spec (relative to dir): the CNI config, the image archives
// n.Image picks and the offline bundle, built as a user builds it (make
// offline). It installs the node in n.Machine (writeMachine): Debian's
// containerd, runc and CNI plugins with the kubelet, kubeadm and kubectl
// and the libraries they link, the kernel's config and modules, the init
// system.
func (l *Lab) writeVMNode(ctx context.Context, dir string, n vmNode, spec *WorkerSpec) error {
	log := n.Log
	if log == nil {
		log = io.Discard
	}
	spec.Bundle, spec.CNIConfig = "bundle.tar.gz", "10-vipctl-lab.conflist"
	spec.PauseRef = l.pauseRef()
	if err := os.WriteFile(filepath.Join(dir, spec.CNIConfig), []byte(CNIConfig(n.PodCIDR)), 0o644); err != nil {
		return err
	}
	for _, img := range l.Images {
		if img.Ref == spec.PauseRef || n.Image(img.Ref) {
			name := filepath.Base(img.Tar)
			if err := vm.LinkOrCopy(img.Tar, filepath.Join(dir, name)); err != nil {
				return err
			}
			spec.Images = append(spec.Images, name)
		}
	}
	debRoot, err := FetchDebs(ctx, n.Cache, WorkerDebs, log)
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
	if err := writeMachine(ctx, n.Machine, n, spec, files, debRoot, log); err != nil {
		return fmt.Errorf("install the node on its disk: %w", err)
	}
	dist := filepath.Join(dir, "dist")
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(n.Root, "scripts", "offline.sh"))
	cmd.Dir = n.Root
	cmd.Env = append(os.Environ(), "ARCHES=amd64", "DIST="+dist, "VERSION="+WorkerVersion)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scripts/offline.sh: %w", err)
	}
	if err := os.Rename(filepath.Join(dist, "vipctl-offline-"+WorkerVersion+"-linux-amd64.tar.gz"), filepath.Join(dir, spec.Bundle)); err != nil {
		return err
	}
	return os.RemoveAll(dist)
}
