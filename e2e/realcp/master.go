package realcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Master is one kube-apiserver in its network namespace.
type Master struct {
	cp                *ControlPlane
	Name              string
	IP                netip.Addr
	Addr              netip.AddrPort
	hostVeth          string // its bridge port in the lab namespace
	certFile, keyFile string
	proxy             *etcdProxy
	// Standby is set for a master the lab did not start (Options.Standby).
	Standby bool

	mu   sync.Mutex
	proc *process
	// anonOff is set while the process runs with --anonymous-auth=false.
	anonOff bool
}

// StartOptions are per-start apiserver settings.
type StartOptions struct {
	// ShutdownDelay is --shutdown-delay-duration: after SIGTERM the
	// apiserver fails /readyz at once but keeps serving this long.
	ShutdownDelay time.Duration
	// AnonymousAuthOff starts it with --anonymous-auth=false, as the
	// whole lab's Options.AnonymousAuthOff does; Heal restarts it without.
	AnonymousAuthOff bool
}

// NS is the master's network namespace.
func (m *Master) NS() string { return MasterPrefix + m.Name }

// LogFile is the apiserver's log (every start appends to it).
func (m *Master) LogFile() string { return filepath.Join(m.cp.Dir, m.Name+".log") }

// Start starts the apiserver; it does not wait for it (see WaitReady).
// Starting a running master is an error.
func (m *Master) Start(o StartOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil && !m.proc.exitedNow() {
		return fmt.Errorf("%s: already running (pid %d)", m.Name, m.proc.cmd.Process.Pid)
	}
	cp := m.cp
	args := []string{
		"--etcd-servers=http://" + proxyListen,
		"--advertise-address=" + m.IP.String(),
		"--secure-port=6443",
		"--cert-dir=" + filepath.Join(cp.Dir, m.Name),
		"--tls-cert-file=" + m.certFile, "--tls-private-key-file=" + m.keyFile,
		"--client-ca-file=" + cp.CAFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + cp.saPub, "--service-account-signing-key-file=" + cp.saKey,
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=Node,RBAC",
		"--profiling=false",
		fmt.Sprintf("--shutdown-delay-duration=%s", o.ShutdownDelay),
	}
	if cp.anonOff || o.AnonymousAuthOff {
		args = append(args, "--anonymous-auth=false")
	}
	p, err := startProcess(m.LogFile(), m.NS(), cp.Bin.APIServer, args...)
	if err != nil {
		return fmt.Errorf("%s: start kube-apiserver: %w", m.Name, err)
	}
	m.proc, m.anonOff = p, o.AnonymousAuthOff
	return nil
}

func (m *Master) current() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Running reports whether the apiserver process is alive.
func (m *Master) Running() bool {
	p := m.current()
	return p != nil && !p.exitedNow()
}

// WaitReady polls the apiserver's /readyz anonymously, as the watchdog
// does by default (with the admin certificate when anonymous requests are
// off), from the lab namespace, until it answers 200.
func (m *Master) WaitReady(ctx context.Context, timeout time.Duration) error {
	m.mu.Lock()
	admin := m.cp.anonOff || m.anonOff
	m.mu.Unlock()
	c, err := m.cp.HTTPClient(time.Second, admin)
	if err != nil {
		return err
	}
	return poll(ctx, timeout, m.current(), func() bool { return m.readyz(c) == http.StatusOK }, m.Name+" /readyz 200")
}

func (m *Master) readyz(c *http.Client) int {
	resp, err := c.Get("https://" + m.Addr.String() + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Kill SIGKILLs the apiserver and waits until the process is gone.
func (m *Master) Kill() {
	if p := m.current(); p != nil {
		p.kill()
	}
}

// Terminate sends SIGTERM and returns at once (see WaitExit).
func (m *Master) Terminate() error {
	p := m.current()
	if p == nil || p.exitedNow() {
		return fmt.Errorf("%s: not running", m.Name)
	}
	p.signal(syscall.SIGTERM)
	return nil
}

// WaitExit waits until the apiserver process has ended.
func (m *Master) WaitExit(ctx context.Context) error {
	p := m.current()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: still running: %w", m.Name, ctx.Err())
	}
}

// EtcdDown takes the master's etcd away (its apiserver's connections to
// etcd close, new ones are refused); the other masters keep theirs.
func (m *Master) EtcdDown() { m.proxy.stop() }

// EtcdUp gives the master its etcd back.
func (m *Master) EtcdUp() error { return m.proxy.start() }

// LinkDown cuts the master off the lab bridge without a trace: packets to
// and from it are dropped (no RST, no ICMP), like a cut cable.
func (m *Master) LinkDown() error {
	return ip("-n", LabNS, "link", "set", m.hostVeth, "down")
}

// LinkUp reconnects the master.
func (m *Master) LinkUp() error {
	return ip("-n", LabNS, "link", "set", m.hostVeth, "up")
}

// Heal puts the master back to normal: link up, etcd up, apiserver running
// and ready.
func (m *Master) Heal(ctx context.Context) error {
	err := errors.Join(m.LinkUp(), m.EtcdUp())
	m.mu.Lock()
	anonOff := m.anonOff
	m.mu.Unlock()
	if anonOff && m.Running() {
		m.Kill() // back to the lab's own settings
	}
	if !m.Running() {
		err = errors.Join(err, m.Start(StartOptions{}))
	}
	if err != nil {
		return err
	}
	return m.WaitReady(ctx, 3*time.Minute)
}
