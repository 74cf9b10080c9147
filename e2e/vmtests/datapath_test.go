package vmtests

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// paths are the three ways a node can reach the apiservers that the
// data-path benchmark compares, in the same VM and run.
func paths(l *lab.Lab) []struct{ name, addr string } {
	return []struct{ name, addr string }{
		{"direct", l.Masters[0].Addr.String()},
		{"vip", lab.VIPPort.String()},
		{"nginx", lab.NginxAddr},
	}
}

func tlsConfig(t *testing.T, l *lab.Lab) *tls.Config {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(l.CAFile)
	require.NoError(t, err)
	pool.AppendCertsFromPEM(b)
	return &tls.Config{RootCAs: pool}
}

// newConnsPerSecond opens, for d, new TLS connections to addr one after the
// other, each making one request, and returns how many completed per second.
func newConnsPerSecond(t *testing.T, cfg *tls.Config, addr string, d time.Duration) float64 {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext}}
	n, start := 0, time.Now()
	for time.Since(start) < d {
		resp, err := c.Get("https://" + addr + "/")
		require.NoError(t, err, addr)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// requestLatencies makes n requests on one kept-alive connection to addr
// and returns their durations in milliseconds.
func requestLatencies(t *testing.T, cfg *tls.Config, addr string, n int) []float64 {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1}}
	out := make([]float64, 0, n)
	for i := range n + 10 {
		s := time.Now()
		resp, err := c.Get("https://" + addr + "/")
		require.NoError(t, err, addr)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i >= 10 { // the first requests warm the connection up
			out = append(out, float64(time.Since(s).Microseconds())/1000)
		}
	}
	return out
}

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestBenchDataPath compares the three paths in rounds (direct, VIP, nginx,
// again and again, the order rotating each round) so that drift in the
// emulated machine hits all alike. Each round also records each path's
// figures over the direct path's of the same round: paired ratios, whose
// median cancels the drift that ratios of whole-run medians keep.
func TestBenchDataPath(t *testing.T) {
	trials := benchTrials(t)
	l := lab.New(t, 3)
	l.StartNginx()
	l.StartCare()
	lab.WaitFor(t, 10*time.Second, "all in", allServing(l))
	cfg := tlsConfig(t, l)
	ps := paths(l)
	for round := range trials {
		type figures struct{ cps, p50, p99 float64 }
		got := map[string]figures{}
		for i := range ps {
			p := ps[(round+i)%len(ps)]
			cps := newConnsPerSecond(t, cfg, p.addr, 1500*time.Millisecond)
			lat := requestLatencies(t, cfg, p.addr, 100)
			f := figures{cps, quantile(lat, 0.5), quantile(lat, 0.99)}
			got[p.name] = f
			lab.RecordValue(t, "datapath_new_tls_conns_"+p.name, f.cps, "conns/s")
			lab.RecordValue(t, "datapath_request_p50_"+p.name, f.p50, "ms")
			lab.RecordValue(t, "datapath_request_p99_"+p.name, f.p99, "ms")
		}
		d := got["direct"]
		for _, name := range []string{"vip", "nginx"} {
			f := got[name]
			lab.RecordValue(t, "datapath_paired_new_tls_conns_"+name+"_over_direct", f.cps/d.cps, "ratio")
			lab.RecordValue(t, "datapath_paired_request_p50_"+name+"_over_direct", f.p50/d.p50, "ratio")
		}
	}
}
