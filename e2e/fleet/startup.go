package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipctl/vipctl/care/health"
)

// SettledBelow is the peak/mean ratio under which a load's requests count
// as spread over its period (Startup.SettledAfter).
const SettledBelow = 1.5

// periodBins is how many bins one period of a load is cut into.
const periodBins = 10

// Startup is how one load's requests spread in time after its nodes
// started: what a fleet that restarts at once (StartSpread 0) costs the
// apiserver in its first seconds, against one whose nodes start spread.
type Startup struct {
	Load        string
	Nodes       int
	StartSpread time.Duration
	// Period is the load's steady period (a watchdog probe's interval, a
	// lease's renewal), Bin a tenth of it.
	Period, Bin time.Duration
	// Sends are the requests the nodes sent in each Bin since the start,
	// counted at send time.
	Sends []int64
	// Cores are the apiserver's CPU above idle in each second since the
	// start.
	Cores []float64
	// Requests and Errors are the load's requests over the span and how
	// many failed.
	Requests, Errors int64
	// Failures are the failed requests per Bin, counted when they failed.
	Failures []int64
}

// FailedIn is the failures in periods first to last (counted from 1).
func (s Startup) FailedIn(first, last int) int64 {
	var n int64
	for i := max(first-1, 0) * periodBins; i < last*periodBins && i < len(s.Failures); i++ {
		n += s.Failures[i]
	}
	return n
}

// Stages are the spans of periods (first and last, counted from 1) over
// which StartupMarkdown averages PeakToMean.
var Stages = [][2]int{{1, 1}, {2, 2}, {3, 5}, {6, 10}, {11, 20}, {21, 30}}

// MeanPeakToMean is PeakToMean averaged over periods first to last
// (counted from 1), and false when the timeline has none of them.
func (s Startup) MeanPeakToMean(first, last int) (float64, bool) {
	pm := s.PeakToMean()
	last = min(last, len(pm))
	if first < 1 || first > last {
		return 0, false
	}
	var sum float64
	for _, v := range pm[first-1 : last] {
		sum += v
	}
	return sum / float64(last-first+1), true
}

// PeakToMean is, for each period since the start, the busiest bin's
// requests over the period's mean per bin: 1 for requests spread evenly
// over the period, periodBins when they all fall in one bin. A period
// with no request has 0.
func (s Startup) PeakToMean() []float64 { return peakToMean(s.Sends, periodBins) }

// SettledAfter is the first period from which every period's PeakToMean
// stays below limit, and false when the last one does not.
func (s Startup) SettledAfter(limit float64) (int, bool) { return settledAfter(s.PeakToMean(), limit) }

func peakToMean(bins []int64, per int) []float64 {
	var out []float64
	for i := 0; i+per <= len(bins); i += per {
		p := bins[i : i+per]
		var sum int64
		for _, v := range p {
			sum += v
		}
		if sum == 0 {
			out = append(out, 0)
			continue
		}
		out = append(out, float64(slices.Max(p))*float64(per)/float64(sum))
	}
	return out
}

func settledAfter(ratios []float64, limit float64) (int, bool) {
	i := len(ratios)
	for i > 0 && ratios[i-1] < limit {
		i--
	}
	return i, i < len(ratios)
}

// timeline counts requests per bin from a start, at send time, and
// failures at the time they are known.
type timeline struct {
	start       time.Time
	bin         time.Duration
	bins, fails []atomic.Int64
}

func newTimeline(start time.Time, bin, span time.Duration) *timeline {
	n := int(span / bin)
	return &timeline{start: start, bin: bin, bins: make([]atomic.Int64, n), fails: make([]atomic.Int64, n)}
}

// sent counts one request sent at t; those outside the span are not kept.
func (tl *timeline) sent(t time.Time) {
	if tl != nil {
		tl.add(tl.bins, t)
	}
}

// failed counts one failure known at t.
func (tl *timeline) failed(t time.Time) {
	if tl != nil {
		tl.add(tl.fails, t)
	}
}

func (tl *timeline) add(bins []atomic.Int64, t time.Time) {
	if t.Before(tl.start) {
		return
	}
	if i := int(t.Sub(tl.start) / tl.bin); i < len(bins) {
		bins[i].Add(1)
	}
}

func load(bins []atomic.Int64) []int64 {
	out := make([]int64, len(bins))
	for i := range bins {
		out[i] = bins[i].Load()
	}
	return out
}

func (tl *timeline) counts() []int64 { return load(tl.bins) }

func (tl *timeline) failures() []int64 { return load(tl.fails) }

// periodOf is the steady period of load l's requests on one node.
func periodOf(l string) time.Duration {
	switch {
	case l == LoadKubelet:
		return kubeletRenew
	case l == LoadLvscare:
		return lvscareEvery
	case l == LoadWatchdog, strings.HasPrefix(l, LoadWatchdogH2Prefix):
		return health.DefaultConfig().Interval
	default:
		return time.Second // LoadGetPrefix
	}
}

// startLoad starts load l on nodes, each after a random delay in
// [0, spread) (all at once when spread is 0), and returns what stops it.
func startLoad(ctx context.Context, e *env, l string, nodes []*node, spread time.Duration, m *meter) (stop func()) {
	return startLoadWith(ctx, e, loadOf(l), nodes, spread, m)
}

// startDelay is a node's delay before it starts, drawn by rnd (as
// rand.Int64N) in [0, spread); 0 when spread is 0.
func startDelay(spread time.Duration, rnd func(int64) int64) time.Duration {
	if spread <= 0 {
		return 0
	}
	return time.Duration(rnd(int64(spread)))
}

func startLoadWith(ctx context.Context, e *env, f loadFunc, nodes []*node, spread time.Duration, m *meter) (stop func()) {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(1)
	for _, n := range nodes {
		wg.Go(func() {
			ready.Wait() // all goroutines exist before the first starts
			if sleep(lctx, startDelay(spread, rand.Int64N)) {
				f(lctx, e, n, m)
			}
		})
	}
	ready.Done()
	return func() {
		cancel()
		wg.Wait()
		e.conns.closeAll()
	}
}

// runStartup runs load l on nodes for span from their start, spread over
// spread, counting the requests sent per bin and sampling the apiserver's
// CPU every second; then it stops the load and lets the apiserver rest.
func runStartup(ctx context.Context, srv *server, o Options, idleCores float64, l string, nodes []*node, spread time.Duration) (Startup, error) {
	per := periodOf(l)
	st := Startup{Load: l, Nodes: len(nodes), StartSpread: spread, Period: per, Bin: per / periodBins}
	span := max(o.Startup.Truncate(per), per)
	e := &env{target: Addr, srv: srv, conns: newConnTracker()}
	pid := srv.pid()
	a0, err := cpuSeconds(pid)
	if err != nil {
		return st, err
	}
	t0 := time.Now()
	m := &meter{tl: newTimeline(t0, st.Bin, span)}
	stop := startLoad(ctx, e, l, nodes, spread, m)
	for s := 1; s <= int((span+time.Second-1)/time.Second); s++ {
		if !sleep(ctx, time.Until(t0.Add(time.Duration(s)*time.Second))) {
			stop()
			return st, ctx.Err()
		}
		a1, err := cpuSeconds(pid)
		if err != nil {
			stop()
			return st, err
		}
		st.Cores = append(st.Cores, a1-a0-idleCores)
		a0 = a1
	}
	stop()
	st.Sends, st.Failures = m.tl.counts(), m.tl.failures()
	st.Requests, st.Errors = m.requests.Load(), m.errors.Load()
	o.Logf("fleet: startup %-10s N=%-5d spread %s: %d requests, %d failed %s", l, len(nodes), spread, m.requests.Load(), m.errors.Load(), m.last())
	sleep(ctx, o.Warmup)
	return st, ctx.Err()
}

// StartupLines are the start-up timelines as "STARTUP load nodes spread
// period bin" lines, each followed by a "SENDS" line (requests per bin)
// and a "CORES" line (apiserver cores above idle per second).
func (r *Result) StartupLines() string {
	var b strings.Builder
	for _, s := range r.Startups {
		fmt.Fprintf(&b, "STARTUP %s %d %s %s %s\nSENDS", s.Load, s.Nodes, s.StartSpread, s.Period, s.Bin)
		for _, v := range s.Sends {
			fmt.Fprintf(&b, " %d", v)
		}
		b.WriteString("\nFAILS")
		for _, v := range s.Failures {
			fmt.Fprintf(&b, " %d", v)
		}
		b.WriteString("\nCORES")
		for _, v := range s.Cores {
			fmt.Fprintf(&b, " %.3f", v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// StartupMarkdown is the start-up timelines' table: per load, size and
// start spread, the peak/mean ratio of each period, when it settles below
// SettledBelow, and the apiserver's CPU in the first seconds.
func (r *Result) StartupMarkdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s UTC, kube-apiserver %s; requests counted per tenth of the load's period at send time; apiserver idle: %.3f cores.\n\n",
		r.Start.UTC().Format("2006-01-02 15:04"), r.Version, r.IdleCores)
	b.WriteString("| load | nodes | start spread | peak/mean per period (bins of a tenth) | below 1.5 from period | apiserver cores above idle per second | peak / mean CPU |\n|---|---|---|---|---|---|---|\n")
	for _, s := range r.Startups {
		var pm []string
		for _, v := range s.PeakToMean() {
			pm = append(pm, fmt.Sprintf("%.1f", v))
		}
		settled := "not within the run"
		if i, ok := s.SettledAfter(SettledBelow); ok {
			settled = fmt.Sprintf("%d (%s)", i+1, time.Duration(i)*s.Period)
		}
		var cs []string
		var sum, peak float64
		for _, c := range s.Cores {
			cs = append(cs, fmt.Sprintf("%.2f", c))
			sum, peak = sum+c, max(peak, c)
		}
		ratio := "-"
		if sum > 0 {
			ratio = fmt.Sprintf("%.2f", peak*float64(len(s.Cores))/sum)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", s.Load, s.Nodes, s.StartSpread, strings.Join(pm, " "), settled, strings.Join(cs, " "), ratio)
	}
	b.WriteString("\nPeak/mean averaged over periods:\n\n| load | nodes | start spread |")
	for _, st := range Stages {
		if st[0] == st[1] {
			fmt.Fprintf(&b, " %d |", st[0])
		} else {
			fmt.Fprintf(&b, " %d-%d |", st[0], st[1])
		}
	}
	b.WriteString(" requests | failed | failed in periods 1-3 |\n|---|---|---|" + strings.Repeat("---|", len(Stages)+3) + "\n")
	for _, s := range r.Startups {
		fmt.Fprintf(&b, "| %s | %d | %s |", s.Load, s.Nodes, s.StartSpread)
		for _, st := range Stages {
			if v, ok := s.MeanPeakToMean(st[0], st[1]); ok {
				fmt.Fprintf(&b, " %.1f |", v)
			} else {
				b.WriteString(" - |")
			}
		}
		fmt.Fprintf(&b, " %d | %d | %d |\n", s.Requests, s.Errors, s.FailedIn(1, 3))
	}
	return b.String()
}
