package fleet

import (
	"bufio"
	"bytes"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCountEstablished(t *testing.T) {
	// Two established connections to :6443 (0x192B), one in TIME_WAIT,
	// the listener, and a client connection from port 6443 elsewhere.
	in := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 01090A0A:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 01090A0A:192B 01090A0A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 01090A0A:192B 01090A0A:A1B3 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 01090A0A:192B 01090A0A:A1B4 06 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 01090A0A:A1B5 01090A0A:192B 01 00000000:00000000 00:00000000 00000000     0        0 5 1
`
	n, err := countEstablished(bufio.NewScanner(strings.NewReader(in)), 6443)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}

func TestProcReadsThisProcess(t *testing.T) {
	c, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	c2, err := cpuSeconds(os.Getpid())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, c2, c)
	rss, err := rssMB(os.Getpid())
	require.NoError(t, err)
	assert.Greater(t, rss, 1.0, "a Go test binary's RSS is more than 1 MB")
}

func TestFitAndRatio(t *testing.T) {
	r := &Result{Window: time.Second}
	for _, n := range []int{100, 200, 400} {
		r.Samples = append(r.Samples,
			Sample{Load: LoadWatchdog, Nodes: n, Cores: 0.01 + 0.002*float64(n)},
			Sample{Load: LoadKubelet, Nodes: n, Cores: 0.001 * float64(n)})
	}
	f := fit(r.of(LoadWatchdog), func(s Sample) float64 { return s.Cores })
	assert.InDelta(t, 0.002, f.B, 1e-9)
	assert.InDelta(t, 0.01, f.A, 1e-9)
	per, slope, ok := r.Ratio()
	require.True(t, ok)
	assert.InDelta(t, 2.0, slope, 1e-9)
	assert.InDelta(t, (0.01+0.2)/0.1, per[100], 1e-9)
	md := r.Markdown()
	assert.Contains(t, md, "`fleet_ratio`")
	assert.Contains(t, md, "**2.00**")

	var buf bytes.Buffer
	require.NoError(t, r.Chart(&buf))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	assert.Positive(t, img.Bounds().Dx())
}

func TestRatioNeedsBothLoads(t *testing.T) {
	r := &Result{Samples: []Sample{{Load: LoadWatchdog, Nodes: 10, Cores: 1}}}
	_, _, ok := r.Ratio()
	assert.False(t, ok)
	assert.NotContains(t, r.Markdown(), "fleet_ratio")
	assert.False(t, math.IsNaN(fit(r.Samples, func(s Sample) float64 { return s.Cores }).B))
}

func TestOptionsRejectUnknownLoad(t *testing.T) {
	o := Options{Dir: t.TempDir(), Sizes: []int{10}, Loads: []string{"watchdog", "nonsense"}}
	err := o.defaults()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"nonsense"`)
	o = Options{Dir: t.TempDir(), Sizes: []int{0}}
	assert.ErrorContains(t, o.defaults(), "size 0")
	o = Options{Dir: t.TempDir(), Sizes: []int{5}, Loads: []string{"get:/livez", "watchdog-h2:2s", "watchdog-h2:0s"}}
	assert.NoError(t, o.defaults())
	o = Options{Dir: t.TempDir(), Sizes: []int{5}, Loads: []string{"watchdog-h2:soon"}}
	assert.ErrorContains(t, o.defaults(), `"watchdog-h2:soon"`)
}

func TestLinesRoundTrip(t *testing.T) {
	r := &Result{IdleCores: 0.02, IdleRSSMB: 250, Samples: []Sample{
		{Load: LoadWatchdog, Nodes: 250, Cores: 0.12, RSSMB: 36, Conns: 250, ClientCores: 0.07, Requests: 4692},
		{Load: LoadKubelet, Nodes: 250, Cores: 0.046, RSSMB: 21, Conns: 250, ClientCores: 0.01, Requests: 500, Errors: 1},
	}}
	got, err := ParseLines(strings.NewReader("noise\n"+r.Lines()), r.Start, r.Version, r.Window)
	require.NoError(t, err)
	assert.Equal(t, r.Samples, got.Samples)
	assert.InDelta(t, r.IdleCores, got.IdleCores, 1e-9)
	_, err = ParseLines(strings.NewReader("nothing"), r.Start, "", 0)
	assert.Error(t, err)
}
