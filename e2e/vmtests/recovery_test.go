package vmtests

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// The recovery benchmark (`vmlab bench-recovery`, part of `make bench`):
// how soon a repaired master is back in service, whether the flap damping
// ever leaves fewer than a majority of the masters in service while a
// majority are healthy, and how the damping handles a flapping master.
//
// It runs against the watchdog under test and, when the host gives one
// (VIPCTL_BENCH_OLD_CARE_BIN: a watchdog built from an older revision),
// against that one too in the same VM; the old one's figures are named
// old_*. It is not matched by ^TestBench: `vmlab bench` does not run it.

// recoverySpacing is the time between two faults: with three masters in
// turn, each master fails once a minute.
const recoverySpacing = 20 * time.Second

// TestRecoveryBench kills, cuts off and makes answer 500 masters in turn
// (kill, cut, kill, 500, ...: TRIALS kills, TRIALS/2 cuts and TRIALS/2 ×
// 500), one every 20 s, and repairs each as soon as the watchdog took it
// out; then it flaps a master's link at 2 Hz and 4 Hz for 30 s each.
func TestRecoveryBench(t *testing.T) {
	kills := benchTrials(t)
	bins := []struct{ prefix, bin string }{{"", ""}}
	if old := os.Getenv("VIPCTL_BENCH_OLD_CARE_BIN"); old != "" {
		bins = append(bins, struct{ prefix, bin string }{"old_", localCopy(t, old)})
	}
	for _, b := range bins {
		t.Run(b.prefix+"recovery", func(t *testing.T) { recoveryRun(t, b.prefix, b.bin, 2*kills) })
		for _, hz := range []int{2, 4} {
			t.Run(fmt.Sprintf("%sflap_%dhz", b.prefix, hz), func(t *testing.T) { flapRun(t, b.prefix, b.bin, hz) })
		}
	}
}

// localCopy copies a binary from the 9p share to a temporary directory:
// executing from 9p is slow under TCG.
func localCopy(t *testing.T, src string) string {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return dst
}

// benchCareLab is careLab with the watchdog binary bin ("" for the one
// under test).
func benchCareLab(t *testing.T, n int, bin string) (*lab.Lab, *lab.Care) {
	t.Helper()
	l := lab.New(t, n)
	var c *lab.Care
	if bin == "" {
		c = l.StartCare(benchCareFlags()...)
	} else {
		c = l.StartCareBin(bin, benchCareFlags()...)
	}
	// Generous: on a loaded host the first probes time out and the
	// masters come in after Rise probes.
	lab.WaitFor(t, 30*time.Second, "all masters in", allServing(l))
	return l, c
}

// printDecisions prints the watchdog's decisions (transitions, hold-downs,
// membership changes) to the console, prefixed "care| ", so that a figure
// can be explained from the console log; and every probe's outcome when
// the watchdog logs them (VIPCTL_BENCH_CARE_FLAGS=--log-level=debug).
func printDecisions(c *lab.Care) {
	for _, line := range strings.Split(c.Log(), "\n") {
		for _, k := range []string{`"msg":"master `, `"msg":"probe"`, `"msg":"held-down"`, `"msg":"admit"`, `"msg":"drain"`, `"msg":"fail-open`} {
			if strings.Contains(line, k) {
				fmt.Println("care| " + line)
				break
			}
		}
	}
}

type fault struct {
	name          string
	inject, clear func(*lab.Master)
}

var recoveryFaults = []fault{
	{"kill", (*lab.Master).Kill, (*lab.Master).Start},
	{"cut", (*lab.Master).LinkDown, (*lab.Master).LinkUp},
	{"kill", (*lab.Master).Kill, (*lab.Master).Start},
	{"500", func(m *lab.Master) { m.SetStatus(500) }, func(m *lab.Master) { m.SetStatus(200) }},
}

// tableWatch samples the kernel's table every 10 ms: when each master
// enters and leaves the service, and for how long fewer than a majority
// served while a majority was healthy.
type tableWatch struct {
	l  *lab.Lab
	mu sync.Mutex
	// broken masters are unhealthy (faulted, not yet repaired).
	broken map[*lab.Master]bool
	// repaired masters wait to be back in service: since when.
	repaired map[*lab.Master]time.Time
	back     map[*lab.Master]chan time.Duration
	serving  map[*lab.Master]bool
	short    time.Duration // fewer than a majority in, a majority healthy
	shorts   int           // such stretches
	minIn    int
	stop     chan struct{}
	done     chan struct{}
}

func watchTable(t *testing.T, l *lab.Lab) *tableWatch {
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	w := &tableWatch{l: l, broken: map[*lab.Master]bool{}, repaired: map[*lab.Master]time.Time{},
		back: map[*lab.Master]chan time.Duration{}, serving: map[*lab.Master]bool{}, minIn: len(l.Masters),
		stop: make(chan struct{}), done: make(chan struct{})}
	majority := len(l.Masters)/2 + 1
	first := make(chan struct{})
	go func() {
		defer close(w.done)
		defer rd.Close()
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		last, wasShort := time.Now(), false
		for {
			rs := rd.RealServers()
			now := time.Now()
			w.mu.Lock()
			in, healthy := 0, 0
			for _, m := range l.Masters {
				s := lab.Serving(rs, m)
				w.serving[m] = s
				if s {
					in++
				}
				if !w.broken[m] {
					healthy++
				}
				if at, ok := w.repaired[m]; ok && s {
					delete(w.repaired, m)
					w.back[m] <- now.Sub(at)
				}
			}
			w.minIn = min(w.minIn, in)
			isShort := in < majority && healthy >= majority
			if isShort && wasShort {
				w.short += now.Sub(last)
			}
			if isShort && !wasShort {
				w.shorts++
			}
			wasShort, last = isShort, now
			w.mu.Unlock()
			if first != nil {
				close(first)
				first = nil
			}
			select {
			case <-w.stop:
				return
			case <-tk.C:
			}
		}
	}()
	<-first
	return w
}

func (w *tableWatch) in(m *lab.Master) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.serving[m]
}

// waitOut waits until m is out of service.
func (w *tableWatch) waitOut(m *lab.Master, timeout time.Duration) bool {
	return lab.Poll(timeout, func() bool { return !w.in(m) }) == nil
}

func (w *tableWatch) setBroken(m *lab.Master, broken bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.broken[m] = broken
}

// markRepaired marks m healthy again; the returned channel yields the time
// until it is back in service.
func (w *tableWatch) markRepaired(m *lab.Master) <-chan time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.broken[m] = false
	ch := make(chan time.Duration, 1)
	w.repaired[m], w.back[m] = time.Now(), ch
	return ch
}

func (w *tableWatch) pending(m *lab.Master) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.repaired[m]
	return ok
}

func (w *tableWatch) close() { close(w.stop); <-w.done }

func recoveryRun(t *testing.T, prefix, bin string, faults int) {
	l, c := benchCareLab(t, 3, bin)
	defer printDecisions(c)
	w := watchTable(t, l)
	defer w.close()
	var backs sync.WaitGroup
	skipped := 0
	begin := time.Now()
	for i := range faults {
		hold(time.Until(begin.Add(time.Duration(i) * recoverySpacing))) // the schedule, not a wait for a condition
		m, f := l.Masters[i%len(l.Masters)], recoveryFaults[i%len(recoveryFaults)]
		if !w.in(m) || w.pending(m) {
			// Still held down (or not back) from its failure a minute
			// ago: it cannot be taken out again.
			skipped++
			t.Logf("fault %d: %s still out of service from its last failure", i, m.Name)
			continue
		}
		t0 := time.Now()
		w.setBroken(m, true)
		f.inject(m)
		if !w.waitOut(m, 15*time.Second) {
			f.clear(m)
			w.setBroken(m, false)
			t.Errorf("fault %d: %s (%s) not taken out within 15 s", i, m.Name, f.name)
			continue
		}
		lab.Record(t, prefix+"recovery_"+f.name+"_to_out", time.Since(t0))
		back := w.markRepaired(m)
		f.clear(m)
		backs.Go(func() {
			select {
			case d := <-back:
				lab.Record(t, prefix+"recovery_repair_to_in", d)
				lab.Record(t, prefix+"recovery_"+f.name+"_repair_to_in", d)
			case <-time.After(3 * time.Minute):
				t.Logf("fault %d: %s not back 3 min after its repair", i, m.Name)
				lab.RecordValue(t, prefix+"recovery_not_back_within_3min", 1, "faults")
			}
		})
	}
	backs.Wait()
	w.mu.Lock()
	short, shorts, minIn := w.short, w.shorts, w.minIn
	w.mu.Unlock()
	lab.Record(t, prefix+"recovery_short_of_majority", short)
	lab.RecordValue(t, prefix+"recovery_short_of_majority_stretches", float64(shorts), "stretches")
	lab.RecordValue(t, prefix+"recovery_min_in_service", float64(minIn), "masters")
	lab.RecordValue(t, prefix+"recovery_faults_skipped", float64(skipped), "faults")
	t.Logf("%d faults over %s: %d skipped (still out), fewer than a majority in service for %s while a majority was healthy", faults, time.Since(begin).Round(time.Second), skipped, short)
}

// flapRun flaps the link of one of three masters at hz (down and up once per
// cycle) for 30 s while a client opens a new connection through the VIP
// every 50 ms, and measures the removals of the flapping master (the most
// in any 10 s, and in all), its time in service, the client's failures and
// how soon it is back once the flapping stops.
func flapRun(t *testing.T, prefix, bin string, hz int) {
	l, c := benchCareLab(t, 3, bin)
	defer printDecisions(c)
	m := l.Masters[1]
	var mu sync.Mutex
	var removals []time.Time
	var inFor time.Duration
	stop := make(chan struct{})
	sampled := make(chan struct{})
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	go func() {
		defer close(sampled)
		defer rd.Close()
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		was, last := true, time.Now()
		for {
			now := time.Now()
			in := lab.Serving(rd.RealServers(), m)
			mu.Lock()
			if was {
				inFor += now.Sub(last)
			}
			if was && !in {
				removals = append(removals, now)
			}
			mu.Unlock()
			was, last = in, now
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	client := l.Client(3 * time.Second)
	var requests, failed int
	var clients sync.WaitGroup
	clientsStop := make(chan struct{})
	clients.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-clientsStop:
				return
			case <-tk.C:
			}
			clients.Go(func() {
				h := l.HitWith(client)
				mu.Lock()
				requests++
				if h.Err != nil {
					failed++
				}
				mu.Unlock()
			})
		}
	})
	half := time.Second / time.Duration(2*hz)
	const flapping = 30 * time.Second
	mu.Lock()
	inBefore := inFor
	mu.Unlock()
	start := time.Now()
	tk := time.NewTicker(half)
	for down := true; time.Since(start) < flapping; down = !down {
		if down {
			m.LinkDown()
		} else {
			m.LinkUp()
		}
		<-tk.C
	}
	tk.Stop()
	m.LinkUp()
	end := time.Now()
	mu.Lock()
	inDuring := inFor - inBefore
	mu.Unlock()
	back := lab.WaitFor(t, 2*time.Minute, m.Name+" back after the flapping", in(m))
	close(clientsStop)
	clients.Wait()
	close(stop)
	<-sampled
	most := 0
	for i := range removals {
		n := 0
		for _, r := range removals[i:] {
			if r.Sub(removals[i]) < 10*time.Second {
				n++
			}
		}
		most = max(most, n)
	}
	name := fmt.Sprintf("%sflap_%dhz_", prefix, hz)
	lab.RecordValue(t, name+"removals_most_in_10s", float64(most), "removals")
	lab.RecordValue(t, name+"removals", float64(len(removals)), "removals")
	lab.RecordValue(t, name+"in_service", float64(inDuring)/float64(end.Sub(start))*100, "% of the time")
	lab.RecordValue(t, name+"client_failures", float64(failed), "requests")
	lab.RecordValue(t, name+"client_requests", float64(requests), "requests")
	lab.Record(t, name+"end_to_in", back)
	t.Logf("%s flapping at %d Hz for 30 s: removed %d times (at most %d in 10 s), in service %s of %s; %d of %d client requests failed; back %s after the flapping",
		m.Name, hz, len(removals), most, inDuring.Round(time.Millisecond), end.Sub(start).Round(time.Millisecond), failed, requests, back.Round(time.Millisecond))
}
