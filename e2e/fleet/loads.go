package fleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/care/probe"
)

// Loads the harness knows. Each runs on every simulated node, with the
// node's own client certificate, connections and TLS sessions.
const (
	// LoadWatchdog is vipctl's watchdog at its defaults: care/probe's
	// Prober configured as `vipctl care` configures it (a GET every probe
	// on an HTTP/1.1 connection renewed every 10 s), probing on the health
	// package's schedule, with its sentinel on a second, idle connection.
	LoadWatchdog = "watchdog"
	// LoadKubelet renews the node's Lease every 10 s with client-go, as a
	// kubelet does: the least every node already costs.
	LoadKubelet = "kubelet"
	// LoadLvscare is lvscare's pattern: a new TLS connection (no session
	// resumption, no verification) and a GET of /healthz every 5 s.
	LoadLvscare = "lvscare"
	// LoadWatchdogH2Prefix + DURATION is the watchdog with its probes and
	// sentinel on one HTTP/2 connection (probe.Config.HTTP2), a health GET
	// every DURATION (probe.Config.ReadyEvery; 0: every probe) and PINGs
	// between, the connection kept for h2ReuseFor.
	LoadWatchdogH2Prefix = "watchdog-h2:"
	// LoadGetPrefix + PATH is a kept-alive HTTP/1.1 GET of PATH once a
	// second on one connection per node: what a health path costs.
	LoadGetPrefix = "get:"
)

// DefaultLoads are the loads of a run when none are named: the three of
// issue 16 and the watchdog with the opt-in HTTP/2 probing.
var DefaultLoads = []string{LoadWatchdog, LoadKubelet, LoadLvscare, LoadWatchdogH2Prefix + probe.DefaultReadyEvery.String()}

// kubeletRenew is how often the kubelet renews its Lease; lvscareEvery
// how often lvscare checks a master.
const (
	kubeletRenew = 10 * time.Second
	lvscareEvery = 5 * time.Second
)

// watchdogTimeout is `vipctl care`'s default --timeout at the default
// 1 s interval (80 % of it, at most 800 ms).
const watchdogTimeout = 800 * time.Millisecond

// node is one simulated node: its name and client certificate.
type node struct {
	name            string
	cert            tls.Certificate
	certPEM, keyPEM []byte
}

// meter counts a load's requests and failures.
type meter struct {
	requests, errors atomic.Int64
	mu               sync.Mutex
	lastErr          string
	// tl, when not nil, counts the requests per bin of time at send time.
	tl *timeline
}

// sending counts a request about to be sent, in the timeline if any.
func (m *meter) sending() { m.tl.sent(time.Now()) }

func (m *meter) done(err error) {
	m.requests.Add(1)
	if err != nil {
		m.tl.failed(time.Now())
		m.errors.Add(1)
		m.mu.Lock()
		m.lastErr = err.Error()
		m.mu.Unlock()
	}
}

func (m *meter) last() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// env is what a load needs to reach the apiserver.
type env struct {
	target netip.AddrPort
	srv    *server
	conns  *connTracker
}

// loadFunc runs one node's share of a load until ctx ends.
type loadFunc func(ctx context.Context, e *env, n *node, m *meter)

// validLoad tells whether name is a load the harness knows.
func validLoad(name string) error {
	switch {
	case name == LoadWatchdog, name == LoadKubelet, name == LoadLvscare:
		return nil
	case strings.HasPrefix(name, LoadGetPrefix) && strings.HasPrefix(strings.TrimPrefix(name, LoadGetPrefix), "/"):
		return nil
	case strings.HasPrefix(name, LoadWatchdogH2Prefix):
		if d, err := time.ParseDuration(strings.TrimPrefix(name, LoadWatchdogH2Prefix)); err == nil && d >= 0 {
			return nil
		}
	}
	return fmt.Errorf("load %q: want %s, %s, %s, %sDURATION or %s/PATH", name, LoadWatchdog, LoadKubelet, LoadLvscare, LoadWatchdogH2Prefix, LoadGetPrefix)
}

func loadOf(name string) loadFunc {
	switch {
	case name == LoadWatchdog:
		return watchdogLoad
	case name == LoadKubelet:
		return kubeletLoad
	case name == LoadLvscare:
		return lvscareLoad
	case strings.HasPrefix(name, LoadWatchdogH2Prefix):
		every, _ := time.ParseDuration(strings.TrimPrefix(name, LoadWatchdogH2Prefix))
		return func(ctx context.Context, e *env, n *node, m *meter) {
			runWatchdog(ctx, e, n, m, func(c *probe.Config) {
				c.HTTP2, c.ReadyEvery, c.ReuseFor = true, every, h2ReuseFor
			})
		}
	default:
		path := strings.TrimPrefix(name, LoadGetPrefix)
		return func(ctx context.Context, e *env, n *node, m *meter) { getLoad(ctx, e, n, m, path) }
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// h2ReuseFor is how long the watchdog-h2 loads keep their connection.
const h2ReuseFor = probe.DefaultHTTP2ReuseFor

// watchdogLoad runs the watchdog's probing of one master at `vipctl
// care`'s defaults: a probe on the health package's schedule (interval and
// jitter) and the sentinel.
func watchdogLoad(ctx context.Context, e *env, n *node, m *meter) { runWatchdog(ctx, e, n, m, nil) }

// runWatchdog runs the watchdog's probing at `vipctl care`'s defaults,
// changed by tune.
func runWatchdog(ctx context.Context, e *env, n *node, m *meter, tune func(*probe.Config)) {
	cfg := probe.Config{Scheme: probe.HTTPS, Path: careconfig.DefaultHealthPath, Statuses: []int{http.StatusOK},
		Timeout: watchdogTimeout, TLS: probe.TLSConfig(e.srv.caPool, []tls.Certificate{n.cert}, false),
		UserAgent: "vipctl-care/fleet", ReuseFor: careconfig.DefaultProbeReuse}
	if tune != nil {
		tune(&cfg)
	}
	p, err := probe.New(cfg)
	if err != nil {
		m.done(err)
		return
	}
	defer p.Close()
	hc := health.DefaultConfig()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for ctx.Err() == nil {
			est, err := p.Hold(ctx, e.target, nil)
			if ctx.Err() != nil {
				return
			}
			if !est {
				m.done(fmt.Errorf("sentinel: %w", err))
				if !sleep(ctx, hc.Interval) {
					return
				}
			}
		}
	})
	// As the watchdog does: the first probe at once, each next one
	// health.Tracker.NextProbe after the last answer.
	tr, err := health.NewTracker(hc, []netip.AddrPort{e.target})
	if err != nil {
		m.done(err)
		return
	}
	for {
		m.sending()
		r := p.Probe(ctx, e.target)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		tr.Observe(e.target, health.Outcome{OK: r.OK, Fast: r.Fast, Status: r.Status, Reason: r.Reason, Latency: r.Latency,
			Retransmitted: r.Retransmits > 0}, now)
		if !r.OK {
			m.done(fmt.Errorf("probe: %s", r.Reason))
		} else {
			m.done(nil)
		}
		if !sleep(ctx, tr.NextProbe(e.target, rand.Float64())) {
			return
		}
	}
}

// kubeletLoad renews the node's Lease every 10 s as the kubelet's lease
// controller does: one update of the cached lease, a get only after a
// conflict. The client speaks protobuf over HTTP/2 on one connection.
func kubeletLoad(ctx context.Context, e *env, n *node, m *meter) {
	cfg := &rest.Config{
		Host:            "https://" + e.target.String(),
		TLSClientConfig: rest.TLSClientConfig{CAData: e.srv.caPEM, CertData: n.certPEM, KeyData: n.keyPEM},
		ContentConfig:   rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf"},
		UserAgent:       "kubelet/fleet",
		QPS:             50, Burst: 100,
		Timeout: 10 * time.Second,
		Dial:    e.conns.dial,
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		m.done(err)
		return
	}
	leases := cs.CoordinationV1().Leases("kube-node-lease")
	dur := int32(40)
	var cur *coordinationv1.Lease
	for {
		now := metav1.NewMicroTime(time.Now())
		var l *coordinationv1.Lease
		m.sending()
		if cur == nil {
			l, err = leases.Get(ctx, n.name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				l, err = leases.Create(ctx, &coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: "kube-node-lease"},
					Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.name, LeaseDurationSeconds: &dur, RenewTime: &now},
				}, metav1.CreateOptions{})
			}
		} else {
			l = cur.DeepCopy()
			l.Spec.RenewTime = &now
			l, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if ctx.Err() != nil {
			return
		}
		m.done(err)
		if err != nil {
			cur = nil
		} else {
			cur = l
		}
		if !sleep(ctx, kubeletRenew) {
			return
		}
	}
}

// lvscareLoad is lvscare's health check of one master: every 5 s a new
// client and TLS connection (lvscare does not verify the certificate and
// keeps no session cache), one GET of /healthz, the connection closed.
func lvscareLoad(ctx context.Context, e *env, n *node, m *meter) {
	for sleep(ctx, lvscareEvery) {
		m.sending()
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{n.cert}},
			DisableKeepAlives: true, DialContext: e.conns.dial}
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+e.target.String()+"/healthz", nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("/healthz: HTTP %d", resp.StatusCode)
			}
		}
		tr.CloseIdleConnections()
		if ctx.Err() != nil {
			return
		}
		m.done(err)
	}
}

// getLoad GETs path once a second over one kept-alive HTTP/1.1
// connection: the cost of a health path on its own.
func getLoad(ctx context.Context, e *env, n *node, m *meter, path string) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.srv.caPool, Certificates: []tls.Certificate{n.cert}},
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DialContext: e.conns.dial}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: watchdogTimeout}
	for sleep(ctx, time.Second) {
		m.sending()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+e.target.String()+path, nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
			}
		}
		if ctx.Err() != nil {
			return
		}
		m.done(err)
	}
}

// connTracker dials and remembers the connections, so that a load's end
// closes them all (client-go keeps its own).
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newConnTracker() *connTracker { return &connTracker{conns: map[net.Conn]struct{}{}} }

func (t *connTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	all := slices.Collect(func(yield func(net.Conn) bool) {
		for c := range t.conns {
			if !yield(c) {
				return
			}
		}
	})
	t.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
