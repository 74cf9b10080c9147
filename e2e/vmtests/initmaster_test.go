package vmtests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vipctl/vipctl/e2e/cluster"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/manifests"
)

// TestClusterInit is the VM's part of e2e/cluster TestClusterInit
// (docs/lab.md, "The first master by vipctl init"): the VM becomes the
// first master of a new cluster as a user makes one: Debian's containerd
// and runc, the offline bundle's install.sh, a real kubelet, and `vipctl
// init` driving the real `kubeadm init`, on the machine the host installed
// and its systemd runs (e2e/cluster writeMachine). It runs only in the VM the host test boots
// (VIPCTL_E2E_CLUSTER_INIT=1); TestVM skips it.
func TestClusterInit(t *testing.T) {
	needClusterLab(t, "VIPCTL_E2E_CLUSTER_INIT", "TestClusterInit")
	start := time.Now()
	dir := filepath.Join(lab.ShareDir, cluster.InitDir)
	spec, err := cluster.ReadInitSpec(dir)
	require.NoError(t, err)
	self := spec.Node.Masters[0]
	nodeIP := strings.Split(spec.Node.NodeIP, "/")[0]
	// The machine as the worker's; no master to reach before init.
	machine := spec.Node
	machine.Masters = nil
	w := &worker{t: t, spec: machine, dir: dir, name: "cluster_init"}
	w.setUp("containerd_images_s")
	measure := w.measure
	// The harness's part of the kubeadm configuration (the node's name,
	// the CRI socket, no pulls, the longer control-plane wait, cgroupfs),
	// where a user keeps theirs.
	w.copyPrivate(spec.KubeadmConfig, "/root/kubeadm.yaml")

	// Every write of /etc/hosts from here to the end is counted.
	hw := watchHosts(t)
	defer hw.stop()
	before := lab.HostsIdentity(etcHosts)

	args := []string{"init", "--vip", spec.VIP, "--master", self, "--node-ip", nodeIP,
		"--service-subnet", spec.Node.ServiceSubnet, "--config", "/root/kubeadm.yaml"}
	for _, f := range spec.CareFlags {
		args = append(args, "--care-flag="+f)
	}
	if len(spec.SkipPhases) > 0 {
		args = append(args, "--", "--skip-phases="+strings.Join(spec.SkipPhases, ","))
	}
	t.Logf("vipctl %s", strings.Join(args, " "))
	initStart := time.Now()
	b, err := exec.Command("/usr/local/bin/vipctl", args...).CombinedOutput()
	t.Logf("vipctl init (%s):\n%s", time.Since(initStart).Round(time.Millisecond), b)
	require.NoError(t, err, "vipctl init")
	measure("vipctl_init_s", initStart)
	w.kubeletUnit()
	initOut := string(b)
	assert.Contains(t, initOut, "vipctl join --control-plane", "init prints the other masters' join line")
	for _, f := range []string{"/etc/kubernetes/vipctl-join/token", "/etc/kubernetes/vipctl-join/certificate-key"} {
		st, err := os.Stat(f)
		if assert.NoError(t, err, "init wrote the join secret %s", f) {
			assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
			sec, _ := os.ReadFile(f)
			assert.NotContains(t, initOut, strings.TrimSpace(string(sec)), "no secret in init's output")
		}
	}

	// The name maps to the VIP, written by init (once: checked at the end).
	assert.NotEqual(t, before, lab.HostsIdentity(etcHosts), "init wrote the hosts file")
	assert.Equal(t, []netip.Addr{netip.MustParseAddrPort(spec.VIP).Addr()}, hostsMapping(t))
	afterInit := lab.HostsIdentity(etcHosts)

	// kubectl with kubeadm's admin.conf, whose server is
	// apiserver.cluster.local:6443: through the VIP.
	kubectl := func(a ...string) (string, error) {
		c := exec.Command("/usr/local/bin/kubectl", append([]string{"--kubeconfig", "/etc/kubernetes/admin.conf", "--request-timeout", "20s"}, a...)...)
		o, err := c.CombinedOutput()
		return string(o), err
	}
	conf, err := os.ReadFile("/etc/kubernetes/admin.conf")
	require.NoError(t, err)
	require.Contains(t, string(conf), "server: https://apiserver.cluster.local:6443")

	// The watchdog: its static pod, written by vipctl init after kubeadm.
	last := time.Now()
	require.NoError(t, pollProc(6*time.Minute, func() bool {
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			o, _ := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "containers", "ls").CombinedOutput()
			t.Logf("waiting for the watchdog (%s after init started); ctr containers ls:\n%s", time.Since(initStart).Round(time.Second), o)
		}
		return w.watchdogRunning()
	}), "the watchdog's container never ran")
	measure("init_to_watchdog_running_s", initStart)
	manifest, err := os.ReadFile(manifests.DefaultPath)
	require.NoError(t, err)
	assert.Contains(t, string(manifest), "--master="+self)
	// The kubelet's kubeconfig (the watchdog's default --kubeconfig) is
	// mounted: the probes and the discovery use the node's credentials.
	assert.Contains(t, string(manifest), "mountPath: /etc/kubernetes/kubelet.conf", "the kubelet's kubeconfig in the watchdog's pod")
	assert.NotContains(t, string(manifest), "--kubeconfig=", "the default kubeconfig, the kubelet's")

	// What a probe of the local apiserver costs here: /readyz on a new
	// TLS connection with the kubelet's client certificate, as the
	// watchdog's probe does.
	probeLatency(t, "cluster_init", self)
	kc, _ := os.ReadFile("/etc/kubernetes/kubelet.conf")
	for _, l := range strings.Split(string(kc), "\n") {
		if strings.Contains(l, "server:") {
			t.Logf("the kubelet's kubeconfig: %s", strings.TrimSpace(l))
		}
	}

	// vipctl status: this master up, local, in service, traffic local;
	// found in the API (the kubernetes EndpointSlice) too; probes
	// authorised.
	var st initStatus
	var raw string
	require.NoError(t, pollProc(5*time.Minute, func() bool {
		o, err := exec.Command("/usr/local/bin/vipctl", "status", "-o", "json").Output()
		raw = string(o)
		if err != nil || json.Unmarshal(o, &st) != nil {
			return false
		}
		m := st.master(self)
		return m != nil && m.Local && m.State == "up" && m.Membership == "in-service" && m.Weight > 0 &&
			m.Kernel != nil && m.Kernel.Weight > 0 && m.LastSeenInAPI != "" && m.LastProbe != nil && m.LastProbe.OK
	}), "vipctl status never showed %s local, up, in service and listed by the API:\n%s", self, raw)
	measure("init_to_status_local_s", initStart)
	table, err := exec.Command("/usr/local/bin/vipctl", "status").CombinedOutput()
	require.NoError(t, err, string(table))
	t.Logf("vipctl status:\n%s", table)
	assert.Contains(t, string(table), "local apiserver: "+self+"; traffic local: yes")
	require.NotNil(t, st.Watchdog)
	assert.False(t, st.Watchdog.ProbesUnauthorized, "the apiserver accepts the probes' credentials")
	m := st.master(self)
	assert.Equal(t, 200, m.LastProbe.HTTPStatus, "the last probe of %s", self)
	assert.Equal(t, "seed", m.Source, "%s is the watchdog's --master", self)

	// IPVS: the VIP's one real server is this master's own apiserver.
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	rs := rd.RealServers()
	rd.Close()
	assert.Positive(t, rs[netip.MustParseAddrPort(self)], "IPVS real server %s (table %v)", self, rs)
	assert.Len(t, rs, 1, "the VIP's real servers: this master alone (%v)", rs)

	// The node turns Ready (the bridge CNI config is there).
	err = pollProc(8*time.Minute, func() bool {
		o, err := kubectl("get", "node", spec.Node.Name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		return err == nil && strings.TrimSpace(o) == "True"
	})
	if err != nil {
		o, _ := kubectl("describe", "node", spec.Node.Name)
		t.Logf("kubectl describe node %s:\n%s", spec.Node.Name, o)
	}
	require.NoError(t, err, "node %s never Ready", spec.Node.Name)
	measure("init_to_ready_s", initStart)
	nodes, err := kubectl("get", "nodes", "-o", "wide")
	require.NoError(t, err, nodes)
	t.Logf("kubectl get nodes -o wide (through the VIP):\n%s", nodes)
	require.Contains(t, nodes, spec.Node.Name+" ")
	pods, err := kubectl("get", "pods", "-n", "kube-system", "-o", "wide")
	require.NoError(t, err, pods)
	t.Logf("kubectl get pods -n kube-system:\n%s", pods)
	assert.Contains(t, pods, "vipctl-care-"+spec.Node.Name, "the watchdog's mirror pod")

	// The RBAC vipctl init applied: the nodes may read the kubernetes
	// EndpointSlice, and only that one.
	rb, err := kubectl("get", "role,rolebinding", "-n", manifests.RBACNamespace, manifests.RBACName)
	require.NoError(t, err, rb)
	t.Logf("kubectl get role,rolebinding -n %s %s:\n%s", manifests.RBACNamespace, manifests.RBACName, rb)
	as := []string{"--as", "system:node:" + spec.Node.Name, "--as-group", "system:nodes", "-n", manifests.RBACNamespace}
	yes, err := kubectl(append([]string{"auth", "can-i", "get", "endpointslices.discovery.k8s.io/kubernetes"}, as...)...)
	assert.NoError(t, err, yes)
	assert.Equal(t, "yes", strings.TrimSpace(yes), "a node may read the kubernetes EndpointSlice")
	no, _ := kubectl(append([]string{"auth", "can-i", "get", "endpointslices.discovery.k8s.io/other"}, as...)...)
	assert.Equal(t, "no", strings.TrimSpace(no), "but no other")

	// /etc/hosts: written exactly once in the whole run, by vipctl init.
	assert.Equal(t, afterInit, lab.HostsIdentity(etcHosts), "the hosts file did not change after init")
	assert.Equal(t, 1, hw.stop(), "writes of /etc/hosts from before vipctl init to the end of the checks")
	measure("scenario_s", start)
	if spec.JoinMaster == "" {
		return
	}

	// A host master joins with the real kubeadm join --control-plane (the
	// host test starts it once this node has cluster.InitCheckedLabel): it turns Ready, and
	// this master's watchdog discovers it from the kubernetes
	// EndpointSlice and adds it to the VIP, this master still preferred.
	lb, err := kubectl("label", "node", spec.Node.Name, cluster.InitCheckedLabel+"=true")
	require.NoError(t, err, lb)
	jt := time.Now()
	err = pollProc(15*time.Minute, func() bool {
		o, err := kubectl("get", "node", spec.JoinName, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		return err == nil && strings.TrimSpace(o) == "True"
	})
	if err != nil {
		o, _ := kubectl("get", "nodes", "-o", "wide")
		t.Logf("kubectl get nodes:\n%s", o)
	}
	require.NoError(t, err, "%s never Ready", spec.JoinName)
	measure("then_second_master_ready_s", jt)
	require.NoError(t, pollProc(5*time.Minute, func() bool {
		o, err := exec.Command("/usr/local/bin/vipctl", "status", "-o", "json").Output()
		raw = string(o)
		st = initStatus{}
		if err != nil || json.Unmarshal(o, &st) != nil {
			return false
		}
		m := st.master(spec.JoinMaster)
		return m != nil && m.Source == "api" && m.State == "up" && m.Membership == "in-service" && m.Kernel != nil && m.Kernel.Weight > 0
	}), "the watchdog never added %s from the API:\n%s", spec.JoinMaster, raw)
	measure("then_second_master_in_ipvs_s", jt)
	table, err = exec.Command("/usr/local/bin/vipctl", "status").CombinedOutput()
	require.NoError(t, err, string(table))
	t.Logf("vipctl status with the second master:\n%s", table)
	assert.Contains(t, string(table), spec.JoinMaster+": discovered from the API")
	assert.Contains(t, string(table), "local apiserver: "+self+"; traffic local: yes")
	rd, err = lab.NewIPVSReader()
	require.NoError(t, err)
	rs = rd.RealServers()
	rd.Close()
	assert.Greater(t, rs[netip.MustParseAddrPort(self)], rs[netip.MustParseAddrPort(spec.JoinMaster)], "this master preferred: %v", rs)
	nodes, err = kubectl("get", "nodes", "-o", "wide")
	require.NoError(t, err, nodes)
	t.Logf("kubectl get nodes -o wide (through the VIP):\n%s", nodes)
	measure("scenario_with_join_s", start)
}

// probeLatency times ten GETs of /readyz on self, each on a new TLS
// connection with the kubelet's client certificate, and prints the median
// and the longest as MEASURE lines <scenario>_readyz_fresh_tls_*.
func probeLatency(t *testing.T, scenario, self string) {
	t.Helper()
	ca, err := os.ReadFile("/etc/kubernetes/pki/ca.crt")
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	pair, err := os.ReadFile("/var/lib/kubelet/pki/kubelet-client-current.pem")
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(pair, pair)
	require.NoError(t, err)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: strings.Split(self, ":")[0]}}}
	var ds []time.Duration
	for range 10 {
		t0 := time.Now()
		resp, err := c.Get("https://" + self + "/readyz")
		if err != nil {
			t.Logf("GET /readyz: %v", err)
			continue
		}
		resp.Body.Close()
		ds = append(ds, time.Since(t0))
		if resp.StatusCode != http.StatusOK {
			t.Logf("GET /readyz: HTTP %d; the checks that fail: %s", resp.StatusCode, failingChecks(c, self))
		}
	}
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	fmt.Printf("MEASURE %[1]s_readyz_fresh_tls_p50_ms=%[2]d\nMEASURE %[1]s_readyz_fresh_tls_max_ms=%[3]d\n", scenario, ds[len(ds)/2].Milliseconds(), ds[len(ds)-1].Milliseconds())
	t.Logf("/readyz of %s on a new TLS connection, %d times: median %s, longest %s", self, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// failingChecks are the checks an apiserver's /readyz?verbose reports as
// failed (the lines that start with "[-]"), for the log of a slow master.
func failingChecks(c *http.Client, addr string) string {
	resp, err := c.Get("https://" + addr + "/readyz?verbose")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var failed []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[-]") {
			failed = append(failed, l)
		}
	}
	return strings.Join(failed, "; ")
}

// initStatus is the part of `vipctl status -o json` the scenario reads.
type initStatus struct {
	Watchdog *struct {
		ProbesUnauthorized bool `json:"probesUnauthorized"`
	} `json:"watchdog"`
	Masters []initStatusMaster `json:"masters"`
}

type initStatusMaster struct {
	Address       string `json:"address"`
	State         string `json:"state"`
	Membership    string `json:"membership"`
	Weight        int    `json:"weight"`
	Source        string `json:"source"`
	LastSeenInAPI string `json:"lastSeenInAPI"`
	Local         bool   `json:"local"`
	LastProbe     *struct {
		Time       string  `json:"time"`
		OK         bool    `json:"ok"`
		HTTPStatus int     `json:"httpStatus"`
		Reason     string  `json:"reason"`
		Latency    float64 `json:"latencySeconds"`
	} `json:"lastProbe"`
	Kernel *struct {
		Weight int `json:"weight"`
	} `json:"kernel"`
}

func (s initStatus) master(addr string) *initStatusMaster {
	for i := range s.Masters {
		if s.Masters[i].Address == addr {
			return &s.Masters[i]
		}
	}
	return nil
}

// hostsWatch counts the writes of /etc/hosts (a file written in place, or
// one renamed over it) with inotify on /etc.
type hostsWatch struct {
	fd       int
	mu       sync.Mutex
	writes   int
	stopping bool
	done     chan struct{}
	once     sync.Once
}

func watchHosts(t *testing.T) *hostsWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	require.NoError(t, err, "inotify")
	_, err = unix.InotifyAddWatch(fd, filepath.Dir(etcHosts), unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO)
	require.NoError(t, err, "inotify watch %s", filepath.Dir(etcHosts))
	h := &hostsWatch{fd: fd, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		buf := make([]byte, 64*1024)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				if string(bytes.TrimRight(name, "\x00")) == filepath.Base(etcHosts) {
					h.mu.Lock()
					h.writes++
					h.mu.Unlock()
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
			h.mu.Lock()
			stopping := h.stopping
			h.mu.Unlock()
			if stopping {
				return
			}
		}
	}()
	return h
}

// stop ends the watch (once) and returns the writes counted.
func (h *hostsWatch) stop() int {
	h.once.Do(func() {
		// A last event, on a file of our own, wakes the blocked read,
		// which then sees stopping.
		h.mu.Lock()
		h.stopping = true
		h.mu.Unlock()
		p := filepath.Join(filepath.Dir(etcHosts), ".vipctl-hosts-watch-end")
		if f, err := os.Create(p); err == nil {
			f.Close()
			os.Remove(p)
		}
		<-h.done
		unix.Close(h.fd)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.writes
}
