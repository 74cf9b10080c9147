package care

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/care/probe/probetest"
)

// loopbackProber sends the probes of each master to a stand-in on
// 127.0.0.1: masters cannot be loopback addresses themselves, and tests
// talk to nothing else.
type loopbackProber struct {
	p  *probe.Prober
	to map[netip.AddrPort]netip.AddrPort
}

func (l loopbackProber) Probe(ctx context.Context, m netip.AddrPort) probe.Result {
	return l.p.Probe(ctx, l.to[m])
}

func (l loopbackProber) Hold(ctx context.Context, m netip.AddrPort, idle func()) (bool, error) {
	return l.p.Hold(ctx, l.to[m], idle)
}

// apiserver is a stand-in kube-apiserver on 127.0.0.1; idle counts the
// connections that went idle (only a kept-alive one does: probes ask the
// server to close).
func apiserver(t *testing.T, ca *probetest.CA) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	pair, _, _ := ca.Issue(t, "kube-apiserver", false, "127.0.0.1")
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	idle := &atomic.Int64{}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateIdle {
			idle.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s, idle
}

// With the default timing (interval 1s, fall 2), a killed apiserver is out
// well within a second: the sentinel connection closes at once, the probe
// that follows is refused, and so is the fast retry.
func TestKilledAPIServerOutWithinASecond(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	srvA, idleA := apiserver(t, ca)
	srvB, _ := apiserver(t, ca)
	p, err := probe.New(probe.Config{Scheme: probe.HTTPS, Path: "/readyz", Statuses: []int{200},
		Timeout: 900 * time.Millisecond, TLS: probe.TLSConfig(ca.Pool(), nil, false)})
	require.NoError(t, err)
	lp := loopbackProber{p: p, to: map[netip.AddrPort]netip.AddrPort{
		mA: netip.MustParseAddrPort(srvA.Listener.Addr().String()),
		mB: netip.MustParseAddrPort(srvB.Listener.Addr().String()),
	}}
	cfg := testConfig(mA, mB)
	cfg.Timeout = 900 * time.Millisecond
	r := newRig(t, cfg, func(d *Deps) { d.Prober, d.Sentinel = lp, lp })
	r.run(t)
	require.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, r.weights())
	require.Eventually(t, func() bool { return idleA.Load() > 0 }, 5*time.Second, time.Millisecond, "the sentinel connection is held")

	start := time.Now()
	srvA.Close() // the apiserver process dies: listener and connections closed
	require.Eventually(t, func() bool { return r.weights()[mA] == 0 }, 5*time.Second, time.Millisecond)
	took := time.Since(start)
	t.Logf("killed apiserver out after %s", took)
	assert.Less(t, took, time.Second)
	assert.Equal(t, 1, r.weights()[mB])
}

// The sentinel's redial wait: kube-apiserver ends an idle connection after
// ~90 s, which is a kept connection however long the probe interval; only
// short sessions and failed dials back off.
func TestSentinelBackoff(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		prev, interval, heldFor time.Duration
		established             bool
		want                    time.Duration
	}{
		{"idle timeout, 1 s interval", time.Second, time.Second, 90 * time.Second, true, time.Second},
		{"idle timeout, 10 s interval (a slow machine's)", 40 * time.Second, 10 * time.Second, 90 * time.Second, true, 10 * time.Second},
		{"a server that closes at once", time.Second, time.Second, 2 * time.Second, true, 2 * time.Second},
		{"a short session, 10 s interval", 10 * time.Second, 10 * time.Second, 5 * time.Second, true, 20 * time.Second},
		{"a failed dial", 4 * time.Second, time.Second, 0, false, 8 * time.Second},
		{"capped", 4 * time.Minute, time.Second, 0, false, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, sentinelBackoff(tc.prev, tc.interval, tc.heldFor, tc.established))
		})
	}
}
