package health

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/ipvs"
)

var (
	mA = netip.MustParseAddrPort("192.0.2.11:6443")
	mB = netip.MustParseAddrPort("192.0.2.12:6443")
	mC = netip.MustParseAddrPort("192.0.2.13:6443")
	mX = netip.MustParseAddrPort("192.0.2.99:6443")
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func ok() Outcome       { return Outcome{OK: true, Status: 200, Reason: "HTTP 200"} }
func refused() Outcome  { return Outcome{Fast: true, Reason: "connection refused"} }
func timedOut() Outcome { return Outcome{Reason: "timeout after 1s"} }

// fixture drives a Tracker and a fake kernel state through time.
type fixture struct {
	t      *testing.T
	tr     *Tracker
	now    time.Time
	kernel *ipvs.State // what the kernel holds; updated by apply
	plan   Plan
	events []Event
}

func newFixture(t *testing.T, cfg Config, masters ...netip.AddrPort) *fixture {
	t.Helper()
	tr, err := NewTracker(cfg, masters)
	require.NoError(t, err)
	return &fixture{t: t, tr: tr, now: t0}
}

func (f *fixture) at(d time.Duration) *fixture { f.now = t0.Add(d); return f }

func (f *fixture) advance(d time.Duration) *fixture { f.now = f.now.Add(d); return f }

func (f *fixture) probe(m netip.AddrPort, o Outcome) *fixture {
	f.events = append(f.events, f.tr.Observe(m, o, f.now)...)
	return f
}

// reconcile plans against the fake kernel and applies the plan to it,
// keeping the connection counters of real servers that stay.
func (f *fixture) reconcile() Plan {
	f.plan = f.tr.Plan(f.kernel, f.now)
	f.events = append(f.events, f.plan.Events...)
	old := map[netip.AddrPort]ipvs.RealServerStatus{}
	if f.kernel != nil {
		for _, rs := range f.kernel.RealServers {
			old[rs.Addr] = rs
		}
	}
	next := &ipvs.State{}
	for _, rs := range f.plan.RealServers {
		st := old[rs.Addr]
		st.RealServer = rs
		next.RealServers = append(next.RealServers, st)
	}
	f.kernel = next
	for _, a := range f.plan.Close {
		f.tr.ConnsClosed(a)
	}
	return f.plan
}

func (f *fixture) setActive(m netip.AddrPort, n int) {
	for i := range f.kernel.RealServers {
		if f.kernel.RealServers[i].Addr == m {
			f.kernel.RealServers[i].ActiveConns = n
		}
	}
}

// weights returns the plan's weights; absent masters are missing.
func weights(p Plan) map[netip.AddrPort]int {
	w := map[netip.AddrPort]int{}
	for _, rs := range p.RealServers {
		w[rs.Addr] = rs.Weight
	}
	return w
}

func (f *fixture) phase(m netip.AddrPort) Phase {
	for _, s := range f.tr.Snapshot() {
		if s.Address == m {
			return s.Phase
		}
	}
	f.t.Fatalf("no master %s", m)
	return ""
}

func (f *fixture) kinds() []EventKind {
	var k []EventKind
	for _, e := range f.events {
		k = append(k, e.Kind)
	}
	f.events = nil
	return k
}

func TestFirstProbeDecides(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	assert.Equal(t, Unknown, f.phase(mA))
	f.probe(mA, ok()).probe(mB, refused())
	assert.Equal(t, Up, f.phase(mA), "a single success brings an unknown master up, rise or not")
	assert.Equal(t, Down, f.phase(mB), "a single failure takes an unknown master down, fall or not")
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1}, weights(p), "a down master never in the kernel is not added")
	assert.Empty(t, p.Close)
	assert.False(t, p.FailOpen)
}

func TestRiseAndFall(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
	}{
		{"rise 2 fall 2", 2, 2},
		{"rise 1 fall 1", 1, 1},
		{"rise 3 fall 4", 3, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rise, cfg.Fall = tc.rise, tc.fall
			f := newFixture(t, cfg, mA, mB)
			f.probe(mA, ok()).probe(mB, ok())
			f.reconcile()
			for i := 1; i < tc.fall; i++ {
				f.at(time.Duration(i)*time.Second).probe(mA, timedOut())
				assert.Equal(t, Up, f.phase(mA), "failure %d of %d", i, tc.fall)
			}
			f.at(time.Duration(tc.fall)*time.Second).probe(mA, timedOut())
			assert.Equal(t, Down, f.phase(mA))
			p := f.reconcile()
			assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, weights(p), "weight 0 first")
			assert.Equal(t, []netip.AddrPort{mA}, p.Close, "its connections are reset")

			// An interleaved success resets the count.
			base := time.Duration(tc.fall+1) * time.Second
			for i := 1; i < tc.rise; i++ {
				f.at(base+time.Duration(i)*time.Second).probe(mA, ok())
				assert.Equal(t, Down, f.phase(mA), "success %d of %d", i, tc.rise)
			}
			if tc.rise > 1 {
				f.probe(mA, refused())
				for i := 1; i < tc.rise; i++ {
					f.probe(mA, ok())
				}
				assert.Equal(t, Down, f.phase(mA), "a failure in between restarts the count")
			}
			f.probe(mA, ok())
			assert.Equal(t, Up, f.phase(mA))
			p = f.reconcile()
			assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p))
		})
	}
}

func TestNextProbe(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.advance(time.Second).probe(mA, ok()) // past the first probe's spreading (TestNextProbeSpreadsTheStart)
	steady := f.tr.NextProbe(mA, 0.5)
	assert.Equal(t, cfg.Interval+time.Duration(float64(cfg.Interval)*cfg.Jitter*0.5), steady)
	assert.GreaterOrEqual(t, f.tr.NextProbe(mA, 0), cfg.Interval, "jitter only lengthens: at most one probe per interval")
	assert.Less(t, f.tr.NextProbe(mA, 0.999), cfg.Interval+time.Duration(float64(cfg.Interval)*cfg.Jitter)+time.Nanosecond)

	f.probe(mA, refused())
	assert.Equal(t, cfg.FastRetry, f.tr.NextProbe(mA, 0.5), "a refused probe of an up master is confirmed at once")
	f.probe(mA, refused())
	assert.Equal(t, Down, f.phase(mA))
	assert.Equal(t, steady, f.tr.NextProbe(mA, 0.5), "a down master is probed at the interval")

	f.probe(mB, timedOut())
	assert.Equal(t, cfg.FastRetry, f.tr.NextProbe(mB, 0.5), "a timeout of an up master is confirmed at once too: an unreachable master must be out within 3 s")
}

// A fleet whose watchdogs start at once probes every master at the same
// instant first; the next probe of an up master comes at a random point of
// a whole interval, so that the fleet's probes are spread from the second
// one on (the 10 % jitter alone would take some 80 probes), and never
// later than a steady probe would.
func TestNextProbeSpreadsTheStart(t *testing.T) {
	cfg := DefaultConfig()
	for _, c := range []struct {
		name     string
		first    Outcome
		adopt    bool // the kernel serves the master: a restarted watchdog
		noJitter bool
		rnd      float64
		want     time.Duration
	}{
		{name: "up at its first probe, earliest", first: ok(), rnd: 0, want: time.Duration(float64(cfg.Interval) * cfg.Jitter)},
		{name: "up at its first probe, middle", first: ok(), rnd: 0.5, want: time.Duration(float64(cfg.Interval) * (cfg.Jitter + 0.5))},
		{name: "up at its first probe, latest", first: ok(), rnd: 0.999, want: time.Duration(float64(cfg.Interval) * (cfg.Jitter + 0.999))},
		{name: "adopted up, first probe passed", first: ok(), adopt: true, rnd: 0.5, want: time.Duration(float64(cfg.Interval) * (cfg.Jitter + 0.5))},
		{name: "no jitter: the regular pace", first: ok(), noJitter: true, rnd: 0.5, want: cfg.Interval},
		{name: "down at its first probe: the regular pace", first: refused(), rnd: 0.5, want: cfg.Interval + time.Duration(float64(cfg.Interval)*cfg.Jitter*0.5)},
		{name: "adopted up, first probe failed: confirmed at once", first: refused(), adopt: true, rnd: 0.5, want: cfg.FastRetry},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := cfg
			if c.noJitter {
				cfg.Jitter = 0
			}
			f := newFixture(t, cfg, mA, mB)
			if c.adopt {
				f.tr.Adopt(&ipvs.State{RealServers: []ipvs.RealServerStatus{{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}}, {RealServer: ipvs.RealServer{Addr: mB, Weight: 1}}}}, f.now)
			}
			f.probe(mA, c.first)
			got := f.tr.NextProbe(mA, c.rnd)
			assert.Equal(t, c.want, got)
			assert.LessOrEqual(t, got, cfg.Interval+time.Duration(float64(cfg.Interval)*cfg.Jitter), "never a longer wait than a steady probe's")
			// From the second probe on, the regular pace.
			f.advance(got).probe(mA, ok())
			if c.first.OK {
				assert.GreaterOrEqual(t, f.tr.NextProbe(mA, 0), cfg.Interval, "once spread, at most one probe per interval")
			}
		})
	}
}

// With the fast retry, an apiserver killed right after a probe is out one
// interval plus (fall-1) retries later, not fall intervals later.
func TestFastFailRemovalLatency(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.reconcile()
	kill := time.Duration(0)
	next := f.tr.NextProbe(mA, 0.999) // worst jitter
	now := next
	for f.phase(mA) == Up {
		f.at(now).probe(mA, refused())
		now += f.tr.NextProbe(mA, 0.999)
	}
	out := f.now.Sub(t0) - kill
	assert.LessOrEqual(t, out, cfg.Interval+time.Duration(float64(cfg.Interval)*cfg.Jitter)+time.Duration(cfg.Fall-1)*cfg.FastRetry)
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, weights(f.reconcile()))
}

func TestFlappingHoldDown(t *testing.T) {
	cfg := DefaultConfig() // rise 2, fall 2, hold-down 5s, max 30s
	// Three masters: with B and C up, a majority serves without A, so its
	// hold-down applies.
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	f.reconcile()
	fall := func(at time.Duration) {
		f.at(at).probe(mA, refused()).probe(mA, refused())
		require.Equal(t, Down, f.phase(mA))
		f.reconcile()
	}
	rise := func(at time.Duration) {
		f.at(at).probe(mA, ok()).probe(mA, ok())
	}

	// First fall: no hold-down, a restart recovers after rise probes.
	fall(10 * time.Second)
	rise(11 * time.Second)
	assert.Equal(t, Up, f.phase(mA))
	f.kinds()

	// Second fall soon after: held down for 5s.
	fall(20 * time.Second)
	rise(21 * time.Second)
	assert.Equal(t, Down, f.phase(mA), "rise reached but held down")
	assert.Contains(t, f.kinds(), EventHeldDown)
	f.at(22*time.Second).probe(mA, ok())
	assert.Empty(t, f.kinds(), "the hold-down is reported once")
	assert.Equal(t, map[netip.AddrPort]int{mB: 1, mC: 1}, weights(f.at(22*time.Second).reconcile()), "kernel not flapped while held")
	f.at(25*time.Second).probe(mA, ok())
	assert.Equal(t, Up, f.phase(mA), "released at the end of the hold-down")

	// Third fall: hold-down doubles to 10s.
	fall(30 * time.Second)
	rise(31 * time.Second)
	f.at(39*time.Second).probe(mA, ok())
	assert.Equal(t, Down, f.phase(mA), "still held at +9s")
	f.at(40*time.Second).probe(mA, ok())
	assert.Equal(t, Up, f.phase(mA), "released at +10s")

	// Quiet for two MaxHoldDown: its 3 recent falls halved twice to 0, so
	// the next fall is a first one again, with no hold-down.
	fall(30*time.Second + 2*cfg.MaxHoldDown)
	rise(31*time.Second + 2*cfg.MaxHoldDown)
	assert.Equal(t, Up, f.phase(mA))
	snap := f.tr.Snapshot()
	assert.Equal(t, 1, snap[0].Flaps)
}

func TestHoldDownCap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HoldDown, cfg.MaxHoldDown = time.Second, 5*time.Second
	tr, err := NewTracker(cfg, []netip.AddrPort{mA})
	require.NoError(t, err)
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for n, d := range want {
		assert.Equal(t, d, tr.holdDown(n), "fall %d", n)
	}
	assert.Equal(t, 5*time.Second, tr.holdDown(1000), "no overflow")
}

func TestFailOpen(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	f.reconcile()
	f.kinds()
	f.at(time.Second).probe(mA, refused()).probe(mA, refused()).probe(mB, refused()).probe(mB, refused())
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 0, mC: 1}, weights(p))
	f.setActive(mA, 0)
	f.setActive(mB, 0)
	f.at(1100 * time.Millisecond).reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mC: 1}, weights(f.plan), "drained masters are deleted")
	f.kinds()

	f.at(2*time.Second).probe(mC, timedOut()).probe(mC, timedOut())
	p = f.reconcile()
	assert.True(t, p.FailOpen)
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, weights(p), "every master kept, never an empty service")
	assert.Empty(t, p.Close, "nothing is reset in fail-open")
	k := f.kinds()
	assert.Contains(t, k, EventFailOpen)
	f.at(2100 * time.Millisecond).reconcile()
	assert.True(t, f.plan.FailOpen)
	assert.NotContains(t, f.kinds(), EventFailOpen, "reported once")

	// One recovers (rise 2): normal selection resumes at once.
	f.at(3*time.Second).probe(mB, ok()).probe(mB, ok())
	p = f.reconcile()
	assert.False(t, p.FailOpen)
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1, mC: 0}, weights(p))
	assert.ElementsMatch(t, []netip.AddrPort{mA, mC}, p.Close)
	assert.Contains(t, f.kinds(), EventFailOpenEnd)
}

func TestNoDrainOnTheWayToFailOpen(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	f.reconcile()
	f.kinds()
	// Every master fails at about the same time (this node lost its
	// network, or the watchdog restarted during an outage): their failures
	// are confirmed one by one.
	f.probe(mA, refused()).probe(mB, timedOut()).probe(mC, refused())
	f.probe(mA, refused())
	require.Equal(t, Down, f.phase(mA))
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, weights(p), "the others are suspect: A keeps its place for now")
	assert.Empty(t, p.Close)
	f.probe(mC, refused())
	p = f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, weights(p))
	f.probe(mB, timedOut())
	p = f.reconcile()
	assert.True(t, p.FailOpen)
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, weights(p))
	assert.NotContains(t, f.kinds(), EventDrain, "no connection was reset on the way into fail-open")
}

func TestSuspectResolvedHealthyDrainsTheDown(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.reconcile()
	f.probe(mB, timedOut()).probe(mA, refused()).probe(mA, refused())
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p), "B is suspect: wait")
	f.probe(mB, ok())
	p = f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, weights(p), "B is healthy again: A is drained")
	assert.Equal(t, []netip.AddrPort{mA}, p.Close)
}

func TestFailOpenAllDownFromStart(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.probe(mA, refused()).probe(mB, timedOut())
	p := f.reconcile()
	assert.True(t, p.FailOpen)
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p))
}

func TestDrain(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct {
		name    string
		active  int
		after   time.Duration
		removed bool
	}{
		{"no active connections: deleted at the next pass", 0, 100 * time.Millisecond, true},
		{"active connections: kept with weight 0", 3, 29 * time.Second, false},
		{"active connections: deleted at the drain timeout", 3, 30 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cfg, mA, mB)
			f.probe(mA, ok()).probe(mB, ok())
			f.reconcile()
			f.setActive(mA, 3)
			f.at(time.Second).probe(mA, refused()).probe(mA, refused())
			p := f.reconcile()
			require.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, weights(p), "weight 0 first, even with connections")
			f.setActive(mA, tc.active)
			p = f.at(time.Second + tc.after).reconcile()
			_, present := weights(p)[mA]
			assert.Equal(t, !tc.removed, present)
			if tc.removed {
				assert.Contains(t, f.kinds(), EventRemove)
			}
		})
	}
}

func TestDrainNotInKernel(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.reconcile()
	f.kernel = nil // flushed
	f.probe(mA, refused()).probe(mA, refused())
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mB: 1}, weights(p), "not re-added with weight 0 just to be deleted")
	assert.Equal(t, []netip.AddrPort{mA}, p.Close, "its connections are still reset")
}

func TestCloseStaysDueUntilDone(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.reconcile()
	f.setActive(mA, 2)
	f.probe(mA, refused()).probe(mA, refused())
	// The apply failed: the caller did not call ConnsClosed.
	p := f.tr.Plan(f.kernel, f.now)
	assert.Equal(t, []netip.AddrPort{mA}, p.Close)
	p = f.tr.Plan(f.kernel, f.now)
	assert.Equal(t, []netip.AddrPort{mA}, p.Close, "still due")
	f.tr.ConnsClosed(mA)
	p = f.tr.Plan(f.kernel, f.now)
	assert.Empty(t, p.Close)
}

func TestAdopt(t *testing.T) {
	kernel := &ipvs.State{RealServers: []ipvs.RealServerStatus{
		{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}, ActiveConns: 4},
		{RealServer: ipvs.RealServer{Addr: mB, Weight: 0}, ActiveConns: 1},
	}}
	f := newFixture(t, DefaultConfig(), mA, mB, mC)
	f.tr.Adopt(kernel, t0)
	f.kernel = kernel
	assert.Equal(t, Up, f.phase(mA))
	assert.Equal(t, Down, f.phase(mB))
	assert.Equal(t, Down, f.phase(mC))
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 0}, weights(p), "the kernel's state is kept as it is")
	assert.Empty(t, p.Close, "no connection is reset at start")
	assert.Empty(t, p.Events)

	// A single failed probe does not remove an adopted master.
	f.probe(mA, timedOut())
	assert.Equal(t, Up, f.phase(mA))
	// C comes back after rise successes only.
	f.probe(mC, ok())
	assert.Equal(t, Down, f.phase(mC))
	f.probe(mC, ok())
	assert.Equal(t, Up, f.phase(mC))
}

func TestAdoptHealthyRestartChangesNothing(t *testing.T) {
	kernel := &ipvs.State{RealServers: []ipvs.RealServerStatus{
		{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}, ActiveConns: 4},
		{RealServer: ipvs.RealServer{Addr: mB, Weight: 1}, ActiveConns: 2},
	}}
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.tr.Adopt(kernel, t0)
	f.kernel = kernel
	f.probe(mA, ok()).probe(mB, ok())
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p))
	assert.Empty(t, p.Close)
	assert.Empty(t, f.kinds())
}

func TestAdoptFailOpenRestartChangesNothing(t *testing.T) {
	kernel := &ipvs.State{RealServers: []ipvs.RealServerStatus{
		{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}},
		{RealServer: ipvs.RealServer{Addr: mB, Weight: 1}},
	}}
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.tr.Adopt(kernel, t0)
	f.kernel = kernel
	for range 2 {
		f.probe(mA, refused()).probe(mB, refused())
		p := f.reconcile()
		assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p), "still every master")
		assert.Empty(t, p.Close)
	}
	assert.True(t, f.tr.FailOpen())
}

func TestAdoptNoService(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA, mB)
	f.tr.Adopt(nil, t0)
	assert.Equal(t, Unknown, f.phase(mA))
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, weights(p), "unprobed masters are kept optimistically")
}

func TestExtrasDrain(t *testing.T) {
	f := newFixture(t, DefaultConfig(), mA)
	f.kernel = &ipvs.State{RealServers: []ipvs.RealServerStatus{
		{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}},
		{RealServer: ipvs.RealServer{Addr: mX, Weight: 1}, ActiveConns: 2},
	}}
	f.tr.Adopt(f.kernel, t0)
	p := f.reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mX: 0}, weights(p), "a real server that is no master drains first")
	assert.Equal(t, []netip.AddrPort{mX}, p.Close)
	p = f.at(time.Second).reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mX: 0}, weights(p))
	assert.Empty(t, p.Close)
	f.setActive(mX, 0)
	p = f.at(2 * time.Second).reconcile()
	assert.Equal(t, map[netip.AddrPort]int{mA: 1}, weights(p))
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	require.NoError(t, good.Validate())
	for name, mut := range map[string]func(*Config){
		"rise 0":           func(c *Config) { c.Rise = 0 },
		"fall 0":           func(c *Config) { c.Fall = 0 },
		"interval 0":       func(c *Config) { c.Interval = 0 },
		"jitter 2":         func(c *Config) { c.Jitter = 2 },
		"fast retry 0":     func(c *Config) { c.FastRetry = 0 },
		"hold-down -1s":    func(c *Config) { c.HoldDown = -time.Second },
		"max hold-down 1s": func(c *Config) { c.MaxHoldDown = time.Second },
		"drain timeout -1": func(c *Config) { c.DrainTimeout = -1 },
		"weight 0":         func(c *Config) { c.Weight = 0 },
	} {
		c := good
		mut(&c)
		assert.Error(t, c.Validate(), name)
	}
	_, err := NewTracker(good, nil)
	assert.Error(t, err)
	_, err = NewTracker(good, []netip.AddrPort{mA, mA})
	assert.ErrorContains(t, err, "listed twice")
}

func BenchmarkObserve(b *testing.B) {
	tr, err := NewTracker(DefaultConfig(), []netip.AddrPort{mA, mB, mC})
	require.NoError(b, err)
	outs := []Outcome{ok(), ok(), refused(), ok(), timedOut(), ok()}
	now := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		now = now.Add(time.Millisecond)
		tr.Observe(mA, outs[i%len(outs)], now)
		tr.NextProbe(mA, 0.5)
	}
}

func BenchmarkPlanSteady(b *testing.B) {
	tr, err := NewTracker(DefaultConfig(), []netip.AddrPort{mA, mB, mC})
	require.NoError(b, err)
	for _, m := range []netip.AddrPort{mA, mB, mC} {
		tr.Observe(m, ok(), t0)
	}
	kernel := &ipvs.State{RealServers: []ipvs.RealServerStatus{
		{RealServer: ipvs.RealServer{Addr: mA, Weight: 1}},
		{RealServer: ipvs.RealServer{Addr: mB, Weight: 1}},
		{RealServer: ipvs.RealServer{Addr: mC, Weight: 1}},
	}}
	b.ReportAllocs()
	for b.Loop() {
		tr.Plan(kernel, t0)
	}
}

// A master that keeps flapping after its second fall stays out: every
// failure while it is held down starts the hold-down again.
func TestFlappingMasterStaysOutWhileItFlaps(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	// The first fall has no hold-down: it comes back after Rise successes.
	f.probe(mB, refused()).probe(mB, refused())
	require.Equal(t, Down, f.phase(mB))
	for range cfg.Rise {
		f.advance(cfg.Interval).probe(mB, ok())
	}
	require.Equal(t, Up, f.phase(mB))
	// The second fall sets a hold-down.
	f.advance(cfg.Interval).probe(mB, refused()).probe(mB, refused())
	for range cfg.Rise {
		f.advance(cfg.Interval).probe(mB, ok())
	}
	require.Equal(t, Down, f.phase(mB), "held down after the second fall")
	// It goes on flapping: one failure every few seconds, each inside the
	// hold-down, keeps it out however long that lasts.
	for range 20 {
		f.advance(cfg.HoldDown/2).probe(mB, refused())
		f.advance(cfg.Interval).probe(mB, ok())
		f.advance(cfg.Interval).probe(mB, ok())
		require.Equal(t, Down, f.phase(mB), "a master still flapping stays out")
	}
	// Once steadily healthy for the hold-down, it comes back.
	for range 20 {
		f.advance(cfg.Interval).probe(mB, ok())
	}
	assert.Equal(t, Up, f.phase(mB))
}

func TestConclusiveFailure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Fall = 3
	f := newFixture(t, cfg, mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	f.reconcile()
	f.at(time.Second).probe(mA, refused())
	assert.Equal(t, Up, f.phase(mA), "an ordinary refused probe counts one of fall")
	gone := refused()
	gone.Conclusive = true
	f.at(2*time.Second).probe(mA, gone)
	assert.Equal(t, Down, f.phase(mA), "a conclusive one takes it down at once")
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, weights(f.reconcile()))
	f.at(3*time.Second).probe(mA, ok())
	f.at(4*time.Second).probe(mA, gone)
	f.at(5*time.Second).probe(mA, ok())
	assert.Equal(t, Down, f.phase(mA), "it does not change how a down master rises")
	f.at(6*time.Second).probe(mA, ok())
	assert.Equal(t, Up, f.phase(mA))
}

func TestAddedMasterNeedsRiseAndRemovedOneDrains(t *testing.T) {
	cfg := DefaultConfig()
	a, b := netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.14:6443")
	tr, err := NewTracker(cfg, []netip.AddrPort{a})
	require.NoError(t, err)
	now := time.Unix(1000, 0)
	tr.Observe(a, Outcome{OK: true, Status: 200}, now)
	require.True(t, tr.Add(b, now))
	assert.False(t, tr.Add(b, now), "known already")
	p := tr.Plan(nil, now)
	assert.Equal(t, []ipvs.RealServer{{Addr: a, Weight: cfg.Weight}}, p.RealServers, "not probed yet: not in service")
	for i := range cfg.Rise {
		tr.Observe(b, Outcome{OK: true, Status: 200}, now.Add(time.Duration(i+1)*time.Second))
	}
	now = now.Add(time.Minute)
	p = tr.Plan(nil, now)
	assert.Equal(t, []ipvs.RealServer{{Addr: a, Weight: cfg.Weight}, {Addr: b, Weight: cfg.Weight}}, p.RealServers)

	require.True(t, tr.Remove(b))
	cur := &ipvs.State{RealServers: []ipvs.RealServerStatus{{RealServer: ipvs.RealServer{Addr: a, Weight: 1}}, {RealServer: ipvs.RealServer{Addr: b, Weight: 1}, ActiveConns: 3}}}
	p = tr.Plan(cur, now)
	assert.Equal(t, []ipvs.RealServer{{Addr: a, Weight: cfg.Weight}, {Addr: b, Weight: 0}}, p.RealServers, "drained first")
	assert.Equal(t, []netip.AddrPort{b}, p.Close)
	assert.Len(t, tr.Snapshot(), 1)
	assert.False(t, tr.Remove(a), "the last master stays")
}
