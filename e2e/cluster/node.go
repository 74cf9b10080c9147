package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// overlaid are the host folders each node sees through an overlay of its
// own: what kubeadm, the kubelet and containerd write there (/etc/kubernetes,
// /var/lib/kubelet, /var/lib/etcd, /usr/libexec/kubernetes, ...) stays in the
// node's folder and the host is left untouched.
var overlaid = []string{"/etc", "/var", "/usr", "/opt"}

// Node is one machine of the cluster, kind-style: its own network namespace
// (eth0 on the lab bridge), mount namespace (the overlays above, its own
// /var/lib/containerd and a tmpfs /run) and UTS namespace (its hostname),
// with its own containerd and, once kubeadm has configured it, a kubelet.
// Everything of the node runs in those namespaces through nsenter.
type Node struct {
	lab  *Lab
	Name string
	IP   netip.Addr
	// Dir holds the node's overlays, containerd's root and the logs.
	Dir string

	holder     *exec.Cmd // sleeps in the namespaces, which live as long as it
	containerd *exec.Cmd

	kubeletStop context.CancelFunc
	kubeletDone chan struct{}
	mu          sync.Mutex
	kubelet     *exec.Cmd
	// KubeletStarts counts the kubelet's starts by the supervisor.
	KubeletStarts int
}

// NS is the node's network namespace; CgroupRoot its kubelet's cgroupRoot.
func (n *Node) NS() string         { return NodePrefix + n.Name }
func (n *Node) CgroupRoot() string { return "/" + NodePrefix + n.Name }

// Path is p as the node sees it, readable from the host.
func (n *Node) Path(p string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", n.holder.Process.Pid), p)
}

// Command is name run in the node's namespaces.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := []string{"-t", fmt.Sprint(n.holder.Process.Pid), "-m", "-n", "-u", "--", name}
	return exec.CommandContext(ctx, "nsenter", append(a, args...)...)
}

// Run runs name in the node and returns its combined output.
func (n *Node) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %s %s: %w\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// AddNode makes node i (from 1) named name: its namespaces and network,
// its containerd, and every lab image imported into it.
func (l *Lab) AddNode(ctx context.Context, i int, name string) (*Node, error) {
	n := &Node{lab: l, Name: name, IP: NodeIP(i), Dir: filepath.Join(l.Dir, name)}
	l.Nodes = append(l.Nodes, n) // Close cleans up whatever part was made
	t0 := time.Now()
	if err := n.network(i); err != nil {
		return nil, err
	}
	if err := makeCgroup(n.CgroupRoot()); err != nil {
		return nil, err
	}
	if err := n.startHolder(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	l.logf("cluster: %s: namespaces and containerd up in %s", name, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	for _, img := range l.Images {
		if _, err := n.Run(ctx, "ctr", "-n", "k8s.io", "images", "import", img.Tar); err != nil {
			return nil, err
		}
	}
	l.logf("cluster: %s: %d images imported in %s", name, len(l.Images), time.Since(t0).Round(time.Millisecond))
	return n, nil
}

func (n *Node) network(i int) error {
	veth := fmt.Sprintf("n%d", i)
	for _, c := range [][]string{
		{"netns", "add", n.NS()},
		{"-n", n.NS(), "link", "set", "lo", "up"},
		{"-n", LabNS, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.NS()},
		{"-n", LabNS, "link", "set", veth, "master", bridge, "up"},
		{"-n", n.NS(), "addr", "add", n.IP.String() + "/24", "dev", "eth0"},
		{"-n", n.NS(), "link", "set", "eth0", "up"},
		// Components want a default route; it leads into the lab namespace,
		// which has no way out.
		{"-n", n.NS(), "route", "add", "default", "via", gateway},
	} {
		if err := ip(c...); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	// kubeadm's preflight wants forwarding on; it is per namespace.
	if out, err := exec.Command("ip", "netns", "exec", n.NS(), "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		return fmt.Errorf("%s: ip_forward: %w: %s", n.Name, err, out)
	}
	return nil
}

// startHolder prepares the node's files (hosts, hostname, containerd's
// config in the /etc overlay) and starts the process whose namespaces are
// the node's.
func (n *Node) startHolder() error {
	up := func(p string) string { return filepath.Join(n.Dir, "ov", p) }
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	hosts = fmt.Appendf(hosts, "%s %s\n%s %s\n", n.IP, n.Name, n.IP, Hostname)
	files := map[string][]byte{
		up("etc.up/hosts"):                  hosts,
		up("etc.up/hostname"):               []byte(n.Name + "\n"),
		up("etc.up/containerd/config.toml"): []byte(containerdConfig(n.lab.pauseRef())),
	}
	for p, b := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	// The Kubernetes programs are installed on the node as a package would:
	// in /usr/local/bin (kubeadm's preflight runs `kubelet --version`).
	b := n.lab.Bin
	for name, src := range map[string]string{"kubeadm": b.Kubeadm, "kubelet": b.Kubelet, "kubectl": b.Kubectl} {
		if src == "" {
			continue
		}
		dst := up("usr.up/local/bin/" + name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(src, dst); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(n.Dir, "containerd"), 0o711); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "set -e\nhostname %s\n", n.Name)
	for _, d := range overlaid {
		b := filepath.Base(d)
		fmt.Fprintf(&sb, "if [ -d %[1]s ]; then mkdir -p %[2]s.up %[2]s.work; mount -t overlay overlay -o lowerdir=%[1]s,upperdir=%[2]s.up,workdir=%[2]s.work %[1]s; fi\n", d, up(b))
	}
	// containerd's overlay snapshotter cannot work on an overlay.
	fmt.Fprintf(&sb, "mkdir -p /var/lib/containerd\nmount --bind %s /var/lib/containerd\n", filepath.Join(n.Dir, "containerd"))
	sb.WriteString("mount -t tmpfs -o mode=0755 tmpfs /run\necho ready\nexec sleep infinity\n")

	cmd := exec.Command("nsenter", "--net=/run/netns/"+n.NS(), "--",
		"unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c", sb.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start namespaces: %w", n.Name, err)
	}
	n.holder = cmd
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		_ = cmd.Wait()
		return fmt.Errorf("%s: setting up the mount namespace failed: %s", n.Name, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// pauseRef is the pause image kubeadm asked for, which containerd must use
// as its sandbox image.
func (l *Lab) pauseRef() string {
	for _, img := range l.Images {
		if strings.Contains(img.Ref, "/pause:") {
			return img.Ref
		}
	}
	return "registry.k8s.io/pause:3.10.1"
}

// containerdConfig is Debian's containerd config plus what this machine
// needs: restrict_oom_score_adj (no CAP_SYS_RESOURCE here: runc would fail
// with "can't get final child's PID from pipe: EOF") and the sandbox image.
func containerdConfig(pause string) string {
	return fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    sandbox_image = %q
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
`, pause)
}

func (n *Node) startContainerd(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(n.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := n.Command(context.Background(), "containerd", "--config", "/etc/containerd/config.toml")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start containerd: %w", n.Name, err)
	}
	n.containerd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s: containerd exited (see %s/containerd.log)", n.Name, n.Dir)
		case <-deadline:
			return fmt.Errorf("%s: containerd not answering after 30 s (see %s/containerd.log)", n.Name, n.Dir)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := n.Command(ctx, "ctr", "version").Run(); err == nil {
				return nil
			}
		}
	}
}

// SuperviseKubelet plays systemd's kubelet.service with kubeadm's drop-in:
// once kubeadm has written /var/lib/kubelet/config.yaml and
// kubeadm-flags.env it starts the kubelet with the drop-in's arguments and
// restarts it a second after each exit, until Close.
func (n *Node) SuperviseKubelet() {
	ctx, cancel := context.WithCancel(context.Background())
	n.kubeletStop, n.kubeletDone = cancel, make(chan struct{})
	go func() {
		defer close(n.kubeletDone)
		Supervise(ctx, filepath.Join(n.Dir, "kubelet.log"), func() (*exec.Cmd, error) {
			args, err := n.kubeletArgs()
			if err != nil {
				return nil, err
			}
			return n.Command(context.Background(), "/usr/local/bin/kubelet", args...), nil
		}, func(cmd *exec.Cmd) {
			n.mu.Lock()
			n.kubelet = cmd
			n.KubeletStarts++
			n.mu.Unlock()
		})
	}()
}

// Supervise plays systemd's Restart=always with RestartSec=1s for one
// program, until ctx ends: next returns the command to run (an error means
// not yet: it is asked again 200 ms later), whose output is appended to
// logPath; started is called with each command that started. When ctx
// ends the running command gets SIGTERM, and SIGKILL 10 s later.
func Supervise(ctx context.Context, logPath string, next func() (*exec.Cmd, error), started func(*exec.Cmd)) {
	for ctx.Err() == nil {
		cmd, err := next()
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err == nil {
			started(cmd)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			}
		}
		logf.Close()
		select { // systemd's RestartSec
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// kubeletArgs are the arguments of kubeadm's systemd drop-in
// (10-kubeadm.conf): the kubeconfigs, config.yaml and KUBELET_KUBEADM_ARGS
// from kubeadm-flags.env. An error until kubeadm has written both files.
func (n *Node) kubeletArgs() ([]string, error) {
	if _, err := os.Stat(n.Path("/var/lib/kubelet/config.yaml")); err != nil {
		return nil, err
	}
	env, err := os.ReadFile(n.Path("/var/lib/kubelet/kubeadm-flags.env"))
	if err != nil {
		return nil, err
	}
	return KubeletArgs(env), nil
}

// Close stops the kubelet, kills the node's containers, containerd and
// every process left in its namespaces, and removes its namespace and
// cgroups. The overlays vanish with the mount namespace.
func (n *Node) Close() error {
	if n.kubeletStop != nil {
		n.kubeletStop()
		<-n.kubeletDone
		n.kubeletStop = nil
	}
	killCgroup(n.CgroupRoot())
	if n.containerd != nil && n.containerd.Process != nil {
		_ = n.containerd.Process.Kill()
	}
	if nsExists(n.NS()) {
		killNetns(n.NS()) // shims, the holder, anything exec'd in the node
	}
	if n.holder != nil && n.holder.Process != nil {
		_ = n.holder.Process.Kill()
		_ = n.holder.Wait()
	}
	var errs []error
	if nsExists(n.NS()) {
		errs = append(errs, ip("netns", "del", n.NS()))
	}
	removeCgroup(n.CgroupRoot())
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", n.CgroupRoot())); err == nil {
		errs = append(errs, fmt.Errorf("%s: cgroup %s still there", n.Name, n.CgroupRoot()))
	}
	return errors.Join(errs...)
}
