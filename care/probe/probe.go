// Package probe checks a kube-apiserver's health: an HTTPS (or HTTP) GET of
// a health path, with the server's certificate verified against the cluster
// CA, or a bare TCP connect. A healthy answer's connection may carry the
// next probes of the same master for a bounded time (Config.ReuseFor). It
// also holds an idle keep-alive connection to a master (Hold) so that the
// watchdog learns within milliseconds when the apiserver process dies and
// closes it. With Config.HTTP2 the probes and that connection are one
// HTTP/2 connection per master: probes between two health GETs are HTTP/2
// PINGs, which the server answers without running a handler.
package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// Scheme is how a master is probed.
type Scheme string

// The probe schemes.
const (
	HTTPS Scheme = "https"
	HTTP  Scheme = "http"
	TCP   Scheme = "tcp"
)

// Defaults of the HTTP/2 probing (Config.HTTP2) that `vipctl care` uses.
const (
	// DefaultReadyEvery is how long a healthy health GET stands: with the
	// watchdog's 1 s interval (1-1.1 s with its jitter) every other probe
	// is a GET and the others are PINGs, so that an apiserver turning
	// unhealthy (500, 403) is still out within 3 s.
	DefaultReadyEvery = 1500 * time.Millisecond
	// DefaultHTTP2ReuseFor is how long the shared HTTP/2 connection is
	// kept before a fresh one (and a full certificate check) replaces it.
	DefaultHTTP2ReuseFor = 10 * time.Minute
)

// Config describes the probe.
type Config struct {
	Scheme Scheme
	// Path is the HTTP path, such as /readyz.
	Path string
	// Statuses are the HTTP statuses that mean healthy; every other status
	// is a failure.
	Statuses []int
	// Timeout bounds a whole probe: connect, TLS handshake, request and
	// response headers.
	Timeout time.Duration
	// TLS is the client configuration for HTTPS (see LoadTLS). Its
	// ServerName is set per master to the master's IP.
	TLS *tls.Config
	// UserAgent is sent with each request.
	UserAgent string
	// ReuseFor is how long an HTTP(S) connection that answered healthy may
	// carry further probes of the same master; 0 opens a fresh connection
	// for every probe. A connection the server closed or reset while idle
	// is replaced by a fresh one within the same probe, so reuse never
	// turns into a false failure; a dead master still fails at once
	// (its kept connection is reset and the fresh connection is refused).
	// Bounding the age keeps new connections, and the certificate check
	// of a full handshake, exercised regularly.
	ReuseFor time.Duration
	// HTTP2, for the https scheme, makes the probes and the sentinel (Hold)
	// of a master share one HTTP/2 connection; a server that does not
	// negotiate HTTP/2 is probed over HTTP/1.1 as without it. ReuseFor
	// then bounds that connection's age (0: kept until it fails).
	HTTP2 bool
	// ReadyEvery, with HTTP2, is how long a healthy answer to the health
	// GET stands: until then a probe is an HTTP/2 PING on the same
	// connection (it proves the server process and the path to it alive),
	// after it the next probe is a GET again. PINGs begin only after two
	// healthy GETs in a row on the connection. 0 makes every probe a GET.
	// A failed probe drops the connection, and the next probe is a GET on
	// a fresh one.
	ReadyEvery time.Duration
}

// Validate checks c. Errors name the field and the value.
func (c Config) Validate() error {
	switch c.Scheme {
	case HTTPS:
		if c.TLS == nil {
			return errors.New("scheme https: no TLS configuration")
		}
	case HTTP, TCP:
	default:
		return fmt.Errorf("scheme %q: want https, http or tcp", c.Scheme)
	}
	if c.Scheme != TCP {
		if !strings.HasPrefix(c.Path, "/") {
			return fmt.Errorf("path %q: must start with /", c.Path)
		}
		if len(c.Statuses) == 0 {
			return errors.New("statuses: at least one healthy HTTP status is required")
		}
		for _, s := range c.Statuses {
			if s < 100 || s > 599 {
				return fmt.Errorf("status %d: want 100 to 599", s)
			}
		}
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("timeout %s: want a positive duration", c.Timeout)
	}
	if c.ReuseFor < 0 {
		return fmt.Errorf("reuse-for %s: want 0 (no reuse) or a positive duration", c.ReuseFor)
	}
	if c.ReadyEvery < 0 {
		return fmt.Errorf("ready-every %s: want 0 (a GET every probe) or a positive duration", c.ReadyEvery)
	}
	return nil
}

// Result is the outcome of one probe.
type Result struct {
	// OK is true when the master answered as a healthy one.
	OK bool
	// Fast is true for a definitive negative answer: connection refused or
	// reset, the server closing the connection, an unreachable host, an
	// unhealthy status. A timeout or a TLS verification failure is not.
	Fast bool
	// Refused is true when the connection was refused: nothing listens
	// on the master's port.
	Refused bool
	// Status is the HTTP status; 0 when no response was read.
	Status int
	// Reason describes the outcome: "HTTP 200", "HTTP 500 (want 200):
	// [-]etcd failed", "connection refused", "timeout after 1s", ...
	Reason string
	// Latency is how long the probe took.
	Latency time.Duration
	// Retransmits is how many TCP segments the kernel retransmitted for
	// this probe's answer (TCP_INFO): on a kept connection those of this
	// probe, on a new one those since the connect, SYNs included. A healthy
	// answer that needed retransmissions came over a link that lost
	// packets: TCP hid the loss from this probe, not from a client that
	// connected at that moment. Not counted with HTTP2.
	Retransmits uint32
	// Err is the underlying error of a failed probe, nil for a response
	// with an unhealthy status.
	Err error
}

// Prober probes masters. It is safe for concurrent use. It keeps at most one
// idle connection per master (see Config.ReuseFor), or with Config.HTTP2
// one HTTP/2 connection per master that its probes and Hold share.
type Prober struct {
	cfg      Config
	now      func() time.Time
	h2       *http2.Transport
	mu       sync.Mutex
	idle     map[netip.AddrPort]*kept
	sessions map[netip.AddrPort]*session
	noH2     map[netip.AddrPort]bool
	next     map[netip.AddrPort]chan struct{} // see installed
}

// kept is an idle connection that answered healthy.
type kept struct {
	conn net.Conn
	br   *bufio.Reader
	born time.Time
}

// New returns a prober for cfg.
func New(cfg Config) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Statuses = slices.Clone(cfg.Statuses)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "vipctl-care"
	}
	return &Prober{cfg: cfg, now: time.Now, h2: &http2.Transport{}, idle: map[netip.AddrPort]*kept{},
		sessions: map[netip.AddrPort]*session{}, noH2: map[netip.AddrPort]bool{}, next: map[netip.AddrPort]chan struct{}{}}, nil
}

// Close closes the connections the prober keeps.
func (p *Prober) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, k := range p.idle {
		_ = k.conn.Close()
		delete(p.idle, a)
	}
	for a, s := range p.sessions {
		_ = s.cc.Close()
		delete(p.sessions, a)
	}
}

// take removes and returns target's idle connection if it is young enough.
func (p *Prober) take(target netip.AddrPort) *kept {
	p.mu.Lock()
	k := p.idle[target]
	delete(p.idle, target)
	p.mu.Unlock()
	if k != nil && p.now().Sub(k.born) >= p.cfg.ReuseFor {
		_ = k.conn.Close()
		return nil
	}
	return k
}

// keep stores k as target's idle connection (closing any other).
func (p *Prober) keep(target netip.AddrPort, k *kept) {
	p.mu.Lock()
	old := p.idle[target]
	p.idle[target] = k
	p.mu.Unlock()
	if old != nil {
		_ = old.conn.Close()
	}
}

// Scheme returns the probe's scheme.
func (p *Prober) Scheme() Scheme { return p.cfg.Scheme }

// Probe checks target once, within the configured timeout and ctx.
func (p *Prober) Probe(ctx context.Context, target netip.AddrPort) Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var r Result
	if p.h2Enabled(target) {
		r = p.probeH2(ctx, target)
	} else {
		r = p.probe(ctx, target)
	}
	r.Latency = time.Since(start)
	if r.Err != nil {
		r.Reason, r.Fast = p.classify(ctx, r.Err)
		r.Refused = errors.Is(r.Err, syscall.ECONNREFUSED)
	}
	return r
}

// ProbeFresh checks target once on a new connection, as a new client
// connects: the connection kept from an earlier probe is closed first. With
// HTTP2 it is Probe (the shared session carries the sentinel too).
func (p *Prober) ProbeFresh(ctx context.Context, target netip.AddrPort) Result {
	if !p.h2Enabled(target) {
		if k := p.take(target); k != nil {
			_ = k.conn.Close()
		}
	}
	return p.Probe(ctx, target)
}

func (p *Prober) probe(ctx context.Context, target netip.AddrPort) Result {
	reuse := p.cfg.Scheme != TCP && p.cfg.ReuseFor > 0
	if reuse {
		if k := p.take(target); k != nil {
			before, _ := retransmits(k.conn)
			resp, body, err := p.exchange(ctx, k.conn, k.br, target, false)
			if err == nil {
				after, _ := retransmits(k.conn)
				r := p.judge(target, k, resp, body)
				r.Retransmits = after - before
				return r
			}
			_ = k.conn.Close()
			if !stale(err) || ctx.Err() != nil {
				return Result{Err: err}
			}
			// Closed or reset while idle: try a fresh connection.
		}
	}
	conn, err := p.connect(ctx, target, false, "http/1.1")
	if err != nil {
		return Result{Err: err}
	}
	if p.cfg.Scheme == TCP {
		_ = conn.Close()
		return Result{OK: true, Reason: "TCP connect"}
	}
	k := &kept{conn: conn, br: bufio.NewReader(conn), born: p.now()}
	resp, body, err := p.exchange(ctx, conn, k.br, target, !reuse)
	if err != nil {
		_ = conn.Close()
		return Result{Err: err}
	}
	retrans, _ := retransmits(conn)
	if !reuse {
		_ = conn.Close()
		k = nil
	}
	r := p.judge(target, k, resp, body)
	r.Retransmits = retrans
	return r
}

// stale tells whether err is what a kept connection that the server closed
// while it was idle returns.
func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// judge turns a response into a result; k, when not nil, is the connection
// it came on, kept for the next probe if the answer was healthy and the
// server keeps the connection open.
func (p *Prober) judge(target netip.AddrPort, k *kept, resp *http.Response, body []byte) Result {
	healthy := healthyStatus(p.cfg.Statuses, resp.StatusCode)
	if k != nil {
		if healthy && !resp.Close {
			p.keep(target, k)
		} else {
			_ = k.conn.Close()
		}
	}
	r := Result{Status: resp.StatusCode}
	if healthy {
		r.OK, r.Reason = true, "HTTP "+strconv.Itoa(resp.StatusCode)
		return r
	}
	r.Fast = true
	r.Reason = fmt.Sprintf("HTTP %d (want %s)", resp.StatusCode, joinInts(p.cfg.Statuses))
	if f := failedChecks(body); f != "" {
		r.Reason += ": " + f
	}
	return r
}

func healthyStatus(statuses []int, status int) bool { return slices.Contains(statuses, status) }

// connect dials target and, for HTTPS, completes a verified TLS handshake
// with the master's IP as the name to verify, offering the ALPN protocols
// alpn. The connection's deadline follows ctx, and it is unblocked when
// ctx ends.
func (p *Prober) connect(ctx context.Context, target netip.AddrPort, keepAlive bool, alpn ...string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.cfg.Timeout, KeepAlive: -1}
	if keepAlive {
		d.KeepAlive = 0 // Go's default TCP keep-alive for held connections
	}
	raw, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return nil, err
	}
	if p.cfg.Scheme != HTTPS {
		return raw, nil
	}
	cfg := p.cfg.TLS.Clone()
	cfg.ServerName = target.Addr().String()
	cfg.NextProtos = alpn
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// exchange sends one GET of the health path on conn (read through br) and
// reads the response and up to 4 KiB of its body. With closeAfter the
// request asks the server to close the connection afterwards; without, the
// whole body is consumed so that br is positioned after the response.
func (p *Prober) exchange(ctx context.Context, conn net.Conn, br *bufio.Reader, target netip.AddrPort, closeAfter bool) (*http.Response, []byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	u := string(p.cfg.Scheme) + "://" + target.String() + p.cfg.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Close = closeAfter
	req.Header.Set("User-Agent", p.cfg.UserAgent)
	req.Header.Set("Accept", "*/*")
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if closeAfter {
		// The status is what counts; a body cut short does not matter.
		return resp, body, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}

// classify turns a probe error into a reason and tells whether it is a
// definitive answer worth a quick re-probe.
func (p *Prober) classify(ctx context.Context, err error) (string, bool) {
	var (
		netErr   net.Error
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		verifyEr *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset", true
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable", true
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server", true
	case errors.As(err, &unknown), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verifyEr):
		return "TLS verification failed: " + err.Error(), false
	case errors.As(err, &recErr):
		return "TLS handshake failed (is the scheme right?): " + err.Error(), false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "cancelled", false
		}
		return "timeout after " + p.cfg.Timeout.String(), false
	case errors.Is(err, context.Canceled):
		return "cancelled", false
	}
	return err.Error(), false
}

// failedChecks extracts kube-apiserver's failed checks ("[-]etcd failed:
// reason withheld") from a /readyz or /healthz body.
func failedChecks(body []byte) string {
	var out []string
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[-]") {
			out = append(out, line)
		}
	}
	s := strings.Join(out, "; ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// ErrHoldUnsupported is returned by Hold in TCP mode: an idle connection
// to an unknown TCP server proves nothing and may upset it.
var ErrHoldUnsupported = errors.New("holding a connection needs the http or https scheme")

// Hold opens a keep-alive connection to target, sends one request on it and
// then waits, idle, until the server closes it or ctx ends. idle, when not
// nil, is called once the idle phase is reached. established
// tells whether the idle phase was reached: only then does the end of Hold
// mean something happened to the server (it died, restarted, or closed an
// idle connection, which kube-apiserver does after ~90 s). The request
// counts for nothing; only Probe judges health.
//
// With Config.HTTP2 the connection is the one the probes of target use;
// when a probe drops it after a failure, Hold waits for the next one.
func (p *Prober) Hold(ctx context.Context, target netip.AddrPort, idle func()) (established bool, err error) {
	if p.cfg.Scheme == TCP {
		return false, ErrHoldUnsupported
	}
	if p.h2Enabled(target) {
		return p.holdH2(ctx, target, idle)
	}
	return p.hold(ctx, target, idle)
}

// hold is Hold over HTTP/1.1: a connection of its own.
func (p *Prober) hold(ctx context.Context, target netip.AddrPort, idle func()) (established bool, err error) {
	setup, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	conn, err := p.connect(setup, target, true, "http/1.1")
	if err != nil {
		return false, err
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	resp, _, err := p.exchange(setup, conn, br, target, false)
	if err != nil {
		return false, err
	}
	if resp.Close {
		return false, errors.New("the server closes the connection after each request")
	}
	_ = conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if idle != nil {
		idle()
	}
	_, err = br.Peek(1)
	if ctx.Err() != nil {
		return true, ctx.Err()
	}
	if err == nil {
		return true, errors.New("the server sent data on an idle connection")
	}
	if errors.Is(err, io.EOF) {
		return true, errors.New("connection closed by the server")
	}
	return true, err
}
