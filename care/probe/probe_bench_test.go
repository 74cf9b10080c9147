package probe

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// benchProbe probes an HTTPS stand-in on 127.0.0.1 (httptest's certificate,
// verified) b.N times with the given reuse, as the watchdog does at its
// defaults. The server's side runs in the same process and is counted too.
func benchProbe(b *testing.B, reuseFor time.Duration) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	p, err := New(Config{Scheme: HTTPS, Path: "/readyz", Statuses: []int{200}, Timeout: time.Second,
		TLS: TLSConfig(roots, nil, false), ReuseFor: reuseFor})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	target := netip.MustParseAddrPort(srv.Listener.Addr().String())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := p.Probe(ctx, target); !r.OK {
			b.Fatalf("probe failed: %s", r.Reason)
		}
	}
}

// BenchmarkProbeKept is a probe on the connection kept from the last
// healthy answer: most probes at the default --probe-reuse.
func BenchmarkProbeKept(b *testing.B) { benchProbe(b, 10*time.Second) }

// BenchmarkProbeResumed is a probe on a new connection with a resumed TLS
// session: one probe per master every --probe-reuse.
func BenchmarkProbeResumed(b *testing.B) { benchProbe(b, 0) }
