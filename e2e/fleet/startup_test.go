package fleet

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPeakToMean(t *testing.T) {
	// One period of 10 bins per row: all in one bin, even, half the bins.
	bins := []int64{
		0, 0, 50, 0, 0, 0, 0, 0, 0, 0,
		5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
		10, 0, 10, 0, 10, 0, 10, 0, 10, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 2, // an incomplete period is left out
	}
	got := peakToMean(bins, 10)
	require.Len(t, got, 4)
	assert.InDelta(t, 10.0, got[0], 1e-9)
	assert.InDelta(t, 1.0, got[1], 1e-9)
	assert.InDelta(t, 2.0, got[2], 1e-9)
	assert.Zero(t, got[3], "a period without requests")
}

func TestSettledAfter(t *testing.T) {
	for _, c := range []struct {
		name   string
		ratios []float64
		want   int
		ok     bool
	}{
		{"settles at the third", []float64{10, 3, 1.2, 1.1, 1.3}, 2, true},
		{"a relapse counts", []float64{10, 1.2, 3, 1.1, 1.3}, 3, true},
		{"spread from the start", []float64{1.1, 1.2}, 0, true},
		{"never", []float64{10, 9, 8}, 3, false},
		{"the last is above", []float64{1.1, 1.2, 1.6}, 3, false},
		{"empty", nil, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			i, ok := settledAfter(c.ratios, 1.5)
			assert.Equal(t, c.ok, ok)
			assert.Equal(t, c.want, i)
		})
	}
}

func TestTimelineCountsPerBin(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	tl := newTimeline(t0, 100*time.Millisecond, time.Second)
	require.Len(t, tl.bins, 10)
	for _, at := range []time.Duration{0, 50 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond, 950 * time.Millisecond,
		time.Second, -time.Millisecond} { // the last two are outside the span
		tl.sent(t0.Add(at))
	}
	assert.Equal(t, []int64{3, 1, 0, 0, 0, 0, 0, 0, 0, 1}, tl.counts())
	tl.failed(t0.Add(250 * time.Millisecond))
	assert.Equal(t, []int64{0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, tl.failures(), "failures are counted apart")
	var none *timeline
	none.sent(t0) // a meter without a timeline counts nothing, and does not panic
	none.failed(t0)
}

func TestStartDelay(t *testing.T) {
	var asked []int64
	rnd := func(n int64) int64 { asked = append(asked, n); return n - 1 }
	assert.Zero(t, startDelay(0, rnd), "all at once")
	assert.Empty(t, asked, "no draw when all start at once")
	assert.Equal(t, time.Second-1, startDelay(time.Second, rnd))
	assert.Equal(t, []int64{int64(time.Second)}, asked, "drawn below the spread")
}

func TestStartLoadRunsEveryNodeUntilStopped(t *testing.T) {
	e := &env{conns: newConnTracker()}
	nodes := make([]*node, 50)
	for i := range nodes {
		nodes[i] = &node{name: "n"}
	}
	var running, ended atomic.Int64
	stop := startLoadWith(context.Background(), e, func(ctx context.Context, _ *env, _ *node, _ *meter) {
		running.Add(1)
		<-ctx.Done()
		ended.Add(1)
	}, nodes, 0, &meter{})
	require.Eventually(t, func() bool { return running.Load() == int64(len(nodes)) }, 10*time.Second, time.Millisecond)
	stop()
	assert.Equal(t, int64(len(nodes)), ended.Load(), "stop returns once every node's load has ended")
}

func TestStartupMarkdown(t *testing.T) {
	sends := make([]int64, 30)
	sends[0] = 100 // all at once in the first period, then spread
	for i := 10; i < 30; i++ {
		sends[i] = 10
	}
	r := &Result{Startups: []Startup{{Load: LoadWatchdog, Nodes: 100, Period: time.Second, Bin: 100 * time.Millisecond,
		Sends: sends, Cores: []float64{0.5, 0.1, 0.1}}}}
	md := r.StartupMarkdown()
	assert.Contains(t, md, "| watchdog | 100 | 0s | 10.0 1.0 1.0 | 2 (1s) | 0.50 0.10 0.10 | 2.14 |")
	assert.Contains(t, md, "| watchdog | 100 | 0s | 10.0 | 1.0 | 1.0 | - | - | - | 0 | 0 | 0 |", "the stages the timeline has, averaged")
	lines := r.StartupLines()
	assert.True(t, strings.HasPrefix(lines, "STARTUP watchdog 100 0s 1s 100ms\nSENDS 100 0"), lines)
}

func TestMeanPeakToMean(t *testing.T) {
	sends := make([]int64, 40)
	sends[0], sends[10] = 100, 50 // 10 and 10
	for i := 20; i < 40; i++ {
		sends[i] = 10 // 1 and 1
	}
	s := Startup{Sends: sends}
	v, ok := s.MeanPeakToMean(1, 2)
	require.True(t, ok)
	assert.InDelta(t, 10.0, v, 1e-9)
	v, ok = s.MeanPeakToMean(2, 3)
	require.True(t, ok)
	assert.InDelta(t, 5.5, v, 1e-9)
	v, ok = s.MeanPeakToMean(3, 30)
	require.True(t, ok)
	assert.InDelta(t, 1.0, v, 1e-9, "cut to the periods the timeline has")
	_, ok = s.MeanPeakToMean(5, 30)
	assert.False(t, ok, "no period in the span")
}

func TestFailedIn(t *testing.T) {
	f := make([]int64, 40)
	f[0], f[9], f[10], f[29], f[30] = 1, 2, 4, 8, 16
	s := Startup{Failures: f}
	assert.Equal(t, int64(3), s.FailedIn(1, 1))
	assert.Equal(t, int64(15), s.FailedIn(1, 3))
	assert.Equal(t, int64(24), s.FailedIn(3, 10), "cut to the periods the timeline has")
}

func TestOptionsStartSpreads(t *testing.T) {
	o := Options{Dir: "x", Sizes: []int{1}}
	require.NoError(t, o.defaults())
	assert.Equal(t, []time.Duration{time.Second}, o.StartSpreads, "the default spread is unchanged")
	o = Options{Dir: "x", Sizes: []int{1}, StartSpreads: []time.Duration{time.Second, 0}}
	assert.ErrorContains(t, o.defaults(), "start spreads")
	o.Startup = 30 * time.Second
	assert.NoError(t, o.defaults())
	o.StartSpreads = []time.Duration{-time.Second}
	assert.ErrorContains(t, o.defaults(), "start spread -1s")
}
