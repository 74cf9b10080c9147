package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// ShareDir is where the VM mounts the host's share.
const ShareDir = "/mnt/share"

// Real is the node side of the real control plane: the VM is the node (the
// root network namespace, eth0 on the lab bridge), and three real
// kube-apiservers sharing one etcd run on the host (e2e/realcp), each with
// its own address. Faults are injected through the host's control endpoint.
type Real struct {
	t       testing.TB
	Spec    RealSpec
	Masters []*RealMaster
	// Standby masters are not running unless a scenario starts them.
	Standby []*RealMaster
	// NodeKubeconfig is the kubelet-shaped kubeconfig (RealSpec.NodeKubeconfig).
	NodeKubeconfig string
	Vipctl         string
	CAFile         string // the lab CA, for the watchdog
	Kubeconfig     string // admin client certificate, server https://apiserver.cluster.local:6443
	Kubectl        string
	// KubectlPause is how long the traffic's kubectl loop waits after
	// each run; zero runs them back to back.
	KubectlPause time.Duration
	// IPVSSampleEvery is the period of the traffic's IPVS sampler; zero
	// is 10 ms.
	IPVSSampleEvery time.Duration
	ctl             *http.Client
}

// RealMaster is one real kube-apiserver, seen from the node.
type RealMaster struct {
	r    *Real
	Name string
	IP   netip.Addr
	Addr netip.AddrPort
}

// NeedReal skips the test unless it runs inside the VM that TestRealControlPlane booted.
func NeedReal(t testing.TB) {
	t.Helper()
	Need(t)
	if os.Getenv("VIPCTL_E2E_REAL") != "1" {
		t.Skip("needs the real control plane on the host (VIPCTL_E2E_REAL=1): run by the e2e package's TestRealControlPlane, not TestVM")
	}
}

// NewReal connects the node to the real control plane: eth0 gets the node
// address, /etc/hosts maps apiserver.cluster.local to the VIP (with
// `vipctl hosts set`), a kubeconfig is written, every master is made
// healthy. When the test ends, the masters are healed again and vipctl's
// kernel state is removed, so scenarios do not leak into each other.
func NewReal(t testing.TB) *Real {
	t.Helper()
	NeedReal(t)
	spec, err := ReadRealSpec(ShareDir)
	must(t, err, "real lab spec")
	vipctl := os.Getenv("VIPCTL_BIN")
	if vipctl == "" {
		t.Fatal("VIPCTL_BIN is not set")
	}
	r := &Real{t: t, Spec: spec, Vipctl: vipctl, CAFile: filepath.Join(ShareDir, spec.CAFile),
		ctl: &http.Client{Timeout: 5 * time.Minute}}
	for _, sm := range spec.Masters {
		ap, err := netip.ParseAddrPort(sm.Addr)
		must(t, err, "master address "+sm.Addr)
		r.Masters = append(r.Masters, &RealMaster{r: r, Name: sm.Name, IP: ap.Addr(), Addr: ap})
	}
	for _, sm := range spec.Standby {
		ap, err := netip.ParseAddrPort(sm.Addr)
		must(t, err, "standby master address "+sm.Addr)
		r.Standby = append(r.Standby, &RealMaster{r: r, Name: sm.Name, IP: ap.Addr(), Addr: ap})
	}
	if spec.NodeKubeconfig != "" {
		r.NodeKubeconfig = filepath.Join(ShareDir, spec.NodeKubeconfig)
	}
	must(t, r.setupNode(), "node network")
	must(t, Poll(20*time.Second, func() bool {
		resp, err := (&http.Client{Timeout: time.Second}).Get(spec.ControlURL + "/v1/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}), "reach the host's control endpoint "+spec.ControlURL)
	if _, err := r.run(vipctl, "hosts", "set", spec.Hostname, VIP.String()); err != nil {
		t.Fatal(err)
	}
	r.Kubectl = "/tmp/bin/kubectl"
	if _, err := os.Stat(r.Kubectl); err != nil {
		must(t, copyFile(filepath.Join(ShareDir, spec.Kubectl), r.Kubectl, 0o755), "copy kubectl")
	}
	r.Kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(r.Kubeconfig, []byte(r.kubeconfig()), 0o600), "kubeconfig")
	r.Heal()
	t.Cleanup(func() {
		exec.Command(vipctl, "ipvs", "delete", "--vip", VIPPort.String()).Run()
		r.Heal()
	})
	return r
}

// setupNode gives eth0 the node address (once per boot).
func (r *Real) setupNode() error {
	pfx, err := netip.ParsePrefix(r.Spec.NodeCIDR)
	if err != nil {
		return fmt.Errorf("nodeCIDR %q: %w", r.Spec.NodeCIDR, err)
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0 (the VM's NIC on the lab bridge): %w", err)
	}
	addrs, err := netlink.AddrList(eth, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		if addr(a.IP) == pfx.Addr() {
			have = true
		}
	}
	if !have {
		if err := netlink.AddrAdd(eth, &netlink.Addr{IPNet: prefix(pfx.Addr(), pfx.Bits())}); err != nil {
			return fmt.Errorf("address %s on eth0: %w", pfx, err)
		}
	}
	return netlink.LinkSetUp(eth)
}

func (r *Real) kubeconfig() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://%s:%d
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: admin
current-context: lab
`, r.Spec.Hostname, VIPPort.Port(), r.CAFile, filepath.Join(ShareDir, r.Spec.ClientCert), filepath.Join(ShareDir, r.Spec.ClientKey))
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 4<<20)); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// run runs a command and returns its stdout; an error carries stderr.
func (r *Real) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// CareArgs are the watchdog's arguments for the real masters: the lab CA,
// anonymous /readyz probes (the default), JSON logs, plus extra.
func (r *Real) CareArgs(extra ...string) []string {
	addrs := make([]netip.AddrPort, len(r.Masters))
	for i, m := range r.Masters {
		addrs[i] = m.Addr
	}
	return careArgs(VIPPort, r.CAFile, addrs, extra)
}

// StartCare starts `vipctl care` for the real masters and waits until it
// is ready; it is stopped when the test ends.
func (r *Real) StartCare(extra ...string) *Care {
	r.t.Helper()
	return startCare(r.t, careBin(r.Vipctl), r.CareArgs(extra...))
}

// WaitAllServing waits until every master is a real server with weight > 0.
func (r *Real) WaitAllServing(timeout time.Duration) time.Duration {
	r.t.Helper()
	return WaitFor(r.t, timeout, "every master in service", func(rs map[netip.AddrPort]int) bool {
		for _, m := range r.Masters {
			if rs[m.Addr] <= 0 {
				return false
			}
		}
		return true
	})
}

// WaitOut waits until the kernel sends no new connection to m.
func (m *RealMaster) WaitOut(timeout time.Duration) time.Duration {
	m.r.t.Helper()
	return WaitFor(m.r.t, timeout, m.Name+" out of service", func(rs map[netip.AddrPort]int) bool { return rs != nil && rs[m.Addr] <= 0 })
}

// WaitIn waits until m is a real server with weight > 0.
func (m *RealMaster) WaitIn(timeout time.Duration) time.Duration {
	m.r.t.Helper()
	return WaitFor(m.r.t, timeout, m.Name+" in service", func(rs map[netip.AddrPort]int) bool { return rs[m.Addr] > 0 })
}

// Heal makes every master healthy again (link up, etcd up, running,
// /readyz 200), through the host.
func (r *Real) Heal() {
	r.t.Helper()
	must(r.t, r.post("/v1/heal"), "heal the masters")
}

func (r *Real) post(path string, q ...string) error {
	u := r.Spec.ControlURL + path
	if len(q) > 0 {
		v := url.Values{}
		for i := 0; i+1 < len(q); i += 2 {
			v.Set(q[i], q[i+1])
		}
		u += "?" + v.Encode()
	}
	resp, err := r.ctl.Post(u, "", nil)
	if err != nil {
		return fmt.Errorf("control %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func (m *RealMaster) act(action string, q ...string) {
	m.r.t.Helper()
	must(m.r.t, m.r.post("/v1/masters/"+m.Name+"/"+action, q...), m.Name+" "+action)
}

// Kill SIGKILLs the master's apiserver; it returns once the process is gone.
func (m *RealMaster) Kill() { m.act("kill") }

// Start starts the master's apiserver (not waiting for it to be ready).
func (m *RealMaster) Start() { m.act("start") }

// StartAnonymousAuthOff starts it with --anonymous-auth=false (the next
// heal restarts it as the lab's other masters).
func (m *RealMaster) StartAnonymousAuthOff() { m.act("start", "anonymous", "false") }

// NodeCert has the host issue a fresh client certificate for the node of
// NodeKubeconfig (system:node:node1): the kubelet's rotation. PEM.
func (r *Real) NodeCert() (cert, key []byte) {
	r.t.Helper()
	resp, err := r.ctl.Post(r.Spec.ControlURL+"/v1/node-cert", "", nil)
	must(r.t, err, "control /v1/node-cert")
	defer resp.Body.Close()
	var nc struct{ Cert, Key string }
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("control /v1/node-cert: %s", resp.Status)
	}
	must(r.t, json.NewDecoder(resp.Body).Decode(&nc), "control /v1/node-cert")
	return []byte(nc.Cert), []byte(nc.Key)
}

// StartWithShutdownDelay starts it with --shutdown-delay-duration=d.
func (m *RealMaster) StartWithShutdownDelay(d time.Duration) {
	m.act("start", "shutdownDelay", d.String())
}

// Terminate sends SIGTERM to the apiserver and returns at once.
func (m *RealMaster) Terminate() { m.act("terminate") }

// WaitExit waits until the apiserver process has ended.
func (m *RealMaster) WaitExit(timeout time.Duration) { m.act("wait-exit", "timeout", timeout.String()) }

// WaitReady waits until the apiserver's /readyz answers 200 (checked on the host).
func (m *RealMaster) WaitReady(timeout time.Duration) {
	m.act("wait-ready", "timeout", timeout.String())
}

// EtcdDown takes this master's etcd away (the others keep it): its
// /readyz answers 500.
func (m *RealMaster) EtcdDown() { m.act("etcd-down") }

// EtcdUp gives it back.
func (m *RealMaster) EtcdUp() { m.act("etcd-up") }

// LinkDown cuts the master's link: packets are dropped, no RST, no ICMP.
func (m *RealMaster) LinkDown() { m.act("link-down") }

// LinkUp reconnects it.
func (m *RealMaster) LinkUp() { m.act("link-up") }

// CareStatus is the watchdog's /status document.
func CareStatus() (map[string]any, error) {
	var v map[string]any
	return v, ReadCareStatus(nil, &v)
}

// ReadCareStatus decodes the watchdog's /status document (at MetricsAddr)
// into v, with c (http.DefaultClient when nil).
func ReadCareStatus(c *http.Client, v any) error {
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get("http://" + MetricsAddr + "/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("watchdog /status: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("watchdog /status: %w", err)
	}
	return nil
}

// dialer for the clients: a bound connect time, no keep-alive probes.
func dialer(timeout time.Duration) *net.Dialer { return &net.Dialer{Timeout: timeout} }
