package fleet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vipctl/vipctl/e2e/benchreport"
)

// Extrapolated is the fleet size the report extrapolates to.
const Extrapolated = 5000

// Fit is a least-squares line y = A + B·N through a load's samples.
type Fit struct{ A, B float64 }

// At is the line's value at n.
func (f Fit) At(n float64) float64 { return f.A + f.B*n }

// fit fits y(s) against the nodes of samples; with one sample the line
// goes through the origin.
func fit(samples []Sample, y func(Sample) float64) Fit {
	if len(samples) == 1 {
		return Fit{B: y(samples[0]) / float64(samples[0].Nodes)}
	}
	var sx, sy, sxx, sxy float64
	for _, s := range samples {
		x := float64(s.Nodes)
		sx, sy, sxx, sxy = sx+x, sy+y(s), sxx+x*x, sxy+x*y(s)
	}
	n := float64(len(samples))
	d := n*sxx - sx*sx
	if d == 0 {
		return Fit{B: sy / sx}
	}
	b := (n*sxy - sx*sy) / d
	return Fit{A: (sy - b*sx) / n, B: b}
}

// loads returns the loads of r in the order they were run.
func (r *Result) loads() []string {
	var out []string
	for _, s := range r.Samples {
		if !slices.Contains(out, s.Load) {
			out = append(out, s.Load)
		}
	}
	return out
}

func (r *Result) of(load string) []Sample {
	var out []Sample
	for _, s := range r.Samples {
		if s.Load == load {
			out = append(out, s)
		}
	}
	return out
}

// Ratio is the watchdog's apiserver CPU over the kubelet baseline's: per
// size (same run, same apiserver) and of the fitted slopes (per node).
// ok is false when the run lacks one of the two loads.
func (r *Result) Ratio() (perSize map[int]float64, slope float64, ok bool) {
	w, k := r.of(LoadWatchdog), r.of(LoadKubelet)
	if len(w) == 0 || len(k) == 0 {
		return nil, 0, false
	}
	perSize = map[int]float64{}
	for _, a := range w {
		for _, b := range k {
			if a.Nodes == b.Nodes && b.Cores > 0 {
				perSize[a.Nodes] = a.Cores / b.Cores
			}
		}
	}
	cores := func(s Sample) float64 { return s.Cores }
	kb := fit(k, cores).B
	if kb <= 0 {
		return perSize, 0, false
	}
	return perSize, fit(w, cores).B / kb, true
}

// Markdown is the run's table: every sample, the extrapolation to
// Extrapolated nodes and the fleet_ratio.
func (r *Result) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run of %s UTC, kube-apiserver %s, window %s per point; apiserver idle: %.3f cores, RSS %.0f MB.\n\n",
		r.Start.UTC().Format("2006-01-02 15:04"), r.Version, r.Window, r.IdleCores, r.IdleRSSMB)
	b.WriteString("| load | nodes | apiserver CPU above idle (cores) | per node (ms CPU/s) | RSS above pre-load (MB) | connections | harness CPU (cores) | requests in window | failed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Samples {
		fmt.Fprintf(&b, "| %s | %d | %.3f | %.3f | %.0f | %d | %.2f | %d | %d |\n",
			s.Load, s.Nodes, s.Cores, s.PerNodeMS(), s.RSSMB, s.Conns, s.ClientCores, s.Requests, s.Errors)
	}
	fmt.Fprintf(&b, "\nLinear fit over the sizes, extrapolated to %d nodes:\n\n", Extrapolated)
	b.WriteString("| load | per node (ms CPU/s, slope) | / kubelet's | apiserver CPU at 5,000 nodes (cores) | RSS at 5,000 (MB above idle) | connections at 5,000 |\n|---|---|---|---|---|---|\n")
	cores := func(s Sample) float64 { return s.Cores }
	kb := math.NaN()
	if k := r.of(LoadKubelet); len(k) > 0 {
		kb = fit(k, cores).B
	}
	for _, l := range r.loads() {
		ss := r.of(l)
		c := fit(ss, cores)
		m := fit(ss, func(s Sample) float64 { return s.RSSMB })
		k := fit(ss, func(s Sample) float64 { return float64(s.Conns) })
		fmt.Fprintf(&b, "| %s | %.3f | %.2f | %.2f | %.0f | %.0f |\n", l, c.B*1000, c.B/kb, c.At(Extrapolated), m.At(Extrapolated), k.At(Extrapolated))
	}
	if per, slope, ok := r.Ratio(); ok {
		var sizes []int
		for n := range per {
			sizes = append(sizes, n)
		}
		slices.Sort(sizes)
		var parts []string
		for _, n := range sizes {
			parts = append(parts, fmt.Sprintf("%.2f at N=%d", per[n], n))
		}
		fmt.Fprintf(&b, "\n| figure | value | goal |\n|---|---|---|\n| `fleet_ratio` (watchdog apiserver CPU / kubelet baseline's, per node, fitted slopes) | **%.2f** (%s) | ≤ 0.25 |\n",
			slope, strings.Join(parts, ", "))
	}
	return b.String()
}

// Lines are the samples as "FLEET load nodes cores rssMB conns clientCores
// requests errors" lines, for a log from which a report can be rebuilt.
func (r *Result) Lines() string {
	var b strings.Builder
	fmt.Fprintf(&b, "FLEET idle 0 %.4f %.1f 0 0 0 0\n", r.IdleCores, r.IdleRSSMB)
	for _, s := range r.Samples {
		fmt.Fprintf(&b, "FLEET %s %d %.4f %.1f %d %.3f %d %d\n", s.Load, s.Nodes, s.Cores, s.RSSMB, s.Conns, s.ClientCores, s.Requests, s.Errors)
	}
	return b.String()
}

// Chart draws the apiserver's CPU above idle against the number of nodes,
// one curve per load, with the linear extrapolation to Extrapolated nodes.
func (r *Result) Chart(w io.Writer) error {
	var curves []benchreport.Curve
	for _, l := range r.loads() {
		ss := r.of(l)
		c := benchreport.Curve{Name: l}
		for _, s := range ss {
			c.X = append(c.X, float64(s.Nodes))
			c.Y = append(c.Y, s.Cores)
		}
		f := fit(ss, func(s Sample) float64 { return s.Cores })
		c.FitX, c.FitY = []float64{0, Extrapolated}, []float64{math.Max(0, f.At(0)), f.At(Extrapolated)}
		curves = append(curves, c)
	}
	return benchreport.RenderCurves(w, benchreport.CurveChart{
		Title:  fmt.Sprintf("kube-apiserver CPU above idle vs simulated nodes (kube-apiserver %s, %s windows; dashed: linear fit)", r.Version, r.Window),
		XLabel: "nodes", YLabel: "cores", Curves: curves,
	})
}

// ParseLines rebuilds a result from the FLEET lines of Lines (other lines
// are skipped); start, version and window describe the run.
func ParseLines(r io.Reader, start time.Time, version string, window time.Duration) (*Result, error) {
	res := &Result{Start: start, Version: version, Window: window}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 9 || f[0] != "FLEET" {
			continue
		}
		var s Sample
		s.Load = f[1]
		_, err := fmt.Sscan(strings.Join(f[2:], " "), &s.Nodes, &s.Cores, &s.RSSMB, &s.Conns, &s.ClientCores, &s.Requests, &s.Errors)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", sc.Text(), err)
		}
		if s.Load == "idle" {
			res.IdleCores, res.IdleRSSMB = s.Cores, s.RSSMB
			continue
		}
		res.Samples = append(res.Samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.Samples) == 0 {
		return nil, errors.New("no FLEET sample lines")
	}
	return res, nil
}
