package cluster

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The cluster e2e runs when VIPCTL_CLUSTER=1, which `make cluster` sets:
// it needs root, containerd, runc, about 10 minutes of building on a cold
// cache and ~20-27 minutes of a 2-core machine to itself, so `make test`
// leaves it out (docs/lab.md).
const enableEnv = "VIPCTL_CLUSTER"

func requireLab(t *testing.T) {
	t.Helper()
	if os.Getenv(enableEnv) != "1" {
		t.Skipf("the real-cluster e2e runs in make cluster, or with %s=1 (needs root, containerd, runc; see docs/lab.md)", enableEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups)")
	}
	for _, p := range []string{"containerd", "runc", "ctr", "nsenter", "unshare", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed", p)
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func cacheDir() string {
	if c := os.Getenv("VIPCTL_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "vipctl")
}

// hostSnapshot is what the lab must leave as it found it on the host.
func hostSnapshot(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range []string{"/etc/hosts", "/etc/hostname"} {
		b, _ := os.ReadFile(p)
		m[p] = string(b)
	}
	for _, p := range []string{"/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd", "/var/lib/containerd", "/run/containerd", "/usr/libexec/kubernetes"} {
		_, err := os.Stat(p)
		m[p] = map[bool]string{true: "present", false: "absent"}[err == nil]
	}
	for _, k := range kubeletSysctls {
		b, _ := os.ReadFile("/proc/sys/" + k)
		m[k] = string(b)
	}
	h, _ := os.Hostname()
	m["hostname"] = h
	return m
}

// TestCluster is the masters alone (VIPCTL_CLUSTER_MASTERS of them, 1 to
// 3), with no worker. TestClusterWorker makes the same masters first, so
// make cluster leaves this one out: it runs when VIPCTL_CLUSTER_MASTERS is set.
func TestCluster(t *testing.T) {
	requireLab(t)
	if os.Getenv("VIPCTL_CLUSTER_MASTERS") == "" {
		t.Skip("the masters alone: TestClusterWorker makes them too; set VIPCTL_CLUSTER_MASTERS=1..3 to run this")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	lab, names, _ := startMasters(ctx, t, false, "")
	m1 := lab.Nodes[0]
	checkControlPlane(ctx, t, lab, m1, names)
}

// startMasters builds what the cluster needs and makes the masters
// (VIPCTL_CLUSTER_MASTERS, default 1) with the real kubeadm: init on the
// first, join --control-plane on the others. With secrets (or more than one
// master) init also creates a bootstrap token, returned for the joins to
// come. kubeProxyMode is Options.KubeProxyMode. The lab is closed, and the
// host compared with its state before, when the test ends.
func startMasters(ctx context.Context, t *testing.T, secrets bool, kubeProxyMode string) (*Lab, []string, *Secrets) {
	t.Helper()
	root := moduleRoot(t)
	before := hostSnapshot(t)

	bin, imgs, cniRoot := labInputs(ctx, t, root)

	lab, err := New(ctx, Options{Dir: t.TempDir(), Bin: bin, Images: imgs, KubeProxyMode: kubeProxyMode, Logf: t.Logf})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, lab.Close())
		require.Equal(t, before, hostSnapshot(t), "the host after the lab")
	})

	masters := 1
	if v := os.Getenv("VIPCTL_CLUSTER_MASTERS"); v != "" {
		masters, err = strconv.Atoi(v)
		require.NoError(t, err, "VIPCTL_CLUSTER_MASTERS")
		require.True(t, masters >= 1 && masters <= 3, "VIPCTL_CLUSTER_MASTERS=%d: want 1 to 3", masters)
	}
	m1, err := lab.AddNode(ctx, 1, "master1")
	require.NoError(t, err)
	require.NoError(t, m1.InstallCNI(cniRoot, PodCIDR(1)))
	var sec *Secrets
	if masters > 1 || secrets {
		s, err := lab.NewSecrets(ctx, m1)
		require.NoError(t, err)
		sec = &s
	}
	res, err := lab.Init(ctx, m1, sec)
	if err != nil {
		logTail(t, filepath.Join(m1.Dir, "kubelet.log"))
	}
	require.NoError(t, err)
	if sec != nil {
		key, err := os.ReadFile(sec.CertKeyFile)
		require.NoError(t, err)
		require.NotContains(t, res.Output, sec.Token, "kubeadm init printed the token")
		require.NotContains(t, res.Output, strings.TrimSpace(string(key)), "kubeadm init printed the certificate key")
	}
	t.Logf("kubeadm init took %s (kubelet started %d times)\n%s", res.Took.Round(time.Millisecond), m1.KubeletStarts, res.Output)
	// kubeadm made this cluster, not `vipctl init` (no IPVS on this host):
	// the watchdogs' master discovery gets its RBAC the way an existing
	// cluster does (docs/join.md).
	out, err := m1.Run(ctx, lab.Bin.Vipctl, "rbac", "apply", "--kubeconfig", "/etc/kubernetes/admin.conf")
	require.NoError(t, err, "vipctl rbac apply")
	t.Logf("vipctl rbac apply:\n%s", out)
	names := []string{"master1"}
	for i := 2; i <= masters; i++ {
		name := "master" + strconv.Itoa(i)
		m, err := lab.AddNode(ctx, i, name)
		require.NoError(t, err)
		require.NoError(t, m.InstallCNI(cniRoot, PodCIDR(i)))
		took, err := lab.JoinControlPlane(ctx, m, m1, *sec)
		if err != nil {
			logTail(t, filepath.Join(m.Dir, "kubelet.log"))
		}
		require.NoError(t, err)
		t.Logf("kubeadm join --control-plane of %s took %s", name, took.Round(time.Millisecond))
		names = append(names, name)
	}
	return lab, names, sec
}

// labInputs builds (or finds cached) what a cluster lab runs: the
// binaries, kubeadm's images (archives in the cache) and Debian's CNI
// plugins, unpacked (cniRoot).
func labInputs(ctx context.Context, t *testing.T, root string) (bin Binaries, imgs []Image, cniRoot string) {
	t.Helper()
	t0 := time.Now()
	var blog bytes.Buffer
	bin, err := FindBinaries(ctx, root, t.TempDir(), &blog)
	require.NoError(t, err, blog.String())
	t.Logf("binaries ready in %s", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	debRoot, err := FetchDebs(ctx, cacheDir(), KubeProxyDebs, &blog)
	require.NoError(t, err, blog.String())
	var skipped []string
	imgs, skipped, err = KubeadmImages(ctx, bin, "v1.34.4", debRoot)
	require.NoError(t, err)
	require.NoError(t, WriteImages(filepath.Join(cacheDir(), "cluster-images"), imgs))
	t.Logf("%d images ready in %s; not built: %v", len(imgs), time.Since(t0).Round(time.Millisecond), skipped)
	cniRoot, err = FetchDebs(ctx, cacheDir(), WorkerDebs, &blog)
	require.NoError(t, err, blog.String())
	return bin, imgs, cniRoot
}

// checkControlPlane waits for every master's static pods to be Ready and
// logs the nodes and pods.
func checkControlPlane(ctx context.Context, t *testing.T, lab *Lab, m1 *Node, names []string) {
	t.Helper()
	// Each master's static pods get mirror pods once its kubelet has
	// registered; they turn Ready when their probes pass (these
	// hostNetwork pods need no CNI; the nodes need it to turn Ready).
	t0 := time.Now()
	var pods []string
	for _, n := range names {
		for _, c := range []string{"etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-"} {
			pods = append(pods, "pod/"+c+n)
		}
	}
	for _, p := range pods {
		require.Eventually(t, func() bool {
			_, err := lab.Kubectl(ctx, m1, "get", "-n", "kube-system", p)
			return err == nil
		}, 5*time.Minute, time.Second, "%s never appeared", p)
	}
	_, err := lab.Kubectl(ctx, m1, append([]string{"wait", "-n", "kube-system", "--for=condition=Ready", "--timeout=5m"}, pods...)...)
	require.NoError(t, err)
	t.Logf("control-plane pods Ready %s after the last kubeadm", time.Since(t0).Round(time.Millisecond))
	// With the bridge CNI config, the runtime's network is ready and so
	// are the nodes.
	_, err = lab.Kubectl(ctx, m1, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5m")
	require.NoError(t, err)
	t.Logf("every master Ready %s after the last kubeadm", time.Since(t0).Round(time.Millisecond))
	nodes, err := lab.Kubectl(ctx, m1, "get", "nodes", "-o", "wide")
	require.NoError(t, err)
	t.Logf("kubectl get nodes:\n%s", nodes)
	out, err := lab.Kubectl(ctx, m1, "get", "pods", "-n", "kube-system", "-o", "wide")
	require.NoError(t, err)
	t.Logf("kubectl get pods -n kube-system:\n%s", out)
	for _, n := range names {
		require.Contains(t, string(nodes), n+" ", "nodes")
		for _, c := range []string{"etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-"} {
			require.Contains(t, string(out), c+n, "static pods")
		}
	}
}

func logTail(t *testing.T, p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Logf("%s: %v", p, err)
		return
	}
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	t.Logf("tail of %s:\n%s", p, b)
}

// TestNodeNamespaces checks the harness's node alone (no Kubernetes
// binaries): its hostname, its /etc/hosts mapping, its own containerd with
// the pause image imported, and a host left as it was.
func TestNodeNamespaces(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := hostSnapshot(t)
	dir := t.TempDir()
	bin := Binaries{Pause: filepath.Join(dir, "pause")}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin.Pause, "./pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	imgs := []Image{{Ref: "registry.k8s.io/pause:3.10.1"}}
	imgs[0].Spec, _, err = imageSpec(imgs[0].Ref, bin, "")
	require.NoError(t, err)
	require.NoError(t, WriteImages(filepath.Join(dir, "images"), imgs))

	lab, err := New(ctx, Options{Dir: filepath.Join(dir, "lab"), Bin: bin, Images: imgs, Logf: t.Logf})
	require.NoError(t, err)
	n, err := lab.AddNode(ctx, 1, "node1")
	if err != nil {
		lab.Close()
		require.NoError(t, err)
	}
	func() {
		defer func() { require.NoError(t, lab.Close()) }()
		out, err := n.Run(ctx, "hostname")
		require.NoError(t, err)
		require.Equal(t, "node1", strings.TrimSpace(string(out)))
		out, err = n.Run(ctx, "getent", "hosts", Hostname)
		require.NoError(t, err)
		require.Contains(t, string(out), n.IP.String())
		out, err = n.Run(ctx, "ctr", "-n", "k8s.io", "images", "ls", "-q")
		require.NoError(t, err)
		require.Contains(t, string(out), "registry.k8s.io/pause:3.10.1")
		out, err = n.Run(ctx, "ip", "-4", "-o", "addr", "show", "eth0")
		require.NoError(t, err)
		require.Contains(t, string(out), n.IP.String()+"/24")
		// What the node writes stays in the node.
		_, err = n.Run(ctx, "mkdir", "-p", "/etc/kubernetes/probe")
		require.NoError(t, err)
		_, err = os.Stat("/etc/kubernetes/probe")
		require.True(t, os.IsNotExist(err), "the node's /etc/kubernetes reached the host")
	}()
	require.Equal(t, before, hostSnapshot(t), "the host after the lab")
	_, err = os.Stat("/run/netns/" + n.NS())
	require.True(t, os.IsNotExist(err), "namespace %s left", n.NS())
}

// TestKubeProxyImageTools runs the tools kube-proxy's modes call (nft for
// nftables, iptables-restore and ipset for ipvs) from the kube-proxy image,
// in a container of a node's containerd, against the node's own network
// namespace. kube-proxy itself is stood in for by the pause binary: this is
// about the image's Debian tools and their libraries.
func TestKubeProxyImageTools(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var log bytes.Buffer
	debRoot, err := FetchDebs(ctx, cacheDir(), KubeProxyDebs, &log)
	require.NoError(t, err, log.String())
	bin := Binaries{Pause: filepath.Join(dir, "pause")}
	bin.KubeProxy = bin.Pause
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin.Pause, "./pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	imgs := []Image{{Ref: "registry.k8s.io/pause:3.10.1"}, {Ref: "registry.k8s.io/kube-proxy:v1.34.4"}}
	for i := range imgs {
		imgs[i].Spec, _, err = imageSpec(imgs[i].Ref, bin, debRoot)
		require.NoError(t, err)
	}
	require.NoError(t, WriteImages(filepath.Join(dir, "images"), imgs))
	lab, err := New(ctx, Options{Dir: filepath.Join(dir, "lab"), Bin: bin, Images: imgs, Logf: t.Logf})
	require.NoError(t, err)
	defer func() { require.NoError(t, lab.Close()) }()
	n, err := lab.AddNode(ctx, 1, "node1")
	require.NoError(t, err)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/sbin/nft", "--version"}, "nftables v"},
		{[]string{"/usr/sbin/nft", "add", "table", "ip", "vipctl-probe"}, ""},
		{[]string{"/usr/sbin/nft", "list", "tables"}, "table ip vipctl-probe"},
		{[]string{"/usr/sbin/iptables-restore", "--version"}, "(nf_tables)"},
		{[]string{"/usr/sbin/iptables", "-t", "nat", "-L", "-n"}, "Chain POSTROUTING"},
		{[]string{"/usr/sbin/ipset", "--version"}, "ipset v"},
		{[]string{"/usr/sbin/modprobe", "--version"}, "kmod version"},
	} {
		a := append([]string{"-n", "k8s.io", "run", "--rm", "--net-host", "--privileged", imgs[1].Ref, "tools"}, c.args...)
		out, err := n.Run(ctx, "ctr", a...)
		require.NoError(t, err)
		require.Contains(t, string(out), c.want, "%v", c.args)
	}
	// The rules went into the node's network namespace, not the host's.
	if nft, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command(nft, "list", "tables").CombinedOutput()
		require.NoError(t, err, string(out))
		require.NotContains(t, string(out), "vipctl-probe")
	}
}
