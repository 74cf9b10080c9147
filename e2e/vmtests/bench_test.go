package vmtests

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// The benchmarks run only from `make bench` (VIPCTL_BENCH=1): they repeat
// each failure many times and print MEASURE lines that the host turns into
// docs/benchmarks.md. They assert behaviour, never timings.

func benchTrials(t *testing.T) int {
	t.Helper()
	if os.Getenv("VIPCTL_BENCH") != "1" {
		t.Skip("benchmark scenario: runs from `make bench` (VIPCTL_BENCH=1)")
	}
	n, err := strconv.Atoi(os.Getenv("VIPCTL_BENCH_TRIALS"))
	if err != nil || n < 1 {
		n = 20
	}
	return n
}

// benchCareFlags are further watchdog flags for the failover benchmarks,
// from VIPCTL_BENCH_CARE_FLAGS (space-separated; `VIPCTL_BENCH_CARE_FLAGS=
// --probe-http2 make bench` measures HTTP/2 probing), after the
// benchmark's own.
func benchCareFlags(own ...string) []string {
	return append(own, strings.Fields(os.Getenv("VIPCTL_BENCH_CARE_FLAGS"))...)
}

// benchFamily is the address family of the failover benchmarks: IPv6 when
// VIPCTL_BENCH_FAMILY=ipv6 (`vmlab bench6`), else IPv4. IPv6 measurements
// are named name_ipv6.
func benchFamily() lab.Family {
	if os.Getenv("VIPCTL_BENCH_FAMILY") == lab.IPv6.Name {
		return lab.IPv6
	}
	return lab.IPv4
}

// Kill a master's apiserver process, time until the kernel stops sending it
// new connections; restart it and wait until it is back. The hold-down is
// off so that every trial measures detection, not flap damping. Each kill
// waits until the watchdog holds its sentinel connections to every master
// (right after the watchdog starts or a master returns, a kill is noticed
// by the periodic probe instead: within interval + jitter + fall re-probes).
func TestBenchKill(t *testing.T) {
	n, fam := benchTrials(t), benchFamily()
	l, _ := careLabIn(t, fam, 3, benchCareFlags("--hold-down=0")...)
	for i := range n {
		m := l.Masters[i%len(l.Masters)]
		require.NoError(t, lab.Poll(10*time.Second, func() bool { return sentinelsHeld(t) == len(l.Masters) }), "sentinels held")
		t0 := time.Now()
		m.Kill()
		l.WaitFor(t, 10*time.Second, "out", out(m))
		lab.Record(t, fam.Measure("kill_to_out"), time.Since(t0))
		t1 := time.Now()
		m.Start()
		l.WaitFor(t, 15*time.Second, "back", in(m))
		lab.Record(t, fam.Measure("restart_to_in"), time.Since(t1))
	}
}

// Cut a master's link (packets dropped, no RST): time until it is out, and
// until a client's established connection to it through the VIP errors.
func TestBenchBlackhole(t *testing.T) {
	n, fam := benchTrials(t), benchFamily()
	l, _ := careLabIn(t, fam, 2, benchCareFlags("--hold-down=0")...)
	for range n {
		name, done, closeWatch := openWatch(t, l)
		m := master(l, name)
		require.NotNil(t, m)
		t0 := time.Now()
		m.LinkDown()
		l.WaitFor(t, 15*time.Second, "out", out(m))
		outAt := time.Now()
		lab.Record(t, fam.Measure("blackhole_to_out"), outAt.Sub(t0))
		select {
		case <-done:
			now := time.Now()
			lab.Record(t, fam.Measure("established_reset_after_out"), now.Sub(outAt))
			lab.Record(t, fam.Measure("blackhole_to_client_error"), now.Sub(t0))
		case <-time.After(10 * time.Second):
			t.Fatal("the established connection was not reset")
		}
		closeWatch()
		m.LinkUp()
		l.WaitFor(t, 15*time.Second, "back", in(m))
	}
}

// Flush every IPVS rule (ipvsadm -C, kube-proxy in nftables mode starting)
// and time until the service and all real servers are back.
func TestBenchFlush(t *testing.T) {
	n, fam := benchTrials(t), benchFamily()
	l, _ := careLabIn(t, fam, 3, benchCareFlags()...)
	for range n {
		t0 := time.Now()
		lab.FlushIPVS(t)
		l.WaitFor(t, 5*time.Second, "restored", allServing(l))
		lab.Record(t, fam.Measure("flush_to_restored"), time.Since(t0))
		// Let a flush land at a random point of the poll period.
		time.Sleep(time.Duration(37+time.Now().UnixNano()%60) * time.Millisecond)
	}
}

// The watchdog's footprint with 3 healthy masters over a minute: RSS, CPU
// and probes per second per master.
func TestBenchResources(t *testing.T) {
	benchTrials(t)
	_, c := careLab(t, 3)
	p0, cpu0, t0 := probesDone(t), mustCPU(t, c), time.Now()
	const window = 60 * time.Second
	for time.Since(t0) < window {
		rss, err := c.RSS()
		require.NoError(t, err)
		lab.RecordValue(t, "care_rss", float64(rss)/(1<<20), "MiB")
		time.Sleep(5 * time.Second) // sampling period
	}
	el := time.Since(t0)
	cpu := mustCPU(t, c) - cpu0
	probes := probesDone(t) - p0
	lab.RecordValue(t, "care_cpu", float64(cpu)/float64(el)*100, "% of a core")
	lab.RecordValue(t, "care_probes_per_master", float64(probes)/el.Seconds()/3, "probes/s")
}

func mustCPU(t *testing.T, c *lab.Care) time.Duration {
	d, err := c.CPUTime()
	require.NoError(t, err)
	return d
}

// The same workloads the host runs natively: the ratios tell how much TCG
// inflates the CPU figures above.
func TestBenchCalibrate(t *testing.T) {
	benchTrials(t)
	for _, name := range slices.Sorted(maps.Keys(lab.Calibrations)) {
		for range 5 {
			d, err := lab.Calibrations[name](100)
			require.NoError(t, err)
			lab.Record(t, "calibration_"+name+"_vm", d)
		}
	}
}

// timeline runs a client that opens a new HTTPS connection through the VIP
// every 50 ms (3 s timeout, like a kubelet's) for 1 s before and 5 s after
// fail() and prints each request as "TIMELINE name start_ms duration_ms
// result master"; "EVENT name removed ms" marks when the master left the
// IPVS table. The host turns these lines into docs/failover-timeline.png.
func timeline(t *testing.T, l *lab.Lab, name string, m *lab.Master, fail func()) {
	t.Helper()
	c := l.Client(3 * time.Second)
	var t0 time.Time
	type req struct {
		start, dur time.Duration
		h          lab.Hit
	}
	results := make(chan req, 1024)
	stop := make(chan struct{})
	var clients sync.WaitGroup
	begin := time.Now()
	clients.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			s := time.Now()
			clients.Go(func() {
				h := l.HitWith(c)
				results <- req{start: s.Sub(begin), dur: time.Since(s), h: h}
			})
		}
	})
	time.Sleep(time.Second) // the client's steady state before the failure
	t0 = time.Now()
	fail()
	removed := lab.WaitFor(t, 10*time.Second, "out", out(m))
	time.Sleep(5*time.Second - removed)
	close(stop)
	clients.Wait()
	close(results)
	off := t0.Sub(begin)
	failed := 0
	for r := range results {
		res, master := "ok", r.h.Master
		if r.h.Err != nil {
			res, master, failed = "error", "-", failed+1
		}
		fmt.Printf("TIMELINE %s %.1f %.1f %s %s\n", name, float64((r.start-off).Microseconds())/1000, float64(r.dur.Microseconds())/1000, res, master)
	}
	fmt.Printf("EVENT %s removed %.1f\n", name, float64(removed.Microseconds())/1000)
	t.Logf("%s: %d requests failed; %s removed after %s", name, failed, m.Name, removed)
}

func TestBenchTimeline(t *testing.T) {
	benchTrials(t)
	t.Run("kill", func(t *testing.T) {
		l, _ := careLab(t, 3)
		m := l.Masters[1]
		timeline(t, l, "apiserver killed", m, m.Kill)
	})
	t.Run("blackhole", func(t *testing.T) {
		l, _ := careLab(t, 3)
		m := l.Masters[1]
		timeline(t, l, "master link cut", m, m.LinkDown)
	})
}
