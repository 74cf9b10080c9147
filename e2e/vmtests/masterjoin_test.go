package vmtests

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vipctl/vipctl/e2e/cluster"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/manifests"
)

// TestClusterMasterJoin is the VM's part of e2e/cluster TestClusterMasterJoin
// (docs/lab.md, "A master by vipctl join --control-plane"): the VM joins the
// host masters' cluster as a third master, as a user adds one: Debian's
// containerd and runc, the offline bundle's install.sh, a real kubelet, and
// `vipctl join --control-plane` driving the real `kubeadm join
// --control-plane` (stacked etcd; the token and the certificate key from
// files), on the machine the host installed and its systemd runs (e2e/cluster
// writeMachine). Then one fault: the
// host kills master2's kube-apiserver. It runs only in the VM the host test
// boots (VIPCTL_E2E_CLUSTER_CPJOIN=1); TestVM skips it.
func TestClusterMasterJoin(t *testing.T) {
	needClusterLab(t, "VIPCTL_E2E_CLUSTER_CPJOIN", "TestClusterMasterJoin")
	start := time.Now()
	dir := filepath.Join(lab.ShareDir, cluster.MasterJoinDir)
	spec, err := cluster.ReadMasterJoinSpec(dir)
	require.NoError(t, err)
	nodeIP := strings.Split(spec.Node.NodeIP, "/")[0]
	self := netip.AddrPortFrom(netip.MustParseAddr(nodeIP), 6443).String()
	w := &worker{t: t, spec: spec.Node, dir: dir, name: "cluster_cpjoin"}
	w.setUp("containerd_images_s")
	tokenFile, token := w.installSecret(spec.Node.TokenFile, "token")
	keyFile, key := w.installSecret(spec.CertKeyFile, "certificate-key")
	require.NotEmpty(t, token)
	require.NotEmpty(t, key)
	// The harness's part of the JoinConfiguration (the node's name, the
	// CRI socket, no pulls, the longer control-plane wait), where a user
	// keeps theirs.
	w.copyPrivate(spec.JoinConfig, "/root/kubeadm-join.yaml")

	// Every write of /etc/hosts from here to the end of the checks is counted.
	hw := watchHosts(t)
	defer hw.stop()
	before := lab.HostsIdentity(etcHosts)

	args := []string{"join", "--control-plane", "--node-ip", nodeIP, "--service-subnet", spec.Node.ServiceSubnet,
		"--token-file", tokenFile, "--certificate-key-file", keyFile, "--config", "/root/kubeadm-join.yaml"}
	for _, m := range spec.Node.Masters {
		args = append(args, "--master", m)
	}
	for _, f := range spec.CareFlags {
		args = append(args, "--care-flag="+f)
	}
	args = append(args, "--", "--discovery-token-ca-cert-hash", spec.Node.CACertHash)
	t.Logf("vipctl %s", strings.Join(args, " "))
	join := time.Now()
	joinCPU := takeCPUSnap()
	healthy := watchReadyz(self)
	defer healthy.stop()
	b, err := exec.Command("/usr/local/bin/vipctl", args...).CombinedOutput()
	t.Logf("vipctl join --control-plane (%s):\n%s", time.Since(join).Round(time.Millisecond), b)
	require.NoError(t, err, "vipctl join --control-plane")
	w.measure("vipctl_join_s", join)
	w.kubeletUnit()
	w.reportCPU("join", joinCPU)
	afterJoinCPU := takeCPUSnap()
	out := string(b)
	assert.NotContains(t, out, token, "no token in vipctl join's output")
	assert.NotContains(t, out, key, "no certificate key in vipctl join's output")
	// kubeadm waited for the local apiserver; the poll saw it first.
	require.NoError(t, lab.Poll(2*time.Minute, func() bool { return !healthy.first().IsZero() }), "%s/readyz never answered 200", self)
	w.figure("join_to_local_apiserver_healthy_s", healthy.first().Sub(join))

	// The name maps to the VIP, written by join (once: checked at the end).
	assert.NotEqual(t, before, lab.HostsIdentity(etcHosts), "join wrote the hosts file")
	assert.Equal(t, []netip.Addr{lab.VIP}, hostsMapping(t))
	afterJoin := lab.HostsIdentity(etcHosts)
	// The kubelet goes through the name, the VIP (vipctl turned kubeadm's
	// ControlPlaneKubeletLocalMode off), and so do the admin's clients.
	for _, f := range []string{"/etc/kubernetes/kubelet.conf", "/etc/kubernetes/admin.conf"} {
		c, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.Contains(t, string(c), "server: https://"+cluster.Hostname+":6443", "%s's server:\n%s", f, serverLines(c))
	}
	kubectl := func(a ...string) (string, error) {
		c := exec.Command("/usr/local/bin/kubectl", append([]string{"--kubeconfig", "/etc/kubernetes/admin.conf", "--request-timeout", "20s"}, a...)...)
		o, err := c.CombinedOutput()
		return string(o), err
	}
	// A check's read through the VIP, retried for a minute: a connection
	// the watchdog resets (a master it takes out) fails a one-shot
	// kubectl as it fails a user's, who runs it again.
	kubectlRead := func(a ...string) (string, error) {
		var o string
		var err error
		_ = pollProc(time.Minute, func() bool {
			o, err = kubectl(a...)
			return err == nil
		})
		return o, err
	}

	// The watchdog: its static pod, written by vipctl join after kubeadm.
	// Its /status is read in process: a ctr or a vipctl status a second
	// costs the emulated master CPU its etcd and apiserver need while they
	// catch up (docs/lab.md, "The master join's CPU").
	sc := &http.Client{Timeout: 5 * time.Second}
	require.NoError(t, lab.PollEvery(6*time.Minute, time.Second, func() bool {
		var st initStatus
		return lab.ReadCareStatus(sc, &st) == nil
	}), "the watchdog never served /status")
	require.True(t, w.watchdogRunning(), "the watchdog answers but its container is not running")
	w.measure("join_to_watchdog_running_s", join)
	manifest, err := os.ReadFile(manifests.DefaultPath)
	require.NoError(t, err)
	assert.Contains(t, string(manifest), "--master="+self, "the watchdog lists this master")

	// What a probe of the local apiserver costs here (the watchdog's
	// --timeout must be above it).
	probeLatency(t, w.scenario(), self)

	// The watchdog's view (its /status, in process) and the kernel's
	// (IPVS, through netlink): this master local, up, in service with the
	// local weight; both host masters up and in service. vipctl status
	// shows the same once it is so, below.
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	defer rd.Close()
	var st initStatus
	var rs map[netip.AddrPort]int
	// The local master's probes while it is not yet in service, one line
	// per probe (/status shows the last): why the watchdog keeps it out,
	// if it does.
	var localProbes []string
	require.NoError(t, lab.PollEvery(5*time.Minute, time.Second, func() bool {
		st = initStatus{}
		if err := lab.ReadCareStatus(sc, &st); err != nil {
			return false
		}
		m := st.master(self)
		if m != nil && m.LastProbe != nil {
			p := fmt.Sprintf("%s ok=%v %s %.1fs", m.LastProbe.Time, m.LastProbe.OK, m.LastProbe.Reason, m.LastProbe.Latency)
			if len(localProbes) == 0 || localProbes[len(localProbes)-1] != p {
				localProbes = append(localProbes, p)
			}
		}
		rs = rd.RealServers()
		if m == nil || !m.Local || m.State != "up" || m.Membership != "in-service" || rs[netip.MustParseAddrPort(self)] != ipvs.LocalWeight {
			return false
		}
		for _, a := range spec.Node.Masters {
			if h := st.master(a); h == nil || h.State != "up" || h.Membership != "in-service" || rs[netip.MustParseAddrPort(a)] <= 0 {
				return false
			}
		}
		return true
	}), "the watchdog never showed %s local, up and in service with weight %d, and %v up and in service; the local master's probes:\n%s\nthe last /status: %+v; IPVS: %v",
		self, ipvs.LocalWeight, spec.Node.Masters, strings.Join(localProbes, "\n"), st, rs)
	t.Logf("the local master's probes until it was in service:\n%s", strings.Join(localProbes, "\n"))
	w.measure("join_to_local_in_service_s", join)
	w.reportCPU("to_in_service", afterJoinCPU)
	inServiceCPU := takeCPUSnap()
	table, err := exec.Command("/usr/local/bin/vipctl", "status").CombinedOutput()
	require.NoError(t, err, string(table))
	t.Logf("vipctl status:\n%s", table)
	assert.Contains(t, string(table), "local apiserver: "+self+"; traffic local: yes")
	var cli initStatus
	js, err := exec.Command("/usr/local/bin/vipctl", "status", "-o", "json").Output()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(js, &cli), "vipctl status -o json:\n%s", js)
	if m := cli.master(self); assert.NotNil(t, m, "vipctl status -o json lists %s:\n%s", self, js) {
		assert.True(t, m.Local && m.State == "up" && m.Membership == "in-service", "vipctl status -o json, %s: %+v", self, *m)
		if assert.NotNil(t, m.Kernel, "vipctl status -o json, %s: the kernel's weight", self) {
			assert.Equal(t, ipvs.LocalWeight, m.Kernel.Weight, "vipctl status -o json, %s's kernel weight", self)
		}
	}
	rs = rd.RealServers()
	assert.Equal(t, ipvs.LocalWeight, rs[netip.MustParseAddrPort(self)], "IPVS: this master's weight (table %v)", rs)
	for _, m := range spec.Node.Masters {
		assert.Positive(t, rs[netip.MustParseAddrPort(m)], "IPVS real server %s (table %v)", m, rs)
		assert.Less(t, rs[netip.MustParseAddrPort(m)], rs[netip.MustParseAddrPort(self)], "this master preferred (table %v)", rs)
	}

	// The node turns Ready, a control-plane node.
	// Read in process (client-go), not by a kubectl a second: each costs
	// the emulated master one to three seconds of CPU.
	name := spec.Node.Name
	cs := kubeClient(t, "/etc/kubernetes/admin.conf", 10*time.Second, "vipctl-e2e-master-join")
	err = lab.PollEvery(8*time.Minute, time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err == nil && nodeReady(n)
	})
	if err != nil {
		o, _ := kubectl("describe", "node", name)
		t.Logf("kubectl describe node %s:\n%s", name, o)
	}
	require.NoError(t, err, "node %s never Ready", name)
	w.measure("join_to_ready_s", join)
	w.reportCPU("to_ready", inServiceCPU)
	o, err := kubectlRead("get", "node", name, "-o", "json")
	require.NoError(t, err, o)
	var node struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal([]byte(o), &node))
	assert.Contains(t, node.Metadata.Labels, "node-role.kubernetes.io/control-plane", "%s's labels", name)
	// Through the VIP: the three masters.
	o, err = kubectlRead("get", "nodes", "-o", "name")
	require.NoError(t, err, o)
	want := []string{"node/" + name}
	for i := range spec.Node.Masters {
		want = append(want, "node/master"+string(rune('1'+i)))
	}
	assert.ElementsMatch(t, want, strings.Fields(o), "kubectl get nodes through the VIP")
	nodes, err := kubectlRead("get", "nodes", "-o", "wide")
	require.NoError(t, err, nodes)
	t.Logf("kubectl get nodes -o wide (through the VIP):\n%s", nodes)
	pods, err := kubectlRead("get", "pods", "-n", "kube-system", "-o", "wide", "--field-selector", "spec.nodeName="+name)
	require.NoError(t, err, pods)
	t.Logf("pods on %s:\n%s", name, pods)
	assert.Contains(t, pods, "vipctl-care-"+name, "the watchdog's mirror pod")

	// etcd: three voting members (the learner this join added, promoted).
	var members []etcdMember
	ec, err := etcdClient()
	require.NoError(t, err)
	require.NoError(t, lab.PollEvery(5*time.Minute, time.Second, func() bool {
		members, err = etcdMembers(ec)
		if err != nil || len(members) != 1+len(spec.Node.Masters) {
			return false
		}
		for _, m := range members {
			if m.IsLearner {
				return false
			}
		}
		return true
	}), "etcd never had %d voting members: %v (%v)", 1+len(spec.Node.Masters), members, err)
	w.measure("join_to_etcd_voting_s", join)
	t.Logf("etcd members (v3 cluster/member/list on the local etcd): %v", members)
	assert.Contains(t, members, etcdMember{Name: name, PeerURLs: []string{"https://" + nodeIP + ":2380"}}, "this master's etcd member")

	// /etc/hosts: written exactly once in the whole run, by vipctl join.
	assert.Equal(t, afterJoin, lab.HostsIdentity(etcHosts), "the hosts file did not change after join")
	assert.Equal(t, 1, hw.stop(), "writes of /etc/hosts from before vipctl join to the end of the checks")
	w.measure("scenario_s", start)
	if spec.Node.FaultMaster == "" || t.Failed() {
		return
	}

	// One fault: the host kills master2's kube-apiserver; this master's
	// watchdog takes it out, the clients through the VIP keep working,
	// and it comes back after its restart (worker_faults_test.go).
	admin, err := os.ReadFile("/etc/kubernetes/admin.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("/tmp/admin.conf", admin, 0o600))
	nw := w.watchNode()
	defer nw.stop()
	clients := lab.Clients(t, "/usr/local/bin/kubectl", "/tmp/admin.conf")
	t.Run("kill_apiserver", func(st *testing.T) {
		w.t = st
		defer func() { w.t = t }()
		f := w.faultKillAPIServer(clients, nw, kubectl)
		st.Logf("the fault: %v", f.figs)
	})
}

// serverLines are the server: lines of a kubeconfig.
func serverLines(kc []byte) string {
	var out []string
	for _, l := range strings.Split(string(kc), "\n") {
		if strings.Contains(l, "server:") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}

// readyzWatch polls an apiserver's /readyz and keeps the first time it
// answered 200.
type readyzWatch struct {
	mu   sync.Mutex
	at   time.Time
	done chan struct{}
	once sync.Once
}

// watchReadyz polls https://addr/readyz every second, as an anonymous
// client (kube-apiserver lets anyone read it), verifying the server with
// the cluster's CA once kubeadm has written it (before, nothing is
// served). It keeps its connection: a new TLS handshake a poll would cost
// the emulated master's starting apiserver CPU it needs.
func watchReadyz(addr string) *readyzWatch {
	r := &readyzWatch{done: make(chan struct{})}
	go func() {
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		var c *http.Client
		for {
			select {
			case <-r.done:
				return
			case <-tk.C:
			}
			if c == nil {
				ca, err := os.ReadFile("/etc/kubernetes/pki/ca.crt")
				pool := x509.NewCertPool()
				if err != nil || !pool.AppendCertsFromPEM(ca) {
					continue
				}
				c = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
					TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: strings.Split(addr, ":")[0]}}}
			}
			resp, err := c.Get("https://" + addr + "/readyz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.mu.Lock()
				r.at = time.Now()
				r.mu.Unlock()
				return
			}
		}
	}()
	return r
}

func (r *readyzWatch) first() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

func (r *readyzWatch) stop() { r.once.Do(func() { close(r.done) }) }

// etcdMember is a member in etcd's v3 cluster/member/list answer.
type etcdMember struct {
	Name      string   `json:"name"`
	PeerURLs  []string `json:"peerURLs"`
	IsLearner bool     `json:"isLearner,omitempty"`
}

// etcdClient is an HTTPS client for the node's own etcd with the
// apiserver's etcd client certificate; it keeps its connection, so that a
// poll does not cost the emulated etcd a handshake.
func etcdClient() (*http.Client, error) {
	ca, err := os.ReadFile("/etc/kubernetes/pki/etcd/ca.crt")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair("/etc/kubernetes/pki/apiserver-etcd-client.crt", "/etc/kubernetes/pki/apiserver-etcd-client.key")
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

// etcdMembers asks the node's own etcd (kubeadm's stacked member,
// 127.0.0.1:2379) for the cluster's members through etcd's JSON gateway,
// with c (etcdClient): no etcdctl is needed.
func etcdMembers(c *http.Client) ([]etcdMember, error) {
	resp, err := c.Post("https://127.0.0.1:2379/v3/cluster/member/list", "application/json", bytes.NewReader([]byte("{}")))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var l struct {
		Members []etcdMember `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, err
	}
	return l.Members, nil
}

// kubeClient is a client-go clientset with the kubeconfig at path
// (admin.conf: through the name and the VIP, as kubectl), each request
// bounded by timeout.
func kubeClient(t *testing.T, path string, timeout time.Duration, userAgent string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	require.NoError(t, err)
	cfg.Timeout = timeout
	cfg.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return cs
}
