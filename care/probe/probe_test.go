package probe

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/probe/probetest"
)

// server is an apiserver stand-in on 127.0.0.1.
type server struct {
	*httptest.Server
	conns    atomic.Int64
	idle     atomic.Int64
	requests atomic.Int64 // answered by the handler
	status   atomic.Int64
	body     atomic.Value
	target   netip.AddrPort
	mu       sync.Mutex
	open     []net.Conn // the connections accepted, for resetIdle
}

// resetIdle resets every connection the server accepted (RST, not FIN), as
// a crashed or restarted server's kernel does when a packet arrives.
func (s *server) resetIdle(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.open {
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		require.NoError(t, c.(*net.TCPConn).SetLinger(0))
		_ = c.Close()
	}
	s.open = nil
}

func newServer(t *testing.T, ca *probetest.CA, clientCA *probetest.CA, sanIP string, opts ...func(*server)) *server {
	t.Helper()
	s := &server{}
	s.status.Store(200)
	s.body.Store("ok")
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(s.status.Load()))
		_, _ = io.WriteString(w, s.body.Load().(string))
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected here
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
		case http.StateIdle:
			s.idle.Add(1)
		}
	}
	for _, o := range opts {
		o(s)
	}
	if ca != nil {
		pair, _, _ := ca.Issue(t, "kube-apiserver", false, sanIP)
		s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
		if clientCA != nil {
			s.TLS.ClientCAs = clientCA.Pool()
			s.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	s.target = netip.MustParseAddrPort(s.Listener.Addr().String())
	return s
}

func newProber(t *testing.T, cfg Config) *Prober {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = "/readyz"
	}
	if cfg.Statuses == nil {
		cfg.Statuses = []int{200}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	p, err := New(cfg)
	require.NoError(t, err)
	return p
}

func httpsProber(t *testing.T, tc *tls.Config) *Prober {
	return newProber(t, Config{Scheme: HTTPS, TLS: tc})
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a := netip.MustParseAddrPort(l.Addr().String())
	require.NoError(t, l.Close())
	return a
}

func TestHTTPSVerifiedAgainstCA(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, 200, r.Status)
	assert.Equal(t, "HTTP 200", r.Reason)
	assert.Positive(t, r.Latency)
}

func TestHTTPSStatuses(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	for _, tc := range []struct {
		status int
		body   string
		ok     bool
		reason string
	}{
		{200, "ok", true, "HTTP 200"},
		{403, `{"kind":"Status","reason":"Forbidden"}`, false, "HTTP 403 (want 200)"},
		{500, "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\nreadyz check failed\n", false, "HTTP 500 (want 200): [-]etcd failed: reason withheld"},
		{401, "", false, "HTTP 401 (want 200)"},
	} {
		srv.status.Store(int64(tc.status))
		srv.body.Store(tc.body)
		r := p.Probe(context.Background(), srv.target)
		assert.Equal(t, tc.ok, r.OK, "status %d", tc.status)
		assert.Equal(t, tc.status, r.Status)
		assert.Equal(t, tc.reason, r.Reason)
		if !tc.ok {
			assert.True(t, r.Fast, "an unhealthy status is a definitive answer")
			assert.NoError(t, r.Err)
		}
	}
	allow := newProber(t, Config{Scheme: HTTPS, TLS: TLSConfig(ca.Pool(), nil, false), Statuses: []int{200, 401}})
	srv.status.Store(401)
	assert.True(t, allow.Probe(context.Background(), srv.target).OK, "--health-status 200,401 accepts 401")
}

func TestHTTPSVerificationFailures(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	other := probetest.NewCA(t, "another CA")
	for name, tc := range map[string]struct {
		san  string
		pool *probetest.CA
	}{
		"unknown CA":            {"127.0.0.1", other},
		"IP not in the SANs":    {"127.0.0.2", ca},
		"certificate for a DNS": {"", ca},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newServer(t, ca, nil, tc.san)
			p := httpsProber(t, TLSConfig(tc.pool.Pool(), nil, false))
			r := p.Probe(context.Background(), srv.target)
			assert.False(t, r.OK)
			assert.False(t, r.Fast, "a certificate problem is not fixed by re-probing")
			assert.Contains(t, r.Reason, "TLS verification failed")
		})
	}
	t.Run("skip verify accepts it", func(t *testing.T) {
		srv := newServer(t, ca, nil, "127.0.0.2")
		p := httpsProber(t, TLSConfig(nil, nil, true))
		assert.True(t, p.Probe(context.Background(), srv.target).OK)
	})
}

func TestHTTPSClientCertificate(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	clientCA := probetest.NewCA(t, "client CA")
	srv := newServer(t, ca, clientCA, "127.0.0.1")
	without := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	r := without.Probe(context.Background(), srv.target)
	assert.False(t, r.OK, "the server requires a client certificate")

	_, certPEM, keyPEM := clientCA.Issue(t, "vipctl-care", true)
	tc, err := LoadTLS(TLSOptions{
		CAFile:   probetest.WriteFile(t, "ca.crt", ca.PEM),
		CertFile: probetest.WriteFile(t, "client.crt", certPEM),
		KeyFile:  probetest.WriteFile(t, "client.key", keyPEM),
	})
	require.NoError(t, err)
	with := httpsProber(t, tc)
	r = with.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
}

func TestWithoutReuseEachProbeUsesAFreshConnection(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	for range 3 {
		require.True(t, p.Probe(context.Background(), srv.target).OK)
	}
	assert.Equal(t, int64(3), srv.conns.Load())
}

// reusing returns a stand-in apiserver and a prober that keeps healthy
// connections to it for a minute.
func reusing(t *testing.T) (*server, *Prober) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	p := newProber(t, Config{Scheme: HTTPS, TLS: TLSConfig(ca.Pool(), nil, false), ReuseFor: time.Minute})
	t.Cleanup(p.Close)
	return srv, p
}

func TestHealthyConnectionCarriesTheNextProbes(t *testing.T) {
	srv, p := reusing(t)
	for range 3 {
		r := p.Probe(context.Background(), srv.target)
		require.True(t, r.OK, r.Reason)
	}
	assert.Equal(t, int64(1), srv.conns.Load())
}

// ProbeFresh connects anew, as a new client does, and its healthy
// connection carries the next plain probes.
func TestProbeFreshUsesANewConnection(t *testing.T) {
	srv, p := reusing(t)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	for range 2 {
		r := p.ProbeFresh(context.Background(), srv.target)
		require.True(t, r.OK, r.Reason)
	}
	assert.Equal(t, int64(3), srv.conns.Load(), "one connection per fresh probe")
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(3), srv.conns.Load(), "the last fresh connection is kept")
}

func TestKeptConnectionExpires(t *testing.T) {
	srv, p := reusing(t)
	now := time.Now()
	p.now = func() time.Time { return now }
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	now = now.Add(59 * time.Second)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(1), srv.conns.Load(), "younger than ReuseFor: reused")
	now = now.Add(time.Second)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(2), srv.conns.Load(), "as old as ReuseFor: a fresh connection")
}

// The server closing a kept connection while it is idle (an idle timeout,
// a restart) is not a failure: the probe carries on over a fresh one.
func TestConnectionClosedWhileIdleIsReplaced(t *testing.T) {
	srv, p := reusing(t)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	srv.CloseClientConnections()
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, int64(2), srv.conns.Load())
}

// A kept connection reset while idle (the server's kernel answers RST: the
// apiserver restarted, a conntrack entry expired) is not a failure either.
func TestConnectionResetWhileIdleIsReplaced(t *testing.T) {
	srv, p := reusing(t)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	srv.resetIdle(t)
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, int64(2), srv.conns.Load(), "over a fresh connection")
}

// A server that closes the connection after each answer is probed as any
// other; its connection is simply not kept.
func TestServerClosingAfterEachAnswerIsHealthy(t *testing.T) {
	srv, p := reusing(t)
	srv.Config.SetKeepAlivesEnabled(false)
	for range 2 {
		r := p.Probe(context.Background(), srv.target)
		require.True(t, r.OK, r.Reason)
	}
	assert.Equal(t, int64(2), srv.conns.Load())
}

func TestUnhealthyAnswerIsNotKept(t *testing.T) {
	srv, p := reusing(t)
	srv.status.Store(500)
	require.False(t, p.Probe(context.Background(), srv.target).OK)
	srv.status.Store(200)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(2), srv.conns.Load())
}

// A master that dies fails the next probe at once, as a fast failure,
// even though a connection to it was kept.
func TestDeadMasterFailsDespiteAKeptConnection(t *testing.T) {
	srv, p := reusing(t)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	srv.Close()
	r := p.Probe(context.Background(), srv.target)
	assert.False(t, r.OK)
	assert.True(t, r.Fast, r.Reason)
	assert.Equal(t, "connection refused", r.Reason)
}

func TestHTTPScheme(t *testing.T) {
	srv := newServer(t, nil, nil, "")
	p := newProber(t, Config{Scheme: HTTP})
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)

	ca := probetest.NewCA(t, "cluster CA")
	tlsSrv := newServer(t, ca, nil, "127.0.0.1")
	r = p.Probe(context.Background(), tlsSrv.target)
	assert.False(t, r.OK, "plain HTTP to a TLS server fails")
}

func TestRefused(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	target := closedPort(t)
	for _, p := range []*Prober{
		httpsProber(t, TLSConfig(ca.Pool(), nil, false)),
		newProber(t, Config{Scheme: HTTP}),
		newProber(t, Config{Scheme: TCP}),
	} {
		r := p.Probe(context.Background(), target)
		assert.False(t, r.OK)
		assert.True(t, r.Fast, "refused is a definitive answer (%s)", p.Scheme())
		assert.Equal(t, "connection refused", r.Reason)
		assert.Error(t, r.Err)
	}
}

func TestTCPScheme(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := newProber(t, Config{Scheme: TCP})
	r := p.Probe(context.Background(), netip.MustParseAddrPort(l.Addr().String()))
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, "TCP connect", r.Reason)
}

func TestServerClosesConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close() // like a process dying mid-handshake
		}
	}()
	ca := probetest.NewCA(t, "cluster CA")
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	r := p.Probe(context.Background(), netip.MustParseAddrPort(l.Addr().String()))
	assert.False(t, r.OK)
	assert.True(t, r.Fast, r.Reason)
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newProber(t, Config{Scheme: HTTP, Timeout: 200 * time.Millisecond})
	r := p.Probe(context.Background(), netip.MustParseAddrPort(srv.Listener.Addr().String()))
	assert.False(t, r.OK)
	assert.False(t, r.Fast, "a timeout is not re-probed quickly")
	assert.Equal(t, "timeout after 200ms", r.Reason)
	assert.GreaterOrEqual(t, r.Latency, 200*time.Millisecond)
	assert.Less(t, r.Latency, 2*time.Second)
}

func TestProbeCancelled(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Store(true)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	p := newProber(t, Config{Scheme: HTTP, Timeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() { done <- p.Probe(ctx, netip.MustParseAddrPort(srv.Listener.Addr().String())) }()
	require.Eventually(t, started.Load, 5*time.Second, time.Millisecond, "the request reached the server")
	cancel()
	select {
	case r := <-done:
		assert.False(t, r.OK)
		assert.Equal(t, "cancelled", r.Reason)
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not return when its context was cancelled")
	}
}

func TestHoldReturnsWhenServerCloses(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	type res struct {
		established bool
		err         error
	}
	done := make(chan res, 1)
	var idle atomic.Bool
	go func() {
		e, err := p.Hold(context.Background(), srv.target, func() { idle.Store(true) })
		done <- res{e, err}
	}()
	// Wait until Hold says the connection is idle, then close it as a
	// dying apiserver's kernel would.
	require.Eventually(t, idle.Load, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return srv.idle.Load() == 1 }, 5*time.Second, time.Millisecond, "the server sees it idle too")
	select {
	case r := <-done:
		t.Fatalf("Hold returned while the connection was open: %v", r.err)
	default:
	}
	srv.CloseClientConnections()
	select {
	case r := <-done:
		assert.True(t, r.established)
		assert.Error(t, r.err)
	case <-time.After(5 * time.Second):
		t.Fatal("Hold did not notice the server closing the connection")
	}
}

func TestHoldCancelled(t *testing.T) {
	srv := newServer(t, nil, nil, "")
	p := newProber(t, Config{Scheme: HTTP})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool, 1)
	idle := make(chan struct{})
	go func() {
		e, _ := p.Hold(ctx, srv.target, func() { close(idle) })
		done <- e
	}()
	// The client reached its idle phase (the server's idle count alone
	// does not say the client has read the answer yet).
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("Hold never reached its idle phase")
	}
	cancel()
	select {
	case e := <-done:
		assert.True(t, e)
	case <-time.After(5 * time.Second):
		t.Fatal("Hold did not return when its context was cancelled")
	}
}

func TestHoldNotEstablished(t *testing.T) {
	p := newProber(t, Config{Scheme: HTTP})
	e, err := p.Hold(context.Background(), closedPort(t), nil)
	assert.False(t, e)
	assert.Error(t, err)

	closer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
	}))
	defer closer.Close()
	e, err = p.Hold(context.Background(), netip.MustParseAddrPort(closer.Listener.Addr().String()), nil)
	assert.False(t, e, "a server that closes after each request cannot be held")
	assert.ErrorContains(t, err, "closes the connection")

	tcp := newProber(t, Config{Scheme: TCP})
	_, err = tcp.Hold(context.Background(), closedPort(t), nil)
	assert.ErrorIs(t, err, ErrHoldUnsupported)
}

func TestConfigValidate(t *testing.T) {
	good := Config{Scheme: HTTPS, Path: "/readyz", Statuses: []int{200}, Timeout: time.Second, TLS: TLSConfig(nil, nil, true)}
	require.NoError(t, good.Validate())
	for name, mut := range map[string]func(*Config){
		"scheme ftp":     func(c *Config) { c.Scheme = "ftp" },
		"https, no TLS":  func(c *Config) { c.TLS = nil },
		"path readyz":    func(c *Config) { c.Path = "readyz" },
		"no statuses":    func(c *Config) { c.Statuses = nil },
		"status 1000":    func(c *Config) { c.Statuses = []int{1000} },
		"timeout 0":      func(c *Config) { c.Timeout = 0 },
		"timeout -1s":    func(c *Config) { c.Timeout = -time.Second },
		"status 99":      func(c *Config) { c.Statuses = []int{200, 99} },
		"empty scheme":   func(c *Config) { c.Scheme = "" },
		"http, no path":  func(c *Config) { c.Scheme, c.Path = HTTP, "" },
		"tcp, timeout 0": func(c *Config) { c.Scheme, c.Timeout = TCP, 0 },
	} {
		c := good
		mut(&c)
		_, err := New(c)
		assert.Error(t, err, name)
	}
	tcp := Config{Scheme: TCP, Timeout: time.Second}
	assert.NoError(t, tcp.Validate(), "tcp needs no path nor statuses")
}

func TestLoadTLS(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	caFile := probetest.WriteFile(t, "ca.crt", ca.PEM)
	_, certPEM, keyPEM := ca.Issue(t, "client", true)
	certFile := probetest.WriteFile(t, "c.crt", certPEM)
	keyFile := probetest.WriteFile(t, "c.key", keyPEM)

	c, err := LoadTLS(TLSOptions{CAFile: caFile})
	require.NoError(t, err)
	assert.NotNil(t, c.RootCAs)
	assert.False(t, c.InsecureSkipVerify)

	_, err = LoadTLS(TLSOptions{})
	assert.ErrorContains(t, err, "no CA file", "system roots are never used")
	_, err = LoadTLS(TLSOptions{CAFile: "/nonexistent/ca.crt"})
	assert.ErrorContains(t, err, "/nonexistent/ca.crt")
	_, err = LoadTLS(TLSOptions{CAFile: probetest.WriteFile(t, "bad.crt", []byte("not a PEM"))})
	assert.ErrorContains(t, err, "no PEM certificate")
	_, err = LoadTLS(TLSOptions{CAFile: caFile, CertFile: certFile})
	assert.ErrorContains(t, err, "both")
	_, err = LoadTLS(TLSOptions{CAFile: caFile, CertFile: certFile, KeyFile: caFile})
	assert.Error(t, err)
	c, err = LoadTLS(TLSOptions{CAFile: caFile, CertFile: certFile, KeyFile: keyFile})
	require.NoError(t, err)
	assert.Len(t, c.Certificates, 1)
	c, err = LoadTLS(TLSOptions{InsecureSkipVerify: true})
	require.NoError(t, err)
	assert.True(t, c.InsecureSkipVerify)
}

// Every probe is a new connection with its own handshake, but after the
// first full one the TLS session is resumed (no certificate chain to send
// and verify again).
func TestHTTPSProbesResumeTheSession(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1")
	var resumed, full atomic.Int32
	srv.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			resumed.Add(1)
		} else {
			full.Add(1)
		}
		return nil
	}
	p := httpsProber(t, TLSConfig(ca.Pool(), nil, false))
	for range 4 {
		r := p.Probe(context.Background(), srv.target)
		require.True(t, r.OK, r.Reason)
	}
	assert.EqualValues(t, 4, srv.conns.Load(), "a new connection per probe")
	assert.Equal(t, int32(1), full.Load(), "one full handshake")
	assert.Equal(t, int32(3), resumed.Load(), "the others resumed the session")
}
