// Package realcp runs a real Kubernetes control plane on the host for the
// VM lab: one etcd and n kube-apiservers, each apiserver in its own network
// namespace with its own address, all joined by a bridge inside one isolated
// lab namespace. The VM (the node, with real IPVS) joins that bridge through
// a tap device that exists only in the lab namespace, so nothing in the lab
// can reach an address outside it and the VM still has no way out.
//
//	lab netns "vipctl-lab":   br0 10.10.0.2/24 (control endpoint :7070)
//	                          tap0 (the VM's eth0, 10.10.0.1) on br0
//	                          etcd on the lab namespace's 127.0.0.1:2379
//	                          m1..mN: veths to the masters, on br0
//	netns "vipctl-lab-masterI": eth0 10.10.0.(10+I)/24, kube-apiserver :6443,
//	                          and on its 127.0.0.1:2379 a proxy to the etcd,
//	                          which the apiserver uses like kubeadm's stacked
//	                          etcd and which a scenario can take away
//
// The VM drives the faults (kill, SIGTERM, restart, etcd lost, cut link)
// through the control endpoint, over the lab bridge: see ServeControl.
// Everything needs root, iproute2, /dev/net/tun, the binaries of Binaries.
package realcp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/vipctl/vipctl/e2e/vm"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vipctl/vipctl/e2e/lab"
)

// Names and addresses of the lab network.
const (
	LabNS        = "vipctl-lab"
	MasterPrefix = "vipctl-lab-" // + master name
	Tap          = "tap0"
	bridge       = "br0"
	labCIDR      = "10.10.0.2/24"
	nodeCIDR     = "10.10.0.1/24"
	controlAddr  = "10.10.0.2:7070"
	etcdURL      = "http://127.0.0.1:2379"
	// Hostname is the name the node's clients use, mapped to the VIP.
	Hostname = "apiserver.cluster.local"
)

// Options configure Start.
type Options struct {
	// Dir is the working folder: PKI, etcd data, logs. Required.
	Dir      string
	Binaries Binaries
	// Masters is the number of kube-apiservers; default 3.
	Masters int
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// AnonymousAuthOff runs the apiservers with --anonymous-auth=false (a
	// CIS-hardened cluster): /readyz then answers 401 without a client
	// certificate; WaitReady uses the admin certificate.
	AnonymousAuthOff bool
	// Standby adds masters that are set up (namespace, address,
	// certificate, etcd proxy) but not started: a scenario starts them
	// (Master.Start) to add a master to a running cluster.
	Standby int
}

// ControlPlane is a running lab control plane.
type ControlPlane struct {
	Dir     string
	Bin     Binaries
	Masters []*Master
	// Files of the lab PKI, in Dir/pki.
	CAFile, AdminCert, AdminKey string
	saKey, saPub                string
	caPool                      *x509.CertPool
	ca                          *lab.CA
	anonOff                     bool
	logf                        func(string, ...any)
	etcd                        *process
	ctl                         *http.Server
	ctlDone                     chan struct{}
	closeOnce                   sync.Once
	lock                        *os.File
}

// Start builds the lab network, the PKI, etcd and the apiservers, waits
// until every apiserver's /readyz answers 200 and serves the control
// endpoint. Anything it leaves from an earlier run that did not finish (the
// namespaces and the processes in them) is removed first. Close undoes it.
func Start(ctx context.Context, o Options) (*ControlPlane, error) {
	if o.Dir == "" {
		return nil, errors.New("realcp: Options.Dir is empty")
	}
	if o.Masters == 0 {
		o.Masters = 3
	}
	if o.Masters < 1 || o.Masters+o.Standby > 9 || o.Standby < 0 {
		return nil, fmt.Errorf("realcp: Options.Masters %d, Standby %d: want 1 to 9 in all", o.Masters, o.Standby)
	}
	if err := o.Binaries.check(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("realcp: iproute2's ip is needed: %w", err)
	}
	cp := &ControlPlane{Dir: o.Dir, Bin: o.Binaries, logf: o.Logf, anonOff: o.AnonymousAuthOff}
	if cp.logf == nil {
		cp.logf = func(string, ...any) {}
	}
	for i := 1; i <= o.Masters+o.Standby; i++ {
		ip := netip.AddrFrom4([4]byte{10, 10, 0, byte(10 + i)})
		cp.Masters = append(cp.Masters, &Master{
			cp:       cp,
			Name:     fmt.Sprintf("master%d", i),
			IP:       ip,
			Addr:     netip.AddrPortFrom(ip, 6443),
			hostVeth: fmt.Sprintf("m%d", i),
			Standby:  i > o.Masters,
		})
	}
	lock, err := acquireLock(ctx)
	if err != nil {
		return nil, err
	}
	cp.lock = lock
	removeLeftovers()
	ok := false
	defer func() {
		if !ok {
			cp.Close()
		}
	}()
	t0 := time.Now()
	if err := cp.setupNetwork(); err != nil {
		return nil, err
	}
	if err := cp.writePKI(); err != nil {
		return nil, err
	}
	if err := cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	cp.logf("realcp: network, PKI and etcd ready in %s", time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	for _, m := range cp.Masters {
		m.proxy = &etcdProxy{ns: MasterPrefix + m.Name}
		if err := m.proxy.start(); err != nil {
			return nil, fmt.Errorf("%s: etcd proxy: %w", m.Name, err)
		}
		if m.Standby {
			continue
		}
		if err := m.Start(StartOptions{}); err != nil {
			return nil, err
		}
	}
	for _, m := range cp.Masters {
		if m.Standby {
			continue
		}
		if err := m.WaitReady(ctx, 3*time.Minute); err != nil {
			return nil, err
		}
	}
	cp.logf("realcp: %d kube-apiservers ready (/readyz 200) in %s (%d more on standby)", o.Masters, time.Since(t1).Round(time.Millisecond), o.Standby)
	if err := cp.serveControl(); err != nil {
		return nil, err
	}
	ok = true
	return cp, nil
}

// Master returns the master called name, or nil.
func (cp *ControlPlane) Master(name string) *Master {
	for _, m := range cp.Masters {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Spec describes the lab to the VM, with file names relative to the share
// (as WriteShare lays them out).
func (cp *ControlPlane) Spec() lab.RealSpec {
	s := lab.RealSpec{
		NodeCIDR:   nodeCIDR,
		VIP:        lab.VIPPort.String(),
		Hostname:   Hostname,
		ControlURL: "http://" + controlAddr,
		CAFile:     "reallab/ca.crt",
		ClientCert: "reallab/admin.crt",
		ClientKey:  "reallab/admin.key",
		Kubectl:    "reallab/kubectl",
		Version:    cp.Bin.Version,
	}
	for _, m := range cp.Masters {
		ms := lab.RealMasterSpec{Name: m.Name, Addr: m.Addr.String()}
		if m.Standby {
			s.Standby = append(s.Standby, ms)
		} else {
			s.Masters = append(s.Masters, ms)
		}
	}
	s.NodeKubeconfig = "reallab/" + nodeKubeconfig
	return s
}

// nodeKubeconfig is the name, in the share's reallab folder, of a
// kubeconfig shaped as kubeadm writes the kubelet's: server the VIP, the
// CA inline, a node client certificate (system:node:node1, group
// system:nodes) in files beside it.
const nodeKubeconfig = "node.conf"

// kubeletConf is a kubeconfig shaped as kubeadm writes the kubelet's: the
// CA inline (base64), the server, the client certificate and key in files.
const kubeletConf = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://%s
  name: lab
contexts:
- context:
    cluster: lab
    user: system:node:node1
  name: node1
current-context: node1
users:
- name: system:node:node1
  user:
    client-certificate: %s
    client-key: %s
`

// writeNodeKubeconfig writes nodeKubeconfig and its certificate into d.
func (cp *ControlPlane) writeNodeKubeconfig(d string) error {
	certFile, keyFile, err := cp.IssueNodeCert(d, "node", "node1")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(kubeletConf, base64.StdEncoding.EncodeToString(ca), lab.VIPPort, filepath.Base(certFile), filepath.Base(keyFile))
	return os.WriteFile(filepath.Join(d, nodeKubeconfig), []byte(conf), 0o644)
}

// WriteShare puts into the VM's share what the node needs: the lab CA, the
// admin client certificate, kubectl and the spec (lab.RealSpecFile).
func (cp *ControlPlane) WriteShare(share string) error {
	d := filepath.Join(share, "reallab")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	for src, dst := range map[string]string{cp.CAFile: "ca.crt", cp.AdminCert: "admin.crt", cp.AdminKey: "admin.key", cp.Bin.Kubectl: "kubectl"} {
		if err := vm.LinkOrCopy(src, filepath.Join(d, dst)); err != nil {
			return err
		}
	}
	if err := cp.writeNodeKubeconfig(d); err != nil {
		return fmt.Errorf("node kubeconfig: %w", err)
	}
	return lab.WriteRealSpec(share, cp.Spec())
}

// Close stops the control endpoint, the apiservers and etcd, and removes
// the namespaces. It is safe to call more than once.
func (cp *ControlPlane) Close() {
	cp.closeOnce.Do(func() {
		if cp.ctl != nil {
			cp.ctl.Close()
			<-cp.ctlDone
		}
		for _, m := range cp.Masters {
			m.Kill()
			if m.proxy != nil {
				m.proxy.stop()
			}
		}
		if cp.etcd != nil {
			cp.etcd.kill()
		}
		removeLeftovers()
		if cp.lock != nil {
			cp.lock.Close() // releases the flock
		}
	})
}

// lockFile serialises the labs of concurrent test processes (go test runs
// packages in parallel): the namespaces have fixed names.
const lockFile = "/run/lock/vipctl-lab.lock"

// acquireLock takes the lab's lock, waiting for another lab to finish. The
// kernel releases it if the holder dies.
func acquireLock(ctx context.Context) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab lock: %w", err)
	}
	tk := time.NewTicker(200 * time.Millisecond)
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

func (cp *ControlPlane) setupNetwork() error {
	cmds := [][]string{
		{"netns", "add", LabNS},
		{"-n", LabNS, "link", "set", "lo", "up"},
		{"-n", LabNS, "link", "add", bridge, "type", "bridge"},
		{"-n", LabNS, "addr", "add", labCIDR, "dev", bridge},
		{"-n", LabNS, "link", "set", bridge, "up"},
		{"-n", LabNS, "tuntap", "add", "dev", Tap, "mode", "tap"},
		{"-n", LabNS, "link", "set", Tap, "master", bridge, "up"},
	}
	for _, m := range cp.Masters {
		ns := MasterPrefix + m.Name
		cmds = append(cmds,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", LabNS, "link", "add", m.hostVeth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", LabNS, "link", "set", m.hostVeth, "master", bridge, "up"},
			[]string{"-n", ns, "addr", "add", netip.PrefixFrom(m.IP, 24).String(), "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			return err
		}
	}
	return nil
}

// ip runs iproute2.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeLeftovers kills what still runs in the lab's namespaces (an earlier
// run that was itself killed) and deletes them. Only namespaces with the
// lab's names are touched.
func removeLeftovers() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != LabNS && !strings.HasPrefix(f[0], MasterPrefix)) {
			continue
		}
		pids, _ := exec.Command("ip", "netns", "pids", f[0]).Output()
		for _, p := range strings.Fields(string(pids)) {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		exec.Command("ip", "netns", "del", f[0]).Run()
	}
}

func (cp *ControlPlane) writePKI() error {
	dir := filepath.Join(cp.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := lab.NewCA(dir)
	if err != nil {
		return err
	}
	cp.CAFile, cp.ca = ca.CertFile, ca
	cp.caPool = x509.NewCertPool()
	cp.caPool.AddCert(ca.Cert)
	for _, m := range cp.Masters {
		m.certFile, m.keyFile, err = ca.Issue(dir, m.Name, lab.CertSpec{
			CommonName: "kube-apiserver",
			DNSNames:   lab.APIServerNames(),
			// The master's IP (the watchdog verifies it), the VIP, the
			// kubernetes service's first IP, loopback.
			IPs:    []netip.Addr{m.IP, lab.VIP, netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("127.0.0.1")},
			Server: true,
		})
		if err != nil {
			return err
		}
	}
	cp.AdminCert, cp.AdminKey, err = ca.Issue(dir, "admin", lab.CertSpec{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		return err
	}
	cp.saKey, cp.saPub, err = lab.WriteServiceAccountKeys(dir)
	return err
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	data := filepath.Join(cp.Dir, "etcd")
	p, err := startProcess(filepath.Join(cp.Dir, "etcd.log"), LabNS, cp.Bin.Etcd,
		"--name", "lab", "--data-dir", data,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "lab=http://127.0.0.1:2380", "--log-level", "warn")
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	cp.etcd = p
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: dialIn(LabNS), DisableKeepAlives: true}}
	return poll(ctx, 30*time.Second, p, func() bool {
		resp, err := c.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "etcd healthy")
}

// poll calls cond every 50 ms until it holds, p exits, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, p *process, cond func() bool, what string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	for {
		if cond() {
			return nil
		}
		if p != nil && p.exitedNow() {
			return fmt.Errorf("%s: the process exited: %v (log %s)", what, p.err, p.logPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-tk.C:
		}
	}
}

// IssueNodeCert issues a kubelet's client certificate for node name
// (CN system:node:NAME, O system:nodes), as the kubelet's TLS bootstrap
// gets it, into dir as FILE.crt and FILE.key.
func (cp *ControlPlane) IssueNodeCert(dir, file, name string) (certFile, keyFile string, err error) {
	return cp.ca.Issue(dir, file, lab.CertSpec{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}, Client: true})
}

// HTTPClient returns a client whose connections are made inside the lab
// namespace, trusting the lab CA, with the admin certificate when admin is
// set (anonymous otherwise), a new connection per request.
func (cp *ControlPlane) HTTPClient(timeout time.Duration, admin bool) (*http.Client, error) {
	tc := &tls.Config{RootCAs: cp.caPool}
	if admin {
		cert, err := tls.LoadX509KeyPair(cp.AdminCert, cp.AdminKey)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialIn(LabNS), TLSClientConfig: tc, DisableKeepAlives: true}}, nil
}

// process is a child process and its end.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProcess runs bin with args inside the named network namespace
// (ip netns exec, which execs: the pid is bin's), appending its output to
// logPath.
func startProcess(logPath, ns, bin string, args ...string) (*process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "\n==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exitedNow() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(s syscall.Signal) {
	if !p.exitedNow() {
		p.cmd.Process.Signal(s)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *process) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}
