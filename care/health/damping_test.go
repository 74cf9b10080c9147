package health

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	mD = netip.MustParseAddrPort("192.0.2.14:6443")
	mE = netip.MustParseAddrPort("192.0.2.15:6443")
)

func status500() Outcome { return Outcome{Fast: true, Status: 500, Reason: "HTTP 500"} }

// sim probes every master on the schedule the tracker asks for (NextProbe,
// with a seeded random jitter), asks health for each outcome and applies a
// plan after every probe, as the watchdog does.
type sim struct {
	f      *fixture
	rnd    *rand.Rand
	next   map[netip.AddrPort]time.Time
	health func(m netip.AddrPort, at time.Time) Outcome
	// step, when set, runs after each probe and its reconcile.
	step func()
}

func newSim(t *testing.T, cfg Config, masters ...netip.AddrPort) *sim {
	return newSimSeed(t, 1, cfg, masters...)
}

func newSimSeed(t *testing.T, seed uint64, cfg Config, masters ...netip.AddrPort) *sim {
	s := &sim{f: newFixture(t, cfg, masters...), rnd: rand.New(rand.NewPCG(seed, 2)), next: map[netip.AddrPort]time.Time{}}
	s.health = func(netip.AddrPort, time.Time) Outcome { return ok() }
	for i, m := range masters {
		s.f.probe(m, ok())
		s.next[m] = t0.Add(time.Duration(i) * 100 * time.Millisecond)
	}
	s.f.reconcile()
	return s
}

// run advances to until, probe by probe.
func (s *sim) run(until time.Time) {
	for {
		var m netip.AddrPort
		for a, at := range s.next {
			if !m.IsValid() || at.Before(s.next[m]) || (at.Equal(s.next[m]) && a.Compare(m) < 0) {
				m = a
			}
		}
		if s.next[m].After(until) {
			s.f.now = until
			return
		}
		s.f.now = s.next[m]
		s.f.probe(m, s.health(m, s.f.now))
		s.next[m] = s.f.now.Add(s.f.tr.NextProbe(m, s.rnd.Float64()))
		s.f.reconcile()
		if s.step != nil {
			s.step()
		}
	}
}

func (s *sim) serving(m netip.AddrPort) bool { return weights(s.f.plan)[m] > 0 }

func (s *sim) servingCount() int {
	n := 0
	for _, w := range weights(s.f.plan) {
		if w > 0 {
			n++
		}
	}
	return n
}

// Masters that fail at most once a minute each (killed, cut off, answering
// 500 in turn, one every 20 s over three masters) and are repaired as soon
// as the watchdog took them out come back after Rise probes every time: the
// failures do not pile up into ever longer hold-downs (the old damping,
// forgiving only after 5 minutes up, held the 6th one for over a minute).
func TestFailuresMinutesApartRecoverAfterRise(t *testing.T) {
	cfg := DefaultConfig()
	masters := []netip.AddrPort{mA, mB, mC}
	s := newSim(t, cfg, masters...)
	kinds := []Outcome{refused(), timedOut(), status500()}
	broken := map[netip.AddrPort]Outcome{}
	s.health = func(m netip.AddrPort, _ time.Time) Outcome {
		if o, bad := broken[m]; bad {
			return o
		}
		return ok()
	}
	// The longest a repaired master may take: Rise probes, each at most an
	// interval with its jitter after the last.
	bound := time.Duration(cfg.Rise) * (cfg.Interval + time.Duration(float64(cfg.Interval)*cfg.Jitter))
	const faults = 60
	for i := range faults {
		m := masters[i%len(masters)]
		at := t0.Add(time.Duration(i+1) * 20 * time.Second)
		s.run(at)
		require.True(t, s.serving(m), "fault %d: %s serves before it fails", i, m)
		broken[m] = kinds[(i/len(masters))%len(kinds)]
		s.step = func() {
			if !s.serving(m) {
				delete(broken, m) // repaired once the watchdog took it out
			}
		}
		s.run(at.Add(10 * time.Second))
		s.step = nil
		require.NotContains(t, broken, m, "fault %d: %s taken out", i, m)
		var repaired, back time.Time
		for _, e := range s.f.events {
			switch {
			case e.Master == m && e.Kind == EventDrain:
				repaired = e.At
			case e.Master == m && e.Kind == EventAdmit && !repaired.IsZero():
				back = e.At
			}
			assert.NotEqual(t, EventHeldDown, e.Kind, "fault %d: %s", i, e)
		}
		require.False(t, back.IsZero(), "fault %d: %s back within 10 s", i, m)
		assert.LessOrEqual(t, back.Sub(repaired), bound, "fault %d (%s): repair -> back", i, kinds[(i/len(masters))%len(kinds)].Reason)
		s.f.events = nil
	}
	for _, st := range s.f.tr.Snapshot() {
		assert.LessOrEqual(t, st.Flaps, 1, "%s: falls a minute apart are not recent", st.Address)
	}
}

// The count of recent falls halves for every MaxHoldDown of quiet, and
// sets the hold-down.
func TestDecay(t *testing.T) {
	cfg := DefaultConfig() // hold-down 5s, max 30s
	for _, tc := range []struct {
		name  string
		falls []time.Duration // when the master falls, repaired at once
		flaps int             // recent falls after the last one
		hold  time.Duration   // its hold-down
	}{
		{"one fall", []time.Duration{0}, 1, 0},
		{"second fall 20s after", []time.Duration{0, 20 * time.Second}, 2, 5 * time.Second},
		{"second fall 31s after", []time.Duration{0, 31 * time.Second}, 1, 0},
		{"a minute apart, ten times", []time.Duration{0, time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute,
			5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute, 9 * time.Minute}, 1, 0},
		{"three in 20s", []time.Duration{0, 10 * time.Second, 30 * time.Second}, 3, 10 * time.Second},
		{"three in 30s, then 35s quiet", []time.Duration{0, 10 * time.Second, 30 * time.Second, 65 * time.Second}, 2, 5 * time.Second},
		{"three in 30s, then 65s quiet", []time.Duration{0, 10 * time.Second, 30 * time.Second, 95 * time.Second}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, cfg, mA, mB, mC)
			f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
			var fellAt time.Time
			for i, at := range tc.falls {
				// Healthy probes every second until the fall: it comes back
				// when its hold-down allows.
				for f.now.Add(cfg.Interval).Before(t0.Add(at)) {
					f.advance(cfg.Interval).probe(mA, ok())
				}
				require.Equal(t, Up, f.phase(mA), "fall %d: up before it", i)
				f.at(at).probe(mA, refused()).probe(mA, refused())
				require.Equal(t, Down, f.phase(mA))
				fellAt = f.now
			}
			// Repaired at once: Rise probes later it is up, or held.
			for range cfg.Rise {
				f.advance(cfg.Interval).probe(mA, ok())
			}
			st := f.tr.Snapshot()[0]
			assert.Equal(t, tc.flaps, st.Flaps, "recent falls")
			if tc.hold == 0 {
				assert.Equal(t, Up, st.Phase, "no hold-down: up after Rise probes")
				return
			}
			assert.Equal(t, Down, st.Phase)
			assert.True(t, st.HeldDown)
			assert.Equal(t, fellAt.Add(tc.hold), st.HoldUntil, "hold-down")
		})
	}
}

// A master that fails while held down keeps its count: no quiet period
// passes while it flaps, however long it flaps.
func TestNoDecayWhileFlapping(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	for range 2 {
		f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
		f.advance(time.Second).probe(mA, ok()).advance(time.Second).probe(mA, ok())
	}
	require.Equal(t, Down, f.phase(mA))
	for range 300 { // 5 minutes: a failure every 2 s
		f.advance(time.Second).probe(mA, refused()).advance(time.Second).probe(mA, ok())
		require.Equal(t, Down, f.phase(mA))
	}
	assert.Equal(t, 2, f.tr.Snapshot()[0].Flaps)
}

// A healthy master is never held down while fewer than a majority of the
// masters serve; it is, while the others carry the load.
func TestHoldDownWaivedForCapacity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		masters []netip.AddrPort
		held    []netip.AddrPort // flapped into a hold-down, healthy again
		fail    []netip.AddrPort // then fail one by one
		// back[i] is the held master back after fail[i], none when zero.
		back []netip.AddrPort
	}{
		{"3 masters", []netip.AddrPort{mA, mB, mC}, []netip.AddrPort{mA}, []netip.AddrPort{mB, mC}, []netip.AddrPort{mA, {}}},
		{"5 masters", []netip.AddrPort{mA, mB, mC, mD, mE}, []netip.AddrPort{mA, mB}, []netip.AddrPort{mC, mD, mE},
			[]netip.AddrPort{mA, mB, {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			f := newFixture(t, cfg, tc.masters...)
			for _, m := range tc.masters {
				f.probe(m, ok())
			}
			f.reconcile()
			for i, m := range tc.held {
				// One more fall for the first: it has more recent falls and
				// comes back last.
				for range 3 - min(i, 1) {
					f.advance(time.Second).probe(m, refused()).probe(m, refused())
					f.advance(time.Second).probe(m, ok()).advance(time.Second).probe(m, ok())
				}
				require.Equal(t, Down, f.phase(m))
				require.True(t, f.tr.Snapshot()[slicesIndex(tc.masters, m)].HeldDown)
			}
			f.reconcile()
			majority := len(tc.masters)/2 + 1
			for i, m := range tc.fail {
				f.kinds()
				f.advance(100*time.Millisecond).probe(m, refused()).probe(m, refused())
				p := f.reconcile()
				up := 0
				for _, st := range f.tr.Snapshot() {
					if st.Phase == Up {
						up++
					}
				}
				if want := tc.back[i]; want.IsValid() {
					assert.Equal(t, Up, f.phase(want), "after %s fell, %s is back at once", m, want)
					assert.Equal(t, cfg.Weight, weights(p)[want], "in the same plan")
					assert.Equal(t, majority, up, "just enough come back for a majority")
				} else {
					assert.Less(t, up, majority, "no healthy master left to bring back")
				}
				for _, h := range tc.held {
					if f.phase(h) == Down {
						assert.True(t, f.tr.Snapshot()[slicesIndex(tc.masters, h)].HeldDown, "%s still held: the others carry the load", h)
					}
				}
			}
		})
	}
}

// A master held down and not yet healthy again comes back as soon as it
// passes Rise, hold-down or not, when fewer than a majority serve.
func TestCapacityWaiverNeedsRise(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	for range 2 {
		f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
		f.advance(time.Second).probe(mA, ok()).advance(time.Second).probe(mA, ok())
	}
	require.Equal(t, Down, f.phase(mA))
	f.advance(time.Second).probe(mA, refused()) // it fails again: not healthy
	f.probe(mB, refused()).probe(mB, refused())
	f.reconcile()
	assert.Equal(t, Down, f.phase(mA), "an unhealthy master is not put back")
	f.advance(time.Second).probe(mA, ok())
	assert.Equal(t, Down, f.phase(mA), "one success of Rise 2")
	ev := f.advance(time.Second).tr.Observe(mA, ok(), f.now)
	assert.Equal(t, Up, f.phase(mA), "Rise passed, only one of three serves: back despite its hold-down")
	require.Len(t, ev, 1)
	assert.Contains(t, ev[0].Reason, "fewer than a majority")
	assert.True(t, f.now.Before(f.tr.Snapshot()[0].HoldUntil), "well inside its hold-down")
}

// A master whose health changes every 125 ms to 2 s (cycles of 250 ms to
// 4 s) leaves the service at most twice in any 10 s and, once its flapping
// is seen, is out most of the time, while the other two carry the load.
// At 4 Hz (a 250 ms cycle) a failed probe's fast retry lands in the
// healthy half: the probes rarely see two failures in a row, and only
// counting failures over the last probes sees the flapping.
func TestFlappingStaysMostlyOut(t *testing.T) {
	for _, period := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second, 4 * time.Second} {
		t.Run(fmt.Sprint(period), func(t *testing.T) {
			// The probes' jitter decides what they see of the flapping:
			// the figures are over many runs with different jitter.
			const runs = 50
			var fracs, firsts float64
			var seen, removed int
			for seed := range uint64(runs) {
				r := flap(t, seed, period)
				removed += len(r)
				if len(r) > 0 {
					seen++
					fracs += r[0].in
					firsts += r[0].first.Seconds()
				}
			}
			t.Logf("flapping every %s for 30 s, %d runs: %.1f removals on average, seen in %d, after %.1f s, then in service %.0f%% of the time",
				period, runs, float64(removed)/runs, seen, firsts/float64(max(seen, 1)), fracs/float64(max(seen, 1))*100)
			assert.Equal(t, runs, seen, "the flapping is seen")
			// What is left in service is mostly the time between its first
			// and second removal, which only Fall failures in a row can end
			// (a flapping master passes many probes): after the second it
			// is held down while it flaps.
			assert.Less(t, fracs/float64(seen), 0.3, "out most of the time once seen")
		})
	}
}

type flapRun struct {
	first time.Duration // first removal after the flapping began
	in    float64       // fraction of the time in service after it
}

// flap flaps mA of three masters with period for 30 s and checks that it
// leaves the service at most twice in any 10 s, that the others stay and
// that it is back once steady. It returns one flapRun per removal, the
// figures in the first.
func flap(t *testing.T, seed uint64, period time.Duration) []flapRun {
	t.Helper()
	cfg := DefaultConfig()
	s := newSimSeed(t, seed, cfg, mA, mB, mC)
	start, end := t0.Add(time.Second), t0.Add(31*time.Second)
	s.health = func(m netip.AddrPort, at time.Time) Outcome {
		if m != mA || at.Before(start) || !at.Before(end) || at.Sub(start)%period < period/2 {
			return ok()
		}
		return refused()
	}
	var removals []time.Time
	var in time.Duration // in service after the first removal
	was, since := true, t0
	s.step = func() {
		now := s.serving(mA)
		if was && !now {
			removals = append(removals, s.f.now)
		}
		if was && len(removals) > 0 {
			in += s.f.now.Sub(since)
		}
		was, since = now, s.f.now
		require.GreaterOrEqual(t, s.servingCount(), 2, "the steady masters stay in")
	}
	s.run(end)
	if was && len(removals) > 0 {
		in += end.Sub(since)
	}
	for w := start; w.Before(end); w = w.Add(time.Second) {
		n := 0
		for _, r := range removals {
			if !r.Before(w) && r.Before(w.Add(10*time.Second)) {
				n++
			}
		}
		require.LessOrEqual(t, n, 2, "seed %d: removals in the 10 s from %s", seed, w.Sub(t0))
	}
	// Once it stops flapping it is back after its hold-down.
	s.step = nil
	s.run(end.Add(cfg.MaxHoldDown + 3*cfg.Interval))
	require.True(t, s.serving(mA), "seed %d: back once steadily healthy", seed)
	runs := make([]flapRun, len(removals))
	if len(removals) > 0 {
		runs[0] = flapRun{first: removals[0].Sub(start), in: float64(in) / float64(end.Sub(removals[0]))}
	}
	return runs
}

// With damping off (--hold-down=0) the same flapping is in service for a
// good part of the time: the figure above is the damping's doing.
func TestFlappingWithoutHoldDownIsOftenIn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HoldDown = 0
	s := newSim(t, cfg, mA, mB, mC)
	start, end := t0.Add(time.Second), t0.Add(31*time.Second)
	s.health = func(m netip.AddrPort, at time.Time) Outcome {
		if m != mA || at.Before(start) || at.Sub(start)%(4*time.Second) < 2*time.Second {
			return ok()
		}
		return refused()
	}
	removals := 0
	was := true
	s.step = func() {
		if now := s.serving(mA); was != now {
			if was {
				removals++
			}
			was = now
		}
	}
	s.run(end)
	assert.Greater(t, removals, 2, "hysteresis alone lets a slow flapper back every cycle")
}

func TestHeldDownStatus(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
	f.advance(time.Second).probe(mA, ok()).advance(time.Second).probe(mA, ok())
	require.Equal(t, Up, f.phase(mA), "no hold-down after the first fall")
	f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
	f.advance(time.Second).probe(mA, ok())
	st := f.tr.Snapshot()[0]
	assert.False(t, st.HeldDown, "one success of Rise 2: not healthy yet")
	f.advance(time.Second).probe(mA, ok())
	st = f.tr.Snapshot()[0]
	require.True(t, st.HeldDown)
	assert.Equal(t, 2, st.Flaps)
	assert.Contains(t, st.HeldReason, "after 2 recent falls")
	assert.Contains(t, st.HeldReason, st.HoldUntil.Format(time.RFC3339))
	assert.Contains(t, st.HeldReason, "fewer than 2 of the 3 masters serve")
	f.at(time.Hour).probe(mA, ok())
	assert.False(t, f.tr.Snapshot()[0].HeldDown, "released")
}

func slicesIndex(s []netip.AddrPort, m netip.AddrPort) int {
	for i, a := range s {
		if a == m {
			return i
		}
	}
	return -1
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// A master that may be flapping is probed at irregular intervals, still
// never more often than once per Interval; a repaired master after its
// first fall at the regular pace.
func TestFlapperProbedIrregularly(t *testing.T) {
	cfg := DefaultConfig()
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	regular := cfg.Interval + time.Duration(float64(cfg.Interval)*cfg.Jitter*0.99)
	f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
	assert.LessOrEqual(t, f.tr.NextProbe(mA, 0.99), regular, "down after a first fall: regular pace")
	f.advance(time.Second).probe(mA, ok()).advance(time.Second).probe(mA, ok())
	require.Equal(t, Up, f.phase(mA))
	assert.Greater(t, f.tr.NextProbe(mA, 0.99), regular, "back after a recent fall: irregular")
	assert.Equal(t, cfg.Interval, f.tr.NextProbe(mA, 0), "never more often than once per interval")
	assert.LessOrEqual(t, f.tr.NextProbe(mB, 0.99), regular, "a steady master: regular pace")
}

// An Up master that fails every other probe falls on Fall failures among
// its last 2*Fall-1 probes, with a hold-down at once: failing every other
// probe is flapping already. Failures further apart than that window do
// not add up, and only the probes since it last went Up count.
func TestAlternateFailuresFall(t *testing.T) {
	cfg := DefaultConfig() // Fall 2: a window of 3 probes
	f := newFixture(t, cfg, mA, mB, mC)
	f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())

	f.advance(time.Second).probe(mA, refused())
	f.advance(cfg.FastRetry).probe(mA, ok())
	require.Equal(t, Up, f.phase(mA), "one failure of Fall 2")
	d := f.tr.NextProbe(mA, 0.5)
	assert.Greater(t, d, cfg.FastRetry, "re-probed soon, off the fast retry's phase")
	assert.Less(t, d, 2*cfg.FastRetry, "re-probed soon, off the fast retry's phase")
	ev := f.advance(d).tr.Observe(mA, refused(), f.now)
	assert.Equal(t, Down, f.phase(mA), "2 of the last 3 probes failed")
	require.Len(t, ev, 1)
	assert.Contains(t, ev[0].Reason, "2 of the last 3 probes failed")
	st := f.tr.Snapshot()[0]
	assert.Equal(t, 2, st.Flaps, "counts as flapping")
	assert.True(t, f.tr.MayFlap(mA), "held down: may be flapping")
	assert.True(t, st.HoldUntil.After(f.now), "held down from this fall")

	// mB: failures 3 probes apart stay Up, and it goes back to the
	// regular pace once its last 3 probes passed.
	f.advance(time.Second).probe(mB, refused()).advance(cfg.FastRetry).probe(mB, ok())
	f.advance(cfg.FastRetry).probe(mB, ok())
	assert.Less(t, f.tr.NextProbe(mB, 0.99), 2*cfg.FastRetry, "a failure still among the last 3")
	assert.True(t, f.tr.MayFlap(mB), "a failure among its last 3 probes")
	f.advance(cfg.FastRetry).probe(mB, ok())
	assert.GreaterOrEqual(t, f.tr.NextProbe(mB, 0), cfg.Interval, "last 3 clean: regular pace")
	assert.False(t, f.tr.MayFlap(mB), "last 3 clean, never fell")
	f.advance(time.Second).probe(mB, refused())
	assert.Equal(t, Up, f.phase(mB), "failures 3 probes apart do not add up")
	f.advance(cfg.FastRetry).probe(mB, ok())

	// mC falls and rises: its failures before it went Up do not count.
	f.advance(time.Second).probe(mC, refused()).probe(mC, refused())
	require.Equal(t, Down, f.phase(mC))
	f.advance(time.Second).probe(mC, ok()).advance(time.Second).probe(mC, ok())
	require.Equal(t, Up, f.phase(mC))
	f.advance(time.Second).probe(mC, refused())
	assert.Equal(t, Up, f.phase(mC), "the failures before it rose are forgotten")
}

// A healthy answer that needed TCP retransmissions is never a failure (a
// loaded host retransmits too), but makes the master suspect: re-probed
// soon, on new connections, as a new client connects, until its last
// 2*Fall-1 probes are clean. Over a kept connection TCP rides out a link
// that flaps; a new connection's SYN lost in a down phase does not.
func TestRetransmittedAnswerMakesAMasterSuspect(t *testing.T) {
	cfg := DefaultConfig() // Fall 2: a window of 3 probes
	retransmitted := Outcome{OK: true, Status: 200, Reason: "HTTP 200", Retransmitted: true}
	f := newFixture(t, cfg, mA, mB)
	f.probe(mA, ok()).probe(mB, ok())
	assert.False(t, f.tr.MayFlap(mA))

	f.advance(time.Second).probe(mA, retransmitted)
	assert.Equal(t, Up, f.phase(mA), "a healthy answer over a link that lost a packet")
	assert.True(t, f.tr.MayFlap(mA), "suspect after a retransmitted answer")
	d := f.tr.NextProbe(mA, 0.5)
	assert.Less(t, d, 2*cfg.FastRetry, "re-probed soon")
	for range 3 {
		f.advance(cfg.FastRetry).probe(mA, ok())
	}
	assert.False(t, f.tr.MayFlap(mA), "last 3 clean")
	assert.GreaterOrEqual(t, f.tr.NextProbe(mA, 0), cfg.Interval, "back to the regular pace")

	// Answers that keep needing retransmissions keep it suspect, and in
	// service.
	for range 6 {
		f.advance(cfg.FastRetry).probe(mA, retransmitted)
	}
	assert.Equal(t, Up, f.phase(mA), "retransmissions alone never take a master out")
	assert.True(t, f.tr.MayFlap(mA))

	// The probes it then gets see the flapping: a failure among them
	// counts with the window as any failure does.
	f.advance(cfg.FastRetry).probe(mA, refused())
	f.advance(cfg.FastRetry).probe(mA, retransmitted)
	require.Equal(t, Up, f.phase(mA), "one failure of Fall 2")
	f.advance(cfg.FastRetry).probe(mA, refused())
	assert.Equal(t, Down, f.phase(mA), "2 of the last 3 probes failed")

	// After a fall (here mB's kill, with mA down too: no master serves) a
	// retransmitted answer counts towards Rise: capacity first.
	f.advance(time.Second).probe(mB, refused()).probe(mB, refused())
	require.Equal(t, Down, f.phase(mB))
	f.advance(time.Second).probe(mB, retransmitted).advance(time.Second).probe(mB, retransmitted)
	assert.Equal(t, Up, f.phase(mB), "back after Rise answers, retransmitted or not, when fewer than a majority serve")
}

// After a fall, while the others carry the load, an answer that needed a
// retransmission timeout does not count towards Rise: a master whose link
// flaps answers so between its lost SYNs, and came back on two of them. A
// repaired master whose first answers were slow comes back after Rise
// clean ones, with no hold-down; a slow answer after a clean one is a
// relapse (the hold-down starts); fewer than a majority serving, slow
// answers count.
func TestSlowedAnswerAfterAFallIsNoRise(t *testing.T) {
	cfg := DefaultConfig()
	f := threeUp(t, cfg)
	f.advance(time.Second).probe(mB, timedOut()).probe(mB, timedOut())
	require.Equal(t, Down, f.phase(mB))
	for range 3 {
		f.advance(time.Second).probe(mB, slowed())
	}
	assert.Equal(t, Down, f.phase(mB), "slowed answers are no rise while mA and mC serve")
	f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, ok())
	assert.Equal(t, Up, f.phase(mB), "back after Rise clean answers")
	assert.True(t, f.tr.Snapshot()[1].HoldUntil.IsZero() || !f.tr.Snapshot()[1].HoldUntil.After(f.now), "with no hold-down")

	// A minute later (its fall forgotten) it falls again and relapses.
	f.advance(time.Minute).probe(mB, timedOut()).probe(mB, timedOut())
	f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, slowed())
	relapse := f.now
	f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, ok())
	assert.Equal(t, Down, f.phase(mB), "held down after a slowed answer that followed a clean one")
	assert.Equal(t, relapse.Add(cfg.HoldDown), f.tr.Snapshot()[1].HoldUntil)

	// A slowed answer again: no longer past Rise. Then mA and mC fall:
	// slowed answers count, and mB is waived back on them.
	f.advance(time.Second).probe(mB, slowed())
	require.Zero(t, f.tr.Snapshot()[1].Successes)
	f.advance(time.Second).probe(mA, refused()).probe(mA, refused())
	f.advance(time.Second).probe(mC, refused()).probe(mC, refused())
	f.advance(time.Second).probe(mB, slowed())
	require.Equal(t, Down, f.phase(mB), "one slowed answer")
	assert.Equal(t, 1, f.tr.Snapshot()[1].Successes, "counted: nothing serves")
	f.advance(time.Second).probe(mB, slowed())
	assert.Equal(t, Up, f.phase(mB), "back on slowed answers while nothing else serves")
}

// A fleet whose watchdogs all start at once (a restart across the nodes)
// probes the same master at the same instant first. From the second probe
// on, its probes must be spread over the interval: the busiest tenth of
// each interval holds less than twice its share, where 500 probes at
// random phases give about 1.2 and probes still in step up to 10. Each
// node's tracker follows NextProbe with its own seeded randomness.
func TestFleetStartedAtOnceIsSpreadFromTheSecondProbe(t *testing.T) {
	cfg := DefaultConfig()
	const nodes, periods = 500, 10
	bins := make([]int, periods*10)
	for n := range nodes {
		tr, err := NewTracker(cfg, []netip.AddrPort{mA})
		require.NoError(t, err)
		rnd := rand.New(rand.NewPCG(uint64(n), 3))
		at := t0 // every node's first probe at the same instant
		for {
			i := int(at.Sub(t0) * 10 / cfg.Interval)
			if i >= len(bins) {
				break
			}
			bins[i]++
			at = at.Add(5 * time.Millisecond) // the answer
			tr.Observe(mA, ok(), at)
			at = at.Add(tr.NextProbe(mA, rnd.Float64()))
		}
	}
	for p := range periods {
		b := bins[p*10 : p*10+10]
		sum := 0
		for _, v := range b {
			sum += v
		}
		require.NotZero(t, sum, "period %d", p+1)
		peak := float64(slices.Max(b)) * 10 / float64(sum)
		if p == 0 {
			assert.GreaterOrEqual(t, b[0], nodes, "the first probes are all in the first tenth")
			continue
		}
		assert.Less(t, peak, 2.0, "period %d: %v", p+1, b)
	}
}

// A master that fell once, answered healthy again and then failed before it
// passed Rise relapsed: a repaired master fails until it is repaired and
// then answers, a flapping one alternates. The relapse starts the hold-down
// as a second fall would, so a link that flaps is kept out instead of
// coming back after two lucky probes. A repaired master, however its
// failures ended (refused, timed out, unhealthy), still comes back after
// Rise, and a relapsed master is still waived back when fewer than a
// majority serve.
func TestRelapseBeforeRiseStartsTheHoldDown(t *testing.T) {
	cfg := DefaultConfig()
	for _, fail := range []Outcome{timedOut(), refused(), status500()} {
		t.Run(fail.Reason, func(t *testing.T) {
			f := newFixture(t, cfg, mA, mB, mC)
			for _, m := range []netip.AddrPort{mA, mB, mC} {
				f.probe(m, ok())
			}
			f.reconcile()

			// Repaired: fails until repaired, then answers.
			f.advance(time.Second).probe(mA, fail).probe(mA, fail)
			require.Equal(t, Down, f.phase(mA))
			f.advance(time.Second).probe(mA, fail).advance(time.Second).probe(mA, fail)
			f.advance(time.Second).probe(mA, ok()).advance(time.Second).probe(mA, ok())
			assert.Equal(t, Up, f.phase(mA), "a repaired master is back after Rise")

			// Relapsed: fell, answered, failed again.
			f.advance(time.Minute).probe(mB, fail).probe(mB, fail)
			require.Equal(t, Down, f.phase(mB))
			f.advance(time.Second).probe(mB, ok())
			f.advance(time.Second).probe(mB, fail)
			relapse := f.now
			f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, ok())
			assert.Equal(t, Down, f.phase(mB), "held down after the relapse, though it passed Rise")
			st := f.tr.Snapshot()[1]
			assert.True(t, st.HeldDown)
			assert.Equal(t, relapse.Add(cfg.HoldDown), st.HoldUntil, "the hold-down runs from the relapse")
			for f.now.Before(relapse.Add(cfg.HoldDown)) {
				f.advance(time.Second).probe(mB, ok())
			}
			assert.Equal(t, Up, f.phase(mB), "back once healthy for the whole hold-down")

			// Relapsed again, while mC is down too: capacity first.
			f.advance(time.Minute).probe(mB, fail).probe(mB, fail)
			f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, fail)
			f.advance(time.Second).probe(mB, ok()).advance(time.Second).probe(mB, ok())
			require.Equal(t, Down, f.phase(mB), "held down while mA and mC carry the load")
			f.advance(100*time.Millisecond).probe(mC, fail).probe(mC, fail)
			f.reconcile()
			assert.Equal(t, Up, f.phase(mB), "waived back: only mA would serve")
		})
	}
}

// A link that flaps loses a segment of most exchanges: an up master with a
// failure and an answer that waited for a TCP retransmission timeout among
// its last 2*Fall-1 probes falls as flapping (hold-down at once), while the
// others carry the load. Slowed answers alone never take it out, and with
// fewer than a majority left it takes Fall failures as before.
func TestFailureAndSlowedAnswersFallAsFlapping(t *testing.T) {
	cfg := DefaultConfig()
	f := threeUp(t, cfg)
	f.advance(time.Second).probe(mB, slowed()).advance(cfg.FastRetry).probe(mB, timedOut())
	require.Equal(t, Down, f.phase(mB), "a slowed answer and a timeout")
	st := f.tr.Snapshot()[1]
	assert.Equal(t, 2, st.Flaps, "flapping: the hold-down starts with this fall")
	assert.Equal(t, f.now.Add(cfg.HoldDown), st.HoldUntil)

	// mB out, mA's fall would leave mC alone: its timeout and slowed
	// answer are no fall, Fall failures are.
	f.advance(time.Second).probe(mA, timedOut()).advance(cfg.FastRetry).probe(mA, slowed())
	assert.Equal(t, Up, f.phase(mA), "it would leave fewer than a majority: Fall failures needed")
	f.advance(cfg.FastRetry).probe(mA, timedOut())
	assert.Equal(t, Down, f.phase(mA), "2 of the last 3 probes failed")
}

// slowed is a healthy answer that waited for a TCP retransmission timeout.
func slowed() Outcome { return Outcome{OK: true, Status: 200, Reason: "HTTP 200", Retransmitted: true} }

// threeUp is a fixture with mA, mB and mC probed healthy once.
func threeUp(t *testing.T, cfg Config) *fixture {
	f := newFixture(t, cfg, mA, mB, mC)
	for _, m := range []netip.AddrPort{mA, mB, mC} {
		f.probe(m, ok())
	}
	return f
}
