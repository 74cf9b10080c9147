// Package benchreport turns the MEASURE lines the in-VM benchmark scenarios
// print ("MEASURE name value unit") into a summary table (count, median,
// p99, min, max) and splices it into a Markdown document between markers.
package benchreport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Series is the samples of one measurement.
type Series struct {
	Name   string
	Unit   string
	Values []float64
}

// Parse collects MEASURE lines from r (other lines are ignored), keeping
// the order in which measurements first appear.
func Parse(r io.Reader) ([]*Series, error) {
	var out []*Series
	byName := map[string]*Series{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "MEASURE ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		s := byName[f[0]]
		if s == nil {
			s = &Series{Name: f[0], Unit: strings.Join(f[2:], " ")}
			byName[f[0]] = s
			out = append(out, s)
		}
		s.Values = append(s.Values, v)
	}
	return out, sc.Err()
}

// Quantile is the nearest-rank q-quantile (0 < q <= 1) of values: the
// smallest sample at or above which lies a fraction q of the samples. With
// 20 samples the p99 is the largest one.
func Quantile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	rank := int(math.Ceil(q * float64(len(s))))
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

// Table renders the series as a Markdown table.
func Table(series []*Series) string {
	var b strings.Builder
	b.WriteString("| measurement | unit | n | median | p99 | min | max |\n|---|---|---|---|---|---|---|\n")
	for _, s := range series {
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s |\n", s.Name, s.Unit, len(s.Values),
			num(Quantile(s.Values, 0.5)), num(Quantile(s.Values, 0.99)), num(slices.Min(s.Values)), num(slices.Max(s.Values)))
	}
	return b.String()
}

func num(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// Splice replaces what stands between "<!-- BEGIN id -->" and
// "<!-- END id -->" in doc with body; the markers are appended when doc has
// none.
func Splice(doc []byte, id, body string) []byte {
	begin, end := "<!-- BEGIN "+id+" -->", "<!-- END "+id+" -->"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	block := begin + "\n" + strings.TrimRight(body, "\n") + "\n" + end
	if i < 0 || j < i {
		out := bytes.TrimRight(doc, "\n")
		if len(out) > 0 {
			out = append(out, "\n\n"...)
		}
		return append(out, block+"\n"...)
	}
	return append(append(slices.Clone(doc[:i]), block...), doc[j+len(end):]...)
}

// Derived computes what the raw series imply: each data path's median as a
// ratio of the direct path's, an emulation factor per calibration workload
// (median VM CPU over median host CPU) and the watchdog's median CPU
// scaled by each, estimates of its cost on hardware.
func Derived(series []*Series) []*Series {
	get := func(name string) *Series {
		for _, s := range series {
			if s.Name == name && len(s.Values) > 0 {
				return s
			}
		}
		return nil
	}
	var out []*Series
	// Data path: each path's median as a share of the direct connection's.
	for _, m := range []string{"datapath_new_tls_conns", "datapath_request_p50", "datapath_request_p99"} {
		direct := get(m + "_direct")
		if direct == nil {
			continue
		}
		d := Quantile(direct.Values, 0.5)
		for _, p := range []string{"vip", "nginx"} {
			if s := get(m + "_" + p); s != nil && d > 0 {
				out = append(out, &Series{Name: m + "_" + p + "_vs_direct", Unit: "ratio of medians", Values: []float64{Quantile(s.Values, 0.5) / d}})
			}
		}
	}
	// Emulation: one factor per calibration workload present in both the
	// VM and on the host; the watchdog's CPU divided by each is a range of
	// estimates for hardware (the largest, from the smallest factor, is
	// the conservative one).
	cpu := get("care_cpu")
	est := &Series{Name: "care_cpu_estimated_on_hardware"}
	for _, s := range series {
		name, ok := strings.CutSuffix(s.Name, "_vm")
		if !ok || !strings.HasPrefix(name, "calibration_") {
			continue
		}
		host := get(name + "_host")
		if host == nil || len(s.Values) == 0 {
			continue
		}
		h := Quantile(host.Values, 0.5)
		if h <= 0 {
			continue
		}
		factor := Quantile(s.Values, 0.5) / h
		out = append(out, &Series{Name: "emulation_factor_" + strings.TrimPrefix(name, "calibration_"), Unit: "x", Values: []float64{factor}})
		if cpu != nil {
			est.Unit = cpu.Unit
			est.Values = append(est.Values, Quantile(cpu.Values, 0.5)/factor)
		}
	}
	if len(est.Values) > 0 {
		out = append(out, est)
	}
	return out
}
