package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/probe/probetest"
)

// h2Server is an HTTPS stand-in that speaks HTTP/2 (when h2) and a prober
// sharing one HTTP/2 connection per master, with a GET at most every
// minute.
func h2Server(t *testing.T, h2 bool) (*server, *Prober, *probetest.CA) {
	t.Helper()
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1", func(s *server) { s.EnableHTTP2 = h2 })
	p := h2Prober(t, ca, time.Second)
	return srv, p, ca
}

func h2Prober(t *testing.T, ca *probetest.CA, timeout time.Duration) *Prober {
	t.Helper()
	p := newProber(t, Config{Scheme: HTTPS, TLS: TLSConfig(ca.Pool(), nil, false), HTTP2: true, ReadyEvery: time.Minute, Timeout: timeout})
	t.Cleanup(p.Close)
	return p
}

// warm probes target until PINGs may begin: pingsAfter healthy GETs.
func warm(t *testing.T, p *Prober, target netip.AddrPort) {
	t.Helper()
	for range pingsAfter {
		r := p.Probe(context.Background(), target)
		require.True(t, r.OK, r.Reason)
		require.NotContains(t, r.Reason, "PING", "a GET until the connection answered healthy twice")
	}
}

type holdResult struct {
	established bool
	err         error
}

// hold runs p.Hold on target and returns once it is established.
func hold(t *testing.T, ctx context.Context, p *Prober, target netip.AddrPort) <-chan holdResult {
	t.Helper()
	done := make(chan holdResult, 1)
	var idle atomic.Bool
	go func() {
		e, err := p.Hold(ctx, target, func() { idle.Store(true) })
		done <- holdResult{e, err}
	}()
	require.Eventually(t, idle.Load, 5*time.Second, time.Millisecond, "Hold established")
	return done
}

func notReturned(t *testing.T, done <-chan holdResult) {
	t.Helper()
	select {
	case r := <-done:
		t.Fatalf("Hold returned: %+v", r)
	default:
	}
}

func returned(t *testing.T, done <-chan holdResult) holdResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Hold did not return")
		return holdResult{}
	}
}

// The probes and the sentinel of a master share one connection; between
// two GETs a probe is a PING, which no handler answers.
func TestHTTP2ProbesAndHoldShareOneConnection(t *testing.T) {
	srv, p, _ := h2Server(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	warm(t, p, srv.target)
	done := hold(t, ctx, p, srv.target)
	for range 3 {
		r := p.Probe(ctx, srv.target)
		require.True(t, r.OK, r.Reason)
		assert.Contains(t, r.Reason, "PING")
		assert.Equal(t, 200, r.Status)
	}
	assert.Equal(t, int64(1), srv.conns.Load(), "one connection for probes and sentinel")
	assert.Equal(t, int64(pingsAfter), srv.requests.Load(), "the first GETs, then PINGs")
	notReturned(t, done)
	cancel()
	assert.ErrorIs(t, returned(t, done).err, context.Canceled)
}

// Once ReadyEvery has passed since the last healthy GET, the next probe is
// a GET again, on the same connection.
func TestHTTP2ReadinessGETRepeats(t *testing.T) {
	srv, p, _ := h2Server(t, true)
	now := time.Now()
	p.now = func() time.Time { return now }
	warm(t, p, srv.target)
	now = now.Add(59 * time.Second)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(pingsAfter), srv.requests.Load())
	now = now.Add(time.Second)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, int64(pingsAfter+1), srv.requests.Load(), "ReadyEvery passed: a GET")
	assert.Equal(t, int64(1), srv.conns.Load())
}

// An unhealthy answer is not followed by PINGs: each probe GETs until the
// master answers healthy again.
func TestHTTP2UnhealthyAnswerIsProbedByGET(t *testing.T) {
	srv, p, _ := h2Server(t, true)
	warm(t, p, srv.target)
	srv.status.Store(500)
	srv.body.Store("[-]etcd failed: reason withheld\n")
	// The first probe after the change is still within ReadyEvery: a PING.
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	p.now = func() time.Time { return time.Now().Add(time.Minute) }
	for range 2 {
		r := p.Probe(context.Background(), srv.target)
		assert.False(t, r.OK)
		assert.True(t, r.Fast)
		assert.Equal(t, 500, r.Status)
		assert.Contains(t, r.Reason, "[-]etcd failed")
	}
	p.now = time.Now
	srv.status.Store(200)
	r := p.Probe(context.Background(), srv.target)
	require.True(t, r.OK, r.Reason)
	assert.Equal(t, int64(pingsAfter+3), srv.requests.Load(), "every probe after the unhealthy answer was a GET")
}

// A killed apiserver closes the shared connection: the sentinel returns
// at once, and the next probe fails fast (its new connection is refused).
func TestHTTP2KillIsSeenOnTheSharedConnection(t *testing.T) {
	srv, p, _ := h2Server(t, true)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	done := hold(t, context.Background(), p, srv.target)
	srv.Listener.Close()
	srv.CloseClientConnections()
	r := returned(t, done)
	assert.True(t, r.established)
	assert.Error(t, r.err)
	pr := p.Probe(context.Background(), srv.target)
	assert.False(t, pr.OK)
	assert.True(t, pr.Fast, pr.Reason)
	assert.Equal(t, "connection refused", pr.Reason)
}

// A connection the server closed while idle is replaced within the probe.
func TestHTTP2ConnectionClosedWhileIdleIsReplaced(t *testing.T) {
	srv, p, _ := h2Server(t, true)
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	srv.CloseClientConnections()
	require.Eventually(t, func() bool { s, _ := p.current(srv.target); return s == nil }, 5*time.Second, time.Millisecond)
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, int64(2), srv.conns.Load())
	assert.Equal(t, int64(2), srv.requests.Load(), "a fresh connection starts with a GET")
}

// A PING on a connection whose packets vanish (a cut link) times out: a
// slow failure. The sentinel does not return (its connection would not
// have ended either) and follows the next connection once the link is back.
func TestHTTP2PingOnBlackholedConnectionTimesOut(t *testing.T) {
	srv, _, ca := h2Server(t, true)
	bh := newBlackhole(t, srv.target)
	p := h2Prober(t, ca, time.Second)
	warm(t, p, bh.target)
	done := hold(t, context.Background(), p, bh.target)
	require.Contains(t, p.Probe(context.Background(), bh.target).Reason, "PING")
	bh.cut.Store(true)
	r := p.Probe(context.Background(), bh.target)
	assert.False(t, r.OK)
	assert.False(t, r.Fast, "a silent master is not a definitive answer")
	assert.Contains(t, r.Reason, "timeout")
	// The next probe opens a new connection, which the cut link lets
	// through to the accept but answers nothing: a timeout again.
	r = p.Probe(context.Background(), bh.target)
	assert.False(t, r.OK)
	assert.False(t, r.Fast)
	notReturned(t, done)
	bh.cut.Store(false)
	r = p.Probe(context.Background(), bh.target)
	require.True(t, r.OK, r.Reason)
	assert.Never(t, func() bool { return len(done) > 0 }, 100*time.Millisecond, time.Millisecond, "Hold returned while the new connection lives")
	srv.CloseClientConnections()
	hr := returned(t, done)
	assert.True(t, hr.established)
	assert.Error(t, hr.err)
}

// A server without HTTP/2 is probed and held over HTTP/1.1, as without
// the option.
func TestHTTP2FallsBackToHTTP1(t *testing.T) {
	srv, p, _ := h2Server(t, false)
	for range 2 {
		r := p.Probe(context.Background(), srv.target)
		require.True(t, r.OK, r.Reason)
		assert.NotContains(t, r.Reason, "PING")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := hold(t, ctx, p, srv.target)
	srv.CloseClientConnections()
	r := returned(t, done)
	assert.True(t, r.established)
	assert.Error(t, r.err)
	cancel()
}

// A connection the prober replaces for its age (ReuseFor) does not end
// the sentinel: it follows the new connection.
func TestHTTP2HoldFollowsARetiredConnection(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srv := newServer(t, ca, nil, "127.0.0.1", func(s *server) { s.EnableHTTP2 = true })
	p := newProber(t, Config{Scheme: HTTPS, TLS: TLSConfig(ca.Pool(), nil, false), HTTP2: true, ReadyEvery: time.Minute, ReuseFor: 10 * time.Minute})
	t.Cleanup(p.Close)
	var mu sync.Mutex
	now := time.Now()
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	done := hold(t, context.Background(), p, srv.target)
	mu.Lock()
	now = now.Add(10 * time.Minute)
	mu.Unlock()
	r := p.Probe(context.Background(), srv.target)
	require.True(t, r.OK, r.Reason)
	assert.Equal(t, int64(2), srv.conns.Load(), "the old connection was replaced")
	assert.Equal(t, int64(2), srv.requests.Load(), "a new connection starts with a GET")
	assert.Never(t, func() bool { return len(done) > 0 }, 100*time.Millisecond, time.Millisecond, "Hold returned when its connection was replaced")
	srv.CloseClientConnections()
	hr := returned(t, done)
	assert.True(t, hr.established)
}

// blackhole is a TCP proxy to a server that can be cut: it then drops
// every byte in both directions without closing anything.
type blackhole struct {
	target netip.AddrPort
	cut    atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newBlackhole(t *testing.T, backend netip.AddrPort) *blackhole {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &blackhole{target: netip.MustParseAddrPort(l.Addr().String())}
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", backend.String())
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, s)
			b.mu.Unlock()
			go b.pipe(s, c)
			go b.pipe(c, s)
		}
	}()
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) || !b.cut.Load() {
				dst.Close()
			}
			return
		}
	}
}
