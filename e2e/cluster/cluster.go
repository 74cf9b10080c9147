package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Names and addresses of the cluster lab's network.
const (
	// LabNS is the namespace holding the bridge every node is plugged into.
	LabNS = "vipctl-cl"
	// NodePrefix + a node's name is its network namespace and cgroup.
	NodePrefix = "vipctl-cl-"
	bridge     = "br0"
	labCIDR    = "10.31.0.1/24"
	gateway    = "10.31.0.1"
	// Hostname is controlPlaneEndpoint's host, mapped in each node's /etc/hosts.
	Hostname = "apiserver.cluster.local"
	// sysctlSave keeps the host sysctls the kubelet rewrites, so that a run
	// that died before putting them back is undone by the next one.
	sysctlSave = "/run/vipctl-cluster-sysctls"
)

// kubeletSysctls are the host (not per-namespace) settings every kubelet
// rewrites at start (pkg/kubelet/cm setupKernelTunables): Close puts them back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Options configure New.
type Options struct {
	// Dir holds every node's files; it must not be under /etc, /var, /usr
	// or /opt, which each node overlays.
	Dir    string
	Bin    Binaries
	Images []Image
	// KubeProxyMode, when set (nftables, ipvs), makes kubeadm init install
	// kube-proxy's DaemonSet in that mode; empty, the phase is skipped.
	KubeProxyMode string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Lab is the cluster's network and its nodes.
type Lab struct {
	Dir    string
	Bin    Binaries
	Images []Image
	Nodes  []*Node
	// KubeProxyMode is Options.KubeProxyMode.
	KubeProxyMode string
	logf          func(string, ...any)
	saved         map[string]string
}

// New removes what an earlier run left, saves the host sysctls the kubelet
// changes and makes the lab namespace with its bridge. Close undoes it.
func New(ctx context.Context, o Options) (*Lab, error) {
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		return nil, fmt.Errorf("cluster: Options.Dir %q: want an absolute path", o.Dir)
	}
	for _, d := range overlaid {
		if o.Dir == d || strings.HasPrefix(o.Dir, d+"/") {
			return nil, fmt.Errorf("cluster: Options.Dir %s: must not be under %s, which the nodes overlay", o.Dir, d)
		}
	}
	for _, p := range []string{"ip", "nsenter", "unshare", "containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("cluster: %s is needed: %w", p, err)
		}
	}
	l := &Lab{Dir: o.Dir, Bin: o.Bin, Images: o.Images, KubeProxyMode: o.KubeProxyMode, logf: o.Logf}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}
	removeLeftovers(l.logf)
	saved, err := saveSysctls()
	if err != nil {
		return nil, err
	}
	l.saved = saved
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	for _, c := range [][]string{
		{"netns", "add", LabNS},
		{"-n", LabNS, "link", "set", "lo", "up"},
		{"-n", LabNS, "link", "add", bridge, "type", "bridge"},
		{"-n", LabNS, "addr", "add", labCIDR, "dev", bridge},
		{"-n", LabNS, "link", "set", bridge, "up"},
	} {
		if err := ip(c...); err != nil {
			return nil, err
		}
	}
	ok = true
	return l, nil
}

// Close stops every node, deletes the namespaces and cgroups and puts the
// host sysctls back. It is safe to call more than once.
func (l *Lab) Close() error {
	var errs []error
	for _, n := range l.Nodes {
		errs = append(errs, n.Close())
	}
	l.Nodes = nil
	if nsExists(LabNS) {
		errs = append(errs, ip("netns", "del", LabNS))
	}
	if l.saved != nil {
		errs = append(errs, restoreSysctls(l.saved))
		l.saved = nil
	}
	return errors.Join(errs...)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func nsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// saveSysctls reads the kubelet's sysctls and keeps them in sysctlSave. If
// that file is there, an earlier run did not restore them: they are put
// back from it first.
func saveSysctls() (map[string]string, error) {
	if b, err := os.ReadFile(sysctlSave); err == nil {
		old := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				old[k] = v
			}
		}
		if err := restoreSysctls(old); err != nil {
			return nil, err
		}
	}
	m := map[string]string{}
	var sb strings.Builder
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, fmt.Errorf("save sysctl %s: %w", k, err)
		}
		m[k] = strings.TrimSpace(string(b))
		fmt.Fprintf(&sb, "%s=%s\n", k, m[k])
	}
	if err := os.WriteFile(sysctlSave, []byte(sb.String()), 0o600); err != nil {
		return nil, fmt.Errorf("save sysctls: %w", err)
	}
	return m, nil
}

func restoreSysctls(m map[string]string) error {
	var errs []error
	for k, v := range m {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	if len(errs) == 0 {
		_ = os.Remove(sysctlSave)
	}
	return errors.Join(errs...)
}

// removeLeftovers kills what a run that did not finish left: the processes
// in the lab's cgroups and namespaces, then the namespaces and cgroups.
func removeLeftovers(logf func(string, ...any)) {
	names, _ := filepath.Glob("/run/netns/" + NodePrefix + "*")
	if nsExists(LabNS) {
		names = append(names, "/run/netns/"+LabNS)
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/pids/" + NodePrefix + "*")
	for _, cg := range cgs {
		killCgroup(filepath.Base(cg))
	}
	for _, p := range names {
		ns := filepath.Base(p)
		logf("cluster: removing leftover namespace %s", ns)
		killNetns(ns)
		_ = ip("netns", "del", ns)
	}
	for _, cg := range cgs {
		removeCgroup(filepath.Base(cg))
	}
}

// killNetns SIGKILLs every process in the named network namespace.
func killNetns(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// cgroupControllers are the cgroup v1 hierarchies mounted here.
func cgroupControllers() []string {
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name(), "cgroup.procs")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// makeCgroup creates /name in every hierarchy (the kubelet's cgroupRoot
// must exist), with cpuset's cpus and mems copied from the root so that
// tasks can join it.
func makeCgroup(name string) error {
	for _, c := range cgroupControllers() {
		d := filepath.Join("/sys/fs/cgroup", c, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		if c == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", c, f))
				if err != nil {
					return fmt.Errorf("cgroup %s: %w", d, err)
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// killCgroup SIGKILLs every task under /name until none is left (or 10 s).
func killCgroup(name string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", name), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
					n++
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
		if n == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroup removes /name and everything under it in every hierarchy.
func removeCgroup(name string) {
	for _, c := range cgroupControllers() {
		root := filepath.Join("/sys/fs/cgroup", c, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // deepest first
			_ = os.Remove(dirs[i])
		}
	}
}

// NodeIP is the address of the i-th node (from 1).
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 31, 0, byte(10 + i)}) }
