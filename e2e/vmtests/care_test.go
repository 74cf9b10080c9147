package vmtests

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vishvananda/netlink"
)

// careLab starts an IPv4 lab of n masters and the watchdog (with extra
// flags) and waits until every master is in the IPVS service.
func careLab(t *testing.T, n int, extra ...string) (*lab.Lab, *lab.Care) {
	t.Helper()
	return careLabIn(t, lab.IPv4, n, extra...)
}

// careLabIn is careLab with the addresses of family fam.
func careLabIn(t *testing.T, fam lab.Family, n int, extra ...string) (*lab.Lab, *lab.Care) {
	t.Helper()
	l := lab.NewIn(t, fam, n)
	c := l.StartCare(extra...)
	l.WaitFor(t, 10*time.Second, "all masters in", allServing(l))
	return l, c
}

func allServing(l *lab.Lab) func(map[netip.AddrPort]int) bool {
	return func(rs map[netip.AddrPort]int) bool {
		for _, m := range l.Masters {
			if !lab.Serving(rs, m) {
				return false
			}
		}
		return true
	}
}

func out(m *lab.Master) func(map[netip.AddrPort]int) bool {
	return func(rs map[netip.AddrPort]int) bool { return rs != nil && !lab.Serving(rs, m) }
}

func in(m *lab.Master) func(map[netip.AddrPort]int) bool {
	return func(rs map[netip.AddrPort]int) bool { return lab.Serving(rs, m) }
}

// openWatch opens a long-lived streaming request through the VIP and
// returns which master serves it and a channel that yields the error that
// ends it.
func openWatch(t *testing.T, l *lab.Lab) (string, <-chan error, func()) {
	t.Helper()
	c := l.Client(0)
	req, err := http.NewRequest("GET", l.VIPURL("/watch"), nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	r := bufio.NewReader(resp.Body)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	master := strings.Fields(line)[0]
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r.ReadString('\n'); err != nil {
				done <- err
				return
			}
		}
	}()
	return master, done, func() { resp.Body.Close() }
}

func master(l *lab.Lab, name string) *lab.Master {
	for _, m := range l.Masters {
		if m.Name == name {
			return m
		}
	}
	return nil
}

func TestCareKillAndRestartMaster(t *testing.T) {
	eachFamily(t, func(t *testing.T, fam lab.Family) {
		l, _ := careLabIn(t, fam, 3)
		m := l.Masters[1]
		killed := time.Now()
		m.Kill()
		l.WaitFor(t, 10*time.Second, m.Name+" out", out(m))
		lab.Record(t, fam.Measure("kill_to_out"), time.Since(killed))
		for _, h := range l.HitVIP(12, 3*time.Second) {
			assert.NoError(t, h.Err)
			assert.NotEqual(t, m.Name, h.Master)
		}
		assertStatusShows(t, l, m)
		m.Start()
		l.WaitFor(t, 15*time.Second, m.Name+" back in", in(m))
		assert.Equal(t, 3, len(lab.Count(l.HitVIP(9, 3*time.Second))), "all three masters answer again")
	})
}

// assertStatusShows checks `vipctl status` (table and JSON) while down is
// out: the VIP and every master by address (bracketed when IPv6), down out
// of service (draining with weight 0, or removed: weight -1) and the others
// in service with weight 1.
func assertStatusShows(t *testing.T, l *lab.Lab, down *lab.Master) {
	t.Helper()
	table, err := l.Run("status", "--vip", l.VIPPort().String(), "--metrics-addr", lab.MetricsAddr)
	require.NoError(t, err)
	for _, m := range l.Masters {
		assert.Contains(t, table, m.Addr.String(), "status lists %s", m.Name)
	}
	js, err := l.Run("status", "--vip", l.VIPPort().String(), "--metrics-addr", lab.MetricsAddr, "-o", "json")
	require.NoError(t, err)
	var st struct {
		VIP     string `json:"vip"`
		Masters []struct {
			Address    string `json:"address"`
			Membership string `json:"membership"`
			Weight     int    `json:"weight"`
		} `json:"masters"`
	}
	require.NoError(t, json.Unmarshal([]byte(js), &st), js)
	assert.Equal(t, l.VIPPort().String(), st.VIP)
	type row struct {
		membership string
		weight     int
	}
	rows := map[string]row{}
	for _, r := range st.Masters {
		rows[r.Address] = row{r.Membership, r.Weight}
	}
	for _, m := range l.Masters {
		got, ok := rows[m.Addr.String()]
		assert.True(t, ok, "status has a row for %s: %v", m.Addr, rows)
		if m == down {
			assert.Contains(t, []row{{"draining", 0}, {"removed", -1}}, got, "%s is out of service", m.Name)
			continue
		}
		assert.Equal(t, row{"in-service", 1}, got, "%s is in service", m.Name)
	}
}

func TestCareStartupSequence403Then500Then200(t *testing.T) {
	l := lab.New(t, 2)
	m := l.Masters[1]
	m.SetStatus(403)
	l.StartCare()
	lab.WaitFor(t, 10*time.Second, "master1 in", in(l.Masters[0]))
	// A master answering 403 (RBAC not ready) or 500 (etcd not ready) is
	// not healthy: it must not get traffic while it says so.
	assertStaysOut(t, m, 3*time.Second)
	m.SetStatus(500)
	assertStaysOut(t, m, 3*time.Second)
	m.SetStatus(200)
	lab.WaitFor(t, 10*time.Second, m.Name+" in after 200", in(m))
}

// assertStaysOut checks, polling the kernel, that m gets no weight for d.
func assertStaysOut(t *testing.T, m *lab.Master, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		require.False(t, lab.Serving(lab.RealServers(t), m), "%s must stay out", m.Name)
		time.Sleep(20 * time.Millisecond) // sampling the kernel state over a period
	}
}

func TestCareEtcdDown500(t *testing.T) {
	l, _ := careLab(t, 2)
	m := l.Masters[0]
	t0 := time.Now()
	m.SetStatus(500)
	lab.WaitFor(t, 10*time.Second, m.Name+" out on 500", out(m))
	lab.Record(t, "status500_to_out", time.Since(t0))
	m.SetStatus(200)
	lab.WaitFor(t, 10*time.Second, m.Name+" back", in(m))
}

func TestCareLinkDownResetsEstablishedConnections(t *testing.T) {
	eachFamily(t, func(t *testing.T, fam lab.Family) {
		l, _ := careLabIn(t, fam, 2)
		name, done, closeWatch := openWatch(t, l)
		defer closeWatch()
		m := master(l, name)
		require.NotNil(t, m)
		t0 := time.Now()
		m.LinkDown()
		l.WaitFor(t, 15*time.Second, m.Name+" out after link down", out(m))
		outAt := time.Now()
		lab.Record(t, fam.Measure("blackhole_to_out"), outAt.Sub(t0))
		select {
		case err := <-done:
			lab.Record(t, fam.Measure("established_reset_after_out"), time.Since(outAt))
			assert.Error(t, err, "the client sees its connection end")
		case <-time.After(10 * time.Second):
			t.Fatal("the established connection to the dead master was not reset")
		}
		// New requests go to the healthy master.
		for _, h := range l.HitVIP(6, 3*time.Second) {
			assert.NoError(t, h.Err)
			assert.NotEqual(t, m.Name, h.Master)
		}
		m.LinkUp()
		l.WaitFor(t, 15*time.Second, m.Name+" back after link up", in(m))
	})
}

// maxWeightChanges is the most weight changes the damping of c allows a
// master in a window w when its health changes as fast as it likes: it
// may fall right after every admission, but it is back no sooner than Rise
// probes after its first fall, and no sooner than the hold-down (HoldDown,
// doubling each time) after every further one.
func maxWeightChanges(c health.Config, w time.Duration) int {
	n, t := 0, time.Duration(0)
	rise, hold := time.Duration(c.Rise-1)*c.Interval, c.HoldDown
	for fall := 1; ; fall++ {
		n++ // out
		out := rise
		if fall > 1 {
			out = max(rise, min(hold, c.MaxHoldDown))
			hold *= 2
		}
		if t += out; t > w {
			return n
		}
		n++ // back in
	}
}

// Three masters: with two, the steady one alone is fewer than a majority,
// and a healthy master is then never held down (docs/care.md).
func TestCareFlappingMasterDoesNotFlapTheKernel(t *testing.T) {
	l, _ := careLab(t, 3)
	m := l.Masters[1]
	// 2 Hz for 30 s: healthy 250 ms, unhealthy 250 ms.
	stop := make(chan struct{})
	flapDone := make(chan struct{})
	go func() {
		defer close(flapDone)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		code := 500
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				m.SetStatus(code)
				code = 700 - code // 500 <-> 200
			}
		}
	}()
	transitions, last := 0, lab.Serving(lab.RealServers(t), m)
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		cur := lab.Serving(lab.RealServers(t), m)
		if cur != last {
			transitions++
			last = cur
		}
		assert.True(t, lab.Serving(lab.RealServers(t), l.Masters[0]), "the steady master stays in")
		time.Sleep(10 * time.Millisecond) // sampling the kernel state over a period
	}
	close(stop)
	<-flapDone
	bound := maxWeightChanges(health.DefaultConfig(), 30*time.Second)
	t.Logf("%s's weight changed %d times in 30 s of 2 Hz flapping (60 health changes; the damping allows at most %d)", m.Name, transitions, bound)
	assert.LessOrEqual(t, transitions, bound, "hysteresis and hold-down keep the kernel from flapping")
	m.SetStatus(200)
}

func TestCareAllMastersDownFailsOpen(t *testing.T) {
	eachFamily(t, testCareAllMastersDownFailsOpen)
}

func testCareAllMastersDownFailsOpen(t *testing.T, fam lab.Family) {
	l, _ := careLabIn(t, fam, 3)
	for _, m := range l.Masters {
		m.Kill()
	}
	// Never an empty service: with no healthy master every master stays
	// (fail open), so clients retry rather than get nothing.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		rs := l.RealServers(t)
		require.NotNil(t, rs, "the service exists")
		serving := 0
		for _, m := range l.Masters {
			if lab.Serving(rs, m) {
				serving++
			}
		}
		require.Greater(t, serving, 0, "the service never has no serving real server: %v", rs)
		time.Sleep(20 * time.Millisecond) // sampling the kernel state over a period
	}
	assert.Equal(t, true, careStatus(t)["failOpen"], "the watchdog reports fail-open")
	back := l.Masters[2]
	back.Start()
	l.WaitFor(t, 15*time.Second, "only the recovered master serves", func(rs map[netip.AddrPort]int) bool {
		return lab.Serving(rs, back) && !lab.Serving(rs, l.Masters[0]) && !lab.Serving(rs, l.Masters[1])
	})
	for _, h := range l.HitVIP(6, 3*time.Second) {
		require.NoError(t, h.Err)
		assert.Equal(t, back.Name, h.Master)
	}
}

// careStatus is the watchdog's /status document.
func careStatus(t *testing.T) map[string]any {
	t.Helper()
	v, err := lab.CareStatus()
	require.NoError(t, err)
	return v
}

func TestCareRepairsFlushedRules(t *testing.T) {
	eachFamily(t, func(t *testing.T, fam lab.Family) {
		l, _ := careLabIn(t, fam, 2)
		for range 5 {
			t0 := time.Now()
			lab.FlushIPVS(t)
			l.WaitFor(t, 5*time.Second, "restored after flush", allServing(l))
			lab.Record(t, fam.Measure("flush_to_restored"), time.Since(t0))
		}
		for _, h := range l.HitVIP(4, 3*time.Second) {
			assert.NoError(t, h.Err)
		}
	})
}

// The kernel adds its own local route (source the VIP) back with the
// address; the watchdog must put vipctl's (source the node IP) back alone.
func TestCareRepairsDeletedInterface(t *testing.T) {
	eachFamily(t, func(t *testing.T, fam lab.Family) {
		l, _ := careLabIn(t, fam, 2)
		lk, err := netlink.LinkByName("vipctl0")
		require.NoError(t, err)
		t0 := time.Now()
		require.NoError(t, netlink.LinkDel(lk))
		require.NoError(t, lab.Poll(5*time.Second, func() bool {
			o := l.Observe(t)
			return o.Link && o.LinkUp && o.VIPOnLink && o.LocalSrc == l.NodeIP.String()
		}), "vipctl0, the VIP and its src route come back: %+v", l.Observe(t))
		lab.Record(t, fam.Measure("interface_deleted_to_restored"), time.Since(t0))
		for _, h := range l.HitVIP(4, 3*time.Second) {
			assert.NoError(t, h.Err)
			assert.Equal(t, l.NodeIP, h.Src)
		}
	})
}

func TestCareRestartKeepsStateAndConnections(t *testing.T) {
	l, c := careLab(t, 3)
	before := lab.Observe(t)
	_, done, closeWatch := openWatch(t, l)
	defer closeWatch()
	c.Stop()
	assert.Equal(t, before, lab.Observe(t), "SIGTERM leaves the rules in place")
	c2 := l.StartCare()
	// Give the new watchdog a few probe rounds; nothing may change.
	require.NoError(t, lab.Poll(15*time.Second, func() bool { return probesDone(t) >= 3*len(l.Masters) }))
	assert.Equal(t, before, lab.Observe(t), "the restarted watchdog changed nothing")
	select {
	case err := <-done:
		t.Fatalf("the established connection broke during the restart: %v", err)
	default:
	}
	assert.NotContains(t, c2.Log(), `"op":"delete"`)
	assert.NotContains(t, c2.Log(), `"op":"add"`)
}

// probesDone reads the probe counter from the watchdog's metrics.
func probesDone(t *testing.T) int {
	return int(metricSum(t, "vipctl_care_probe_duration_seconds_count"))
}

// sentinelsHeld is how many sentinel connections the watchdog holds.
func sentinelsHeld(t *testing.T) int {
	return int(metricSum(t, "vipctl_care_sentinel_held"))
}

// metricSum adds up the watchdog's samples of metric (all labels); 0 when
// the metrics cannot be read.
func metricSum(t *testing.T, metric string) float64 {
	resp, err := http.Get("http://" + lab.MetricsAddr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n float64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || (f[0] != metric && !strings.HasPrefix(f[0], metric+"{")) {
			continue
		}
		var v float64
		if _, err := fmtSscan(f[1], &v); err == nil {
			n += v
		}
	}
	return n
}

// A scheduler changed behind the watchdog's back is put back (the watchdog
// polls the service and its scheduler every resync period).
func TestCareRepairsChangedScheduler(t *testing.T) {
	_, c := careLab(t, 2)
	lab.SetScheduler(t, "wlc")
	// The watchdog may repair it before the table can be read back (a
	// loaded host): its own log tells that it saw wlc and put rr back.
	require.NoError(t, lab.Poll(5*time.Second, func() bool {
		return slices.Contains(lab.Observe(t).Services, "TCP "+lab.VIPPort.String()+" rr") &&
			strings.Contains(c.Log(), "scheduler wlc -> rr")
	}), "the scheduler is back to rr, repaired by the watchdog:\n%s", c.Log())
}
