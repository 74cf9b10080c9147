// Package health is the watchdog's decision core: a per-master state machine
// with rise/fall hysteresis, fast re-probing of a master that just failed,
// a hold-down for masters that flap (one that grows with the master's recent
// falls and decays with quiet time, and never keeps a healthy master out
// while fewer than a majority of the masters serve), fail-open when every
// master is down, and the drain of a master taken out of service (weight 0
// first, delete once it has no active connections or after a bound).
//
// The package is pure: it does no I/O, starts no goroutines and reads no
// clock. Callers pass the time and the probe outcomes in, and get back the
// real servers the kernel should have, the connections to reset and the
// events to log. That keeps every decision table-testable.
package health

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/ipvs"
)

// Phase is what the watchdog believes about a master's health (reported
// as carestatus.Phase).
type Phase = carestatus.Phase

// The phases of a master.
const (
	// Unknown: never probed and no evidence from the kernel. The first probe
	// decides (success: Up, failure: Down) so that a fresh start or --once
	// needs a single probe round.
	Unknown = carestatus.Unknown
	// Up: healthy. Leaves after Fall consecutive failures, or Fall
	// failures among its last 2*Fall-1 probes (a master that flaps faster
	// than the re-probing), or Fall failures and slowed answers among them
	// (a link that flaps; see Outcome.Retransmitted).
	Up = carestatus.Up
	// Down: unhealthy, or healthy but held down. Leaves after Rise
	// consecutive successes, and not before its hold-down ends unless fewer
	// than a majority of the masters are Up (see Config.HoldDown).
	Down = carestatus.Down
)

// Membership is where a master stands in the IPVS service (reported as
// carestatus.Membership).
type Membership = carestatus.Membership

// The memberships of a master.
const (
	// InService: in the service with the normal weight.
	InService = carestatus.InService
	// Draining: in the service with weight 0; new connections go elsewhere.
	Draining = carestatus.Draining
	// Removed: not in the service.
	Removed = carestatus.Removed
)

// Config tunes the state machine. Validate it (or use the flag validation of
// package care) before use.
type Config struct {
	// Rise is the number of consecutive successful probes that bring a Down
	// master Up.
	Rise int
	// Fall is the number of consecutive failed probes that take an Up
	// master Down. Fall failures among an Up master's last 2*Fall-1
	// probes take it Down too: a master that flaps faster than FastRetry
	// fails every other probe and would otherwise never fail Fall in a
	// row.
	Fall int
	// Interval is the time between two probes of a master in steady state.
	Interval time.Duration
	// Jitter spreads probes: each interval is lengthened by a random
	// fraction in [0, Jitter) of itself, so the average rate stays below one
	// probe per Interval. The one after an up master's first probe is drawn
	// from a whole interval instead, ending at the same bound (see
	// NextProbe), so that watchdogs started at once do not probe in step.
	Jitter float64
	// FastRetry is the delay before re-probing an Up master whose last probe
	// failed (refused, reset, bad status or timeout), so that Fall failures
	// take FastRetry*(Fall-1) plus the probes, not Interval*(Fall-1). An Up
	// master with a failure among its last 2*Fall-1 probes but none pending
	// is re-probed after FastRetry plus up to FastRetry more at random, so
	// that the re-probes cannot stay in phase with a master that flaps.
	FastRetry time.Duration
	// HoldDown is the hold-down of a master that falls while it has one
	// recent fall already, or that relapses after its first (answers, then
	// fails again before it passed Rise): after it passes Rise again it
	// stays out until HoldDown after its last failed (or slowed, see
	// Outcome.Retransmitted) probe. It doubles with every further recent
	// fall, up to MaxHoldDown. A master with no recent fall has none, so a
	// plain restart of an apiserver recovers after Rise probes.
	//
	// Every fall (Up to Down) adds one to the master's recent falls; the
	// count halves for every MaxHoldDown in which the master neither fell
	// nor failed a probe while held down, so failures minutes apart do not
	// pile up, while a master that flaps keeps its count and stays out.
	//
	// The hold-down never costs capacity: a healthy (passed Rise) master is
	// put back at once, whatever its hold-down, while fewer than a majority
	// of the masters (2 of 3, 3 of 5; both of 2) are Up.
	HoldDown time.Duration
	// MaxHoldDown caps the hold-down, and is the quiet time that halves a
	// master's count of recent falls.
	MaxHoldDown time.Duration
	// DrainTimeout bounds how long a master stays in the service with
	// weight 0 while it still has active connections.
	DrainTimeout time.Duration
	// Weight is the weight of a master in service.
	Weight int
	// Local is the master on this node itself (its address is one of the
	// node's), zero when none; in service it gets LocalWeight instead of
	// Weight, so that a weighted scheduler prefers it (see
	// ipvs.LocalWeight). Down, it is drained like any other.
	Local       netip.AddrPort
	LocalWeight int
}

// DefaultConfig returns the defaults the `vipctl care` flags use.
func DefaultConfig() Config {
	return Config{
		Rise:         2,
		Fall:         2,
		Interval:     time.Second,
		Jitter:       0.1,
		FastRetry:    150 * time.Millisecond,
		HoldDown:     5 * time.Second,
		MaxHoldDown:  30 * time.Second,
		DrainTimeout: 30 * time.Second,
		Weight:       ipvs.DefaultWeight,
	}
}

// Validate checks c. Errors name the field and the value.
func (c Config) Validate() error {
	switch {
	case c.Rise < 1:
		return fmt.Errorf("rise %d: want at least 1", c.Rise)
	case c.Fall < 1:
		return fmt.Errorf("fall %d: want at least 1", c.Fall)
	case c.Interval <= 0:
		return fmt.Errorf("interval %s: want a positive duration", c.Interval)
	case c.Jitter < 0 || c.Jitter > 1:
		return fmt.Errorf("jitter %g: want 0 to 1", c.Jitter)
	case c.FastRetry <= 0:
		return fmt.Errorf("fast retry %s: want a positive duration", c.FastRetry)
	case c.HoldDown < 0:
		return fmt.Errorf("hold-down %s: want 0 or more", c.HoldDown)
	case c.MaxHoldDown < c.HoldDown:
		return fmt.Errorf("max hold-down %s: shorter than the hold-down %s", c.MaxHoldDown, c.HoldDown)
	case c.DrainTimeout < 0:
		return fmt.Errorf("drain timeout %s: want 0 or more", c.DrainTimeout)
	case c.Weight < 1 || c.Weight > 65535:
		return fmt.Errorf("weight %d: want 1 to 65535", c.Weight)
	case c.Local.IsValid() && (c.LocalWeight < 0 || c.LocalWeight > 65535):
		return fmt.Errorf("local weight %d: want 0 to 65535", c.LocalWeight)
	}
	return nil
}

// Outcome is the result of one probe, as the core needs it.
type Outcome struct {
	// OK is true when the master answered as a healthy one.
	OK bool
	// Fast marks a failure that is a definitive answer (connection refused
	// or reset, an unhealthy status), as opposed to a timeout: such a
	// master is re-probed after FastRetry.
	Fast bool
	// Status is the HTTP status, 0 when there was none.
	Status int
	// Reason says what happened, for logs and /status.
	Reason string
	// Latency is how long the probe took.
	Latency time.Duration
	// Conclusive marks a failure that proves the master's apiserver is
	// gone: the master itself closed the sentinel connection and then
	// refused a new one (nothing listens on its port any more). It takes
	// an Up master down at once instead of after Fall failures: the
	// sentinel's closed connection is the first sign, the refused
	// connection the confirmation. Timeouts, resets and unhealthy
	// statuses are never conclusive.
	Conclusive bool
	// Retransmitted marks a healthy answer that waited for a TCP
	// retransmission timeout (a slowed answer): the link to the master
	// lost packets, or was slow enough for a retransmission timer to
	// fire. It is not a failure (a loaded host retransmits too), but makes
	// the master suspect (see MayFlap): a kept connection rides out a link
	// that flaps, so the next probes are soon and on new connections, as a
	// new client's. With a failure, Fall of them among an Up master's last
	// probes take it out as flapping while a majority serves without it;
	// after a fall one does not count towards Rise unless fewer than a
	// majority serve, and restarts a hold-down as a failure does.
	Retransmitted bool
}

// EventKind names what an Event reports.
type EventKind string

// The kinds of events.
const (
	// EventTransition: a master changed phase (From, To).
	EventTransition EventKind = "transition"
	// EventHeldDown: a master passed Rise but stays Down until HoldUntil
	// (or until fewer than a majority of the masters are Up).
	EventHeldDown EventKind = "held-down"
	// EventDrain: a master was taken out of service: weight 0, connections
	// to be reset.
	EventDrain EventKind = "drain"
	// EventRemove: a draining master is to be deleted from the service.
	EventRemove EventKind = "remove"
	// EventAdmit: a master was put in service (again).
	EventAdmit EventKind = "admit"
	// EventFailOpen: every master is down; all are kept in service.
	EventFailOpen EventKind = "fail-open"
	// EventFailOpenEnd: a master recovered; normal selection resumes.
	EventFailOpenEnd EventKind = "fail-open-end"
)

// Event is something worth a log line and a metric.
type Event struct {
	Kind EventKind
	// Master is the master concerned; zero for fail-open events.
	Master netip.AddrPort
	// From and To are phases for transitions, memberships otherwise.
	From, To string
	Reason   string
	At       time.Time
	// HoldUntil is set for held-down events and for falls with a hold-down.
	HoldUntil time.Time
}

func (e Event) String() string {
	s := string(e.Kind)
	if e.Master.IsValid() {
		s += " " + e.Master.String()
	}
	if e.From != "" || e.To != "" {
		s += fmt.Sprintf(" %s -> %s", e.From, e.To)
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

type master struct {
	addr       netip.AddrPort
	phase      Phase
	since      time.Time // when phase was entered
	successes  int       // consecutive
	failures   int       // consecutive
	recent     uint32    // outcomes since it last went Up, newest in bit 0: 1 failed
	lossy      uint32    // as recent: 1 a healthy answer that needed TCP retransmissions
	flaps      int       // recent falls: halved for every MaxHoldDown of quiet
	lastFlap   time.Time // last fall, or last failed probe while held down
	rebounded  bool      // answered healthy since its last fall
	holdUntil  time.Time
	heldTold   bool // a held-down event was emitted for the current hold
	member     Membership
	drainSince time.Time
	closeDue   bool // connections must be reset once weight 0 is applied
	probed     bool
	probes     int // observed, counted up to 2
	last       Outcome
	lastAt     time.Time
}

type extra struct {
	since    time.Time
	closeDue bool
}

// Tracker holds the state of every master. It is not safe for concurrent
// use: the watchdog's loop owns it.
type Tracker struct {
	cfg      Config
	masters  []*master
	byAddr   map[netip.AddrPort]*master
	extras   map[netip.AddrPort]*extra // real servers in the kernel that are no master
	failOpen bool
}

// NewTracker returns a tracker for masters, all Unknown and not in the
// service. addrs must be distinct.
func NewTracker(cfg Config, addrs []netip.AddrPort) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("no masters")
	}
	t := &Tracker{cfg: cfg, byAddr: map[netip.AddrPort]*master{}, extras: map[netip.AddrPort]*extra{}}
	for _, a := range addrs {
		if _, dup := t.byAddr[a]; dup {
			return nil, fmt.Errorf("master %s: listed twice", a)
		}
		m := &master{addr: a, phase: Unknown, member: Removed}
		t.masters = append(t.masters, m)
		t.byAddr[a] = m
	}
	return t, nil
}

// Add starts tracking a master found while running (discovered from the
// API): Down and not in the service, so it needs Rise good probes before it
// serves, as a master absent from the kernel at Adopt does. It reports
// whether addr was new.
func (t *Tracker) Add(addr netip.AddrPort, now time.Time) bool {
	if t.byAddr[addr] != nil {
		return false
	}
	m := &master{addr: addr, phase: Down, member: Removed, since: now}
	t.masters = append(t.masters, m)
	t.byAddr[addr] = m
	delete(t.extras, addr)
	return true
}

// Remove stops tracking a master. If the kernel still has it, the next
// Plan drains it as a real server that is no master (weight 0, connections
// reset, deleted once drained). The last master cannot be removed; Remove
// reports whether addr was removed.
func (t *Tracker) Remove(addr netip.AddrPort) bool {
	if t.byAddr[addr] == nil || len(t.masters) == 1 {
		return false
	}
	delete(t.byAddr, addr)
	t.masters = slices.DeleteFunc(t.masters, func(m *master) bool { return m.addr == addr })
	return true
}

// Config returns the tracker's configuration.
func (t *Tracker) Config() Config { return t.cfg }

// Adopt takes the kernel's current service as the starting point, so that a
// restarted watchdog changes nothing that is right. cur is nil when the
// service does not exist; then every master stays Unknown and the first
// probe decides. Otherwise a master present with a weight other than 0 is taken as Up
// and in service (it stays so until Fall probes fail), one present with
// weight 0 as Down and draining (the drain bound restarts now), and one
// absent as Down and removed (it needs Rise successes to come back, as it
// would have in the previous run). Call Adopt before the first Observe.
func (t *Tracker) Adopt(cur *ipvs.State, now time.Time) {
	if cur == nil {
		return
	}
	in := map[netip.AddrPort]int{}
	for _, rs := range cur.RealServers {
		in[rs.Addr] = rs.Weight
	}
	for _, m := range t.masters {
		w, ok := in[m.addr]
		m.since = now
		switch {
		case ok && w != 0: // -1: the kernel's mark for a wrong forwarding method
			m.phase, m.member = Up, InService
		case ok:
			m.phase, m.member, m.drainSince = Down, Draining, now
		default:
			m.phase, m.member = Down, Removed
		}
	}
}

// Observe feeds one probe outcome for master addr at time now and returns
// the events it caused (a transition, a hold-down). Unknown addresses are
// ignored.
func (t *Tracker) Observe(addr netip.AddrPort, o Outcome, now time.Time) []Event {
	m := t.byAddr[addr]
	if m == nil {
		return nil
	}
	t.decay(m, now)
	m.probed, m.last, m.lastAt = true, o, now
	m.probes = min(m.probes+1, 2)
	m.recent <<= 1
	m.lossy <<= 1
	if !o.OK {
		m.recent |= 1
	} else if o.Retransmitted {
		m.lossy |= 1 // not a failure, but a reason to look closer
	}
	if o.OK {
		m.successes++
		m.failures = 0
	} else {
		m.failures++
		m.successes = 0
	}
	switch m.phase {
	case Unknown:
		if o.OK {
			return []Event{t.setPhase(m, Up, now, "first probe: "+o.Reason)}
		}
		return []Event{t.setPhase(m, Down, now, "first probe: "+o.Reason)}
	case Up:
		failed := !o.OK && (m.failures >= t.cfg.Fall || o.Conclusive || t.recentFailures(m) >= t.cfg.Fall)
		// A link that flaps loses a segment of most exchanges: a failure
		// and answers that waited for a retransmission timeout, Fall of
		// them among the last probes, take the master out as flapping,
		// but only while the others carry the load (a majority still
		// serving without it). Slowed answers alone never do.
		lossyFall := !failed && (!o.OK || o.Retransmitted) && t.recentFailures(m) > 0 &&
			t.recentBad(m) >= t.cfg.Fall && t.serving()-1 >= t.majority()
		if !failed && !lossyFall {
			return nil
		}
		m.flaps++
		m.successes = 0 // a slowed answer that took it out is no step towards Rise
		flapping := !o.Conclusive && m.failures < t.cfg.Fall
		if flapping {
			// Failing every other probe is flapping already: the hold-down
			// starts with this fall instead of the next.
			m.flaps = max(m.flaps, 2)
		}
		m.lastFlap = now
		m.holdUntil = now.Add(t.holdDown(m.flaps))
		m.heldTold = false
		why := fmt.Sprintf("%s (%d consecutive failures)", o.Reason, m.failures)
		switch {
		case o.Conclusive && m.failures < t.cfg.Fall:
			why = o.Reason + " after the master closed the sentinel connection"
		case lossyFall:
			why = fmt.Sprintf("%s (%d of the last %d probes failed or waited for a TCP retransmission: flapping)", o.Reason, t.recentBad(m), t.window())
		case flapping:
			why = fmt.Sprintf("%s (%d of the last %d probes failed: flapping)", o.Reason, t.recentFailures(m), t.window())
		}
		e := t.setPhase(m, Down, now, why)
		if m.holdUntil.After(now) {
			e.HoldUntil = m.holdUntil
			e.Reason += fmt.Sprintf(" (%d recent falls: held down until %s once healthy)", m.flaps, m.holdUntil.Format(time.RFC3339Nano))
		}
		// Its place may fall to a healthy master that is held down.
		return append([]Event{e}, t.waive(now)...)
	case Down:
		// After a fall, an answer that needed a retransmission timeout is
		// no steady health: it does not count towards Rise (a master
		// whose link flaps answers so between its lost SYNs), unless
		// fewer than a majority serve (capacity first).
		slowed := o.OK && o.Retransmitted && m.flaps > 0 && !t.short()
		if slowed {
			m.successes = 0
		}
		switch {
		case o.OK && !slowed:
			m.rebounded = true
		case m.rebounded && m.flaps == 1:
			// Fallen once, healthy again, then failing (or answering
			// only after a retransmission timeout) before it passed
			// Rise: a repaired master does not do that (killed, cut off
			// or unhealthy, it fails until it is repaired and then
			// answers), a master whose link or process flaps does. Its
			// hold-down starts now, as for a second fall, instead of
			// after it came back and fell again. Capacity first still
			// applies.
			m.flaps = 2
			m.heldTold = false
		}
		if (!o.OK || o.Retransmitted) && t.holdDown(m.flaps) > 0 {
			// A flapping master must be steadily healthy for the whole
			// hold-down: every failure while down starts it again, so a
			// master that keeps flapping stays out instead of flapping the
			// kernel, and keeps its count of recent falls. So does a
			// healthy answer that needed TCP retransmissions: a link that
			// flaps loses part of most exchanges. It still counts towards
			// Rise, so capacity first brings the master back all the same,
			// and a master with one recent fall (a restart) has no
			// hold-down to start.
			m.lastFlap = now
			if until := now.Add(t.holdDown(m.flaps)); until.After(m.holdUntil) {
				m.holdUntil = until
				m.heldTold = false
			}
		}
		if !o.OK || m.successes < t.cfg.Rise {
			return nil
		}
		if now.Before(m.holdUntil) && !t.short() {
			if m.heldTold {
				return nil
			}
			m.heldTold = true
			return []Event{{Kind: EventHeldDown, Master: m.addr, At: now, HoldUntil: m.holdUntil, Reason: heldReason(m)}}
		}
		why := fmt.Sprintf("%s (%d consecutive successes)", o.Reason, m.successes)
		if now.Before(m.holdUntil) {
			why += "; " + t.shortReason()
		}
		return []Event{t.setPhase(m, Up, now, why)}
	}
	return nil
}

// window is how many of an Up master's last probes count towards Fall.
func (t *Tracker) window() int { return min(2*t.cfg.Fall-1, 32) }

// recentFailures counts the failures among m's last window() probes since
// it last went Up.
func (t *Tracker) recentFailures(m *master) int { return bits.OnesCount32(m.recent & t.windowMask()) }

// recentBad counts the failures and the healthy answers that needed a
// TCP retransmission among m's last window() probes since it last went Up.
func (t *Tracker) recentBad(m *master) int {
	return bits.OnesCount32((m.recent | m.lossy) & t.windowMask())
}

// recentlyLossy tells whether one of m's last window() probes since it
// last went Up was a healthy answer that needed TCP retransmissions.
func (t *Tracker) recentlyLossy(m *master) bool { return m.lossy&t.windowMask() != 0 }

// windowMask selects the last window() probes of a bit history.
func (t *Tracker) windowMask() uint32 {
	if t.window() == 32 {
		return ^uint32(0)
	}
	return uint32(1)<<t.window() - 1
}

func heldReason(m *master) string {
	return fmt.Sprintf("healthy again but flapping (%d recent falls): held down until %s", m.flaps, m.holdUntil.Format(time.RFC3339Nano))
}

// decay halves m's count of recent falls for every whole MaxHoldDown since
// it last fell or failed while held down. It can be called at any time:
// the quiet periods it counts are consumed.
func (t *Tracker) decay(m *master, now time.Time) {
	if m.flaps == 0 {
		return
	}
	if t.cfg.MaxHoldDown <= 0 {
		m.flaps = 0 // no hold-down at all: nothing to remember
		return
	}
	n := now.Sub(m.lastFlap) / t.cfg.MaxHoldDown
	switch {
	case n <= 0:
		return
	case n >= 63:
		m.flaps = 0
	default:
		m.flaps >>= n
	}
	if m.flaps == 0 {
		m.lastFlap = time.Time{}
		return
	}
	m.lastFlap = m.lastFlap.Add(n * t.cfg.MaxHoldDown)
}

// majority is how many masters must be Up for the hold-down to apply.
func (t *Tracker) majority() int { return len(t.masters)/2 + 1 }

// serving counts the masters that are not Down: Up, or Unknown (kept in
// service until their first probe).
func (t *Tracker) serving() int {
	n := 0
	for _, m := range t.masters {
		if m.phase != Down {
			n++
		}
	}
	return n
}

// short reports whether fewer than a majority of the masters serve, or
// none is Up: then no healthy master is held down.
func (t *Tracker) short() bool { return t.serving() < t.majority() || !t.anyUp() }

func (t *Tracker) shortReason() string {
	return fmt.Sprintf("hold-down waived: only %d of %d masters in service, fewer than a majority (%d)", t.serving(), len(t.masters), t.majority())
}

// waive puts healthy masters that are held down back Up while fewer than a
// majority of the masters serve: those with the fewest recent falls first,
// then the earliest end of hold-down, then the configured order.
func (t *Tracker) waive(now time.Time) []Event {
	var held []*master
	for _, m := range t.masters {
		if m.phase == Down && m.successes >= t.cfg.Rise {
			held = append(held, m)
		}
	}
	slices.SortStableFunc(held, func(a, b *master) int {
		if a.flaps != b.flaps {
			return a.flaps - b.flaps
		}
		return a.holdUntil.Compare(b.holdUntil)
	})
	var events []Event
	for _, m := range held {
		if !t.short() {
			break
		}
		why := fmt.Sprintf("healthy (%d consecutive successes), %d recent falls; %s", m.successes, m.flaps, t.shortReason())
		events = append(events, t.setPhase(m, Up, now, why))
	}
	return events
}

// holdDown is the hold-down with n recent falls: none for the first,
// HoldDown for the second, doubling after, capped at MaxHoldDown.
func (t *Tracker) holdDown(n int) time.Duration {
	if n <= 1 || t.cfg.HoldDown == 0 {
		return 0
	}
	d := t.cfg.HoldDown
	for i := 2; i < n && d < t.cfg.MaxHoldDown; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxHoldDown)
}

func (t *Tracker) setPhase(m *master, p Phase, now time.Time, reason string) Event {
	e := Event{Kind: EventTransition, Master: m.addr, From: string(m.phase), To: string(p), Reason: reason, At: now}
	m.phase, m.since = p, now
	m.rebounded = false
	if p == Up {
		m.recent, m.lossy = 0, 0 // only its probes since it is Up count towards Fall
	}
	return e
}

func (t *Tracker) anyUp() bool {
	return slices.ContainsFunc(t.masters, func(m *master) bool { return m.phase == Up })
}

// LastStatus is the HTTP status of addr's last probe, 0 when it got none
// (TCP mode, or no answer at all).
func (t *Tracker) LastStatus(addr netip.AddrPort) int {
	if m := t.byAddr[addr]; m != nil {
		return m.last.Status
	}
	return 0
}

// Phase returns a master's phase; Unknown for an address not tracked.
func (t *Tracker) Phase(addr netip.AddrPort) Phase {
	if m := t.byAddr[addr]; m != nil {
		return m.phase
	}
	return Unknown
}

// MayFlap reports whether addr may be flapping: it has a recent fall, or it
// is Up with a failure, or a healthy answer that needed TCP
// retransmissions, among its last 2*Fall-1 probes. Such a master is
// best probed the way a new client connects (see care.FreshProber): a
// kept connection hides a link that flaps, since TCP retransmits a request
// lost while the link was down into the next up phase.
func (t *Tracker) MayFlap(addr netip.AddrPort) bool {
	m := t.byAddr[addr]
	return m != nil && t.mayFlap(m)
}

func (t *Tracker) mayFlap(m *master) bool { return m.flaps > 0 || t.suspect(m) }

// suspect tells whether m is Up with a failure, or a healthy answer that
// needed TCP retransmissions, among its last window() probes.
func (t *Tracker) suspect(m *master) bool {
	return m.phase == Up && (t.recentFailures(m) > 0 || t.recentlyLossy(m))
}

// InService reports whether addr is an up master with no failed probe
// pending confirmation: one whose slow probe is worth hedging.
func (t *Tracker) InService(addr netip.AddrPort) bool {
	m := t.byAddr[addr]
	return m != nil && m.phase == Up && m.failures == 0
}

// NextProbe returns how long to wait before probing addr again. rnd is a
// random number in [0, 1) that spreads probes over the jitter.
func (t *Tracker) NextProbe(addr netip.AddrPort, rnd float64) time.Duration {
	m := t.byAddr[addr]
	// A master in service whose last probe failed is re-probed at once,
	// whether the failure was definitive (refused, bad status) or a timeout
	// (an unreachable host): Fall failures then take about
	// Timeout*Fall + FastRetry*(Fall-1) instead of whole intervals.
	if m != nil && m.phase == Up && m.failures > 0 {
		return t.cfg.FastRetry
	}
	// One that failed recently but passed its last probe may be flapping
	// faster than the re-probing: it is probed again soon, at a random
	// spacing that cannot stay in phase with the flapping, until its last
	// window() probes are clean. So is one whose healthy answer needed TCP
	// retransmissions: over a kept connection that is the first sign of a
	// link that flaps.
	if m != nil && t.suspect(m) {
		return t.cfg.FastRetry + time.Duration(float64(t.cfg.FastRetry)*rnd)
	}
	// After its first probe, one that is up is probed again at a random
	// point of a whole interval ending where a steady probe's jitter ends:
	// a fleet whose watchdogs start at once (a restart across all nodes)
	// sends every master all its first probes in the same instant, and the
	// jitter alone would spread those probes over the interval only after
	// some 80 of them (after k probes their phases differ by
	// Interval*Jitter*sqrt(k/12), standard deviation). This spreads them at
	// once, at the cost of at most one probe more per start, and never
	// waits longer than a steady probe. Without jitter the schedule stays
	// regular.
	if m != nil && m.phase == Up && m.probes == 1 && t.cfg.Jitter > 0 {
		return time.Duration(float64(t.cfg.Interval) * (t.cfg.Jitter + rnd))
	}
	jitter := t.cfg.Jitter
	if m != nil && t.cfg.HoldDown > 0 && (m.flaps >= 2 || (m.flaps == 1 && m.phase == Up)) {
		// A master that may be flapping (back up after a recent fall, or
		// held down) is probed at irregular intervals: one flapping in
		// step with the probes would otherwise look healthy to many probes
		// in a row (aliasing). A master down after its first fall keeps
		// the regular pace: once repaired it is back sooner.
		jitter = max(jitter, flapJitter)
	}
	return t.cfg.Interval + time.Duration(float64(t.cfg.Interval)*jitter*rnd)
}

// flapJitter is the jitter of the probes of a master that flaps.
const flapJitter = 0.5

// Plan is what the kernel should look like now.
type Plan struct {
	// RealServers is the desired real server list, masters in the order
	// given, then real servers that are not masters and still drain.
	RealServers []ipvs.RealServer
	// Close lists the real servers whose established connections must be
	// reset, once RealServers (with their weight 0) has been applied. Call
	// ConnsClosed for each after trying.
	Close []netip.AddrPort
	// FailOpen is set when every master is down and all are kept.
	FailOpen bool
	// Events are the membership changes this plan makes.
	Events []Event
}

// Plan decides the real servers at time now given the kernel's current
// service (nil when it does not exist), whose connection counters drive the
// drain. It advances memberships: a master that must leave the service
// drains first (weight 0, connections reset), and is removed once it has no
// active connections, is absent from the kernel, or DrainTimeout passed.
// Real servers in the kernel that are not masters drain the same way.
func (t *Tracker) Plan(cur *ipvs.State, now time.Time) Plan {
	var p Plan
	// A master that fell since the last plan may leave fewer than a
	// majority in service: healthy masters held down come back first.
	p.Events = append(p.Events, t.waive(now)...)
	kernel := map[netip.AddrPort]ipvs.RealServerStatus{}
	if cur != nil {
		for _, rs := range cur.RealServers {
			kernel[rs.Addr] = rs
		}
	}
	anyDown := slices.ContainsFunc(t.masters, func(m *master) bool { return m.phase == Down })
	failOpen := !t.anyUp() && anyDown
	if failOpen != t.failOpen {
		t.failOpen = failOpen
		if failOpen {
			p.Events = append(p.Events, Event{Kind: EventFailOpen, At: now,
				Reason: "every master is down: keeping all of them in service"})
		} else {
			p.Events = append(p.Events, Event{Kind: EventFailOpenEnd, At: now,
				Reason: "a master is up: normal selection resumes"})
		}
	}
	p.FailOpen = failOpen
	// When every master still Up is itself suspect (its last probe failed),
	// a master that just went down keeps its place until the suspects are
	// resolved: if they fall too, fail-open keeps everyone anyway, and
	// draining in between would only reset connections for nothing (a
	// restart during an outage, or this node losing its network).
	settling := !failOpen && !slices.ContainsFunc(t.masters, func(m *master) bool { return m.phase == Up && m.failures == 0 })
	for _, m := range t.masters {
		if failOpen || m.phase != Down || (settling && m.member == InService) {
			if m.member != InService {
				p.Events = append(p.Events, Event{Kind: EventAdmit, Master: m.addr, From: string(m.member), To: string(InService), At: now, Reason: t.admitReason(m, failOpen)})
				m.member, m.closeDue = InService, false
			}
			p.RealServers = append(p.RealServers, ipvs.RealServer{Addr: m.addr, Weight: t.weight(m.addr)})
			continue
		}
		switch m.member {
		case InService:
			m.closeDue = true
			if _, ok := kernel[m.addr]; !ok {
				// Nothing to drain: do not add it back just to delete it.
				m.member = Removed
				p.Events = append(p.Events, Event{Kind: EventRemove, Master: m.addr, From: string(InService), To: string(Removed), At: now, Reason: "master is down and not in the kernel's service"})
				break
			}
			m.member, m.drainSince = Draining, now
			p.Events = append(p.Events, Event{Kind: EventDrain, Master: m.addr, From: string(InService), To: string(Draining), At: now, Reason: "master is down: weight 0, resetting its connections"})
			p.RealServers = append(p.RealServers, ipvs.RealServer{Addr: m.addr, Weight: 0})
		case Draining:
			if why, done := t.drained(kernel, m.addr, m.drainSince, now); done {
				m.member = Removed
				p.Events = append(p.Events, Event{Kind: EventRemove, Master: m.addr, From: string(Draining), To: string(Removed), At: now, Reason: why})
				continue
			}
			p.RealServers = append(p.RealServers, ipvs.RealServer{Addr: m.addr, Weight: 0})
		}
		if m.closeDue {
			p.Close = append(p.Close, m.addr)
		}
	}
	t.planExtras(&p, cur, kernel, now)
	return p
}

func (t *Tracker) admitReason(m *master, failOpen bool) string {
	switch {
	case failOpen && m.phase == Down:
		return "fail-open: every master is down"
	case m.phase == Unknown:
		return "not probed yet"
	default:
		return "master is up"
	}
}

// drained reports whether a draining real server can be deleted, and why.
func (t *Tracker) drained(kernel map[netip.AddrPort]ipvs.RealServerStatus, addr netip.AddrPort, since, now time.Time) (string, bool) {
	rs, ok := kernel[addr]
	switch {
	case !ok:
		return "not in the kernel's service any more", true
	case rs.ActiveConns == 0:
		return "no active connections left", true
	case now.Sub(since) >= t.cfg.DrainTimeout:
		return fmt.Sprintf("drain timeout %s with %d active connections", t.cfg.DrainTimeout, rs.ActiveConns), true
	}
	return "", false
}

// planExtras drains real servers that the kernel has and that are no
// master (a master dropped from the configuration, a leftover).
func (t *Tracker) planExtras(p *Plan, cur *ipvs.State, kernel map[netip.AddrPort]ipvs.RealServerStatus, now time.Time) {
	var seen []netip.AddrPort
	if cur != nil {
		for _, rs := range cur.RealServers {
			if t.byAddr[rs.Addr] != nil {
				continue
			}
			seen = append(seen, rs.Addr)
			x := t.extras[rs.Addr]
			if x == nil {
				x = &extra{since: now, closeDue: rs.Weight != 0}
				t.extras[rs.Addr] = x
				p.Events = append(p.Events, Event{Kind: EventDrain, Master: rs.Addr, From: string(InService), To: string(Draining), At: now, Reason: "not a configured master: weight 0, resetting its connections"})
			} else if why, done := t.drained(kernel, rs.Addr, x.since, now); done {
				delete(t.extras, rs.Addr)
				p.Events = append(p.Events, Event{Kind: EventRemove, Master: rs.Addr, From: string(Draining), To: string(Removed), At: now, Reason: "not a configured master: " + why})
				continue
			}
			p.RealServers = append(p.RealServers, ipvs.RealServer{Addr: rs.Addr, Weight: 0})
			if x.closeDue {
				p.Close = append(p.Close, rs.Addr)
			}
		}
	}
	for a := range t.extras {
		if !slices.Contains(seen, a) {
			delete(t.extras, a)
		}
	}
}

// ConnsClosed records that the connections of addr were reset (or that
// trying failed and should not be repeated).
func (t *Tracker) ConnsClosed(addr netip.AddrPort) {
	if m := t.byAddr[addr]; m != nil {
		m.closeDue = false
	}
	if x := t.extras[addr]; x != nil {
		x.closeDue = false
	}
}

// FailOpen reports whether the last Plan kept every master because all were
// down.
func (t *Tracker) FailOpen() bool { return t.failOpen }

// weight is the weight of master addr in service: LocalWeight for the
// local master, Weight for the others.
func (t *Tracker) weight(addr netip.AddrPort) int {
	if t.cfg.Local.IsValid() && addr == t.cfg.Local && t.cfg.LocalWeight > 0 {
		return t.cfg.LocalWeight
	}
	return t.cfg.Weight
}

// Snapshot returns every master's state, in the order given to NewTracker,
// for /status and the metrics; Kernel is left nil.
func (t *Tracker) Snapshot() []carestatus.Master {
	out := make([]carestatus.Master, 0, len(t.masters))
	for _, m := range t.masters {
		s := carestatus.Master{Address: m.addr, Phase: m.phase, Since: m.since, Membership: m.member,
			Successes: m.successes, Failures: m.failures, Flaps: m.flaps, HoldUntil: m.holdUntil,
			Local: t.cfg.Local.IsValid() && m.addr == t.cfg.Local}
		if m.phase == Down && m.successes >= t.cfg.Rise {
			// Down with Rise successes: only the hold-down keeps it out.
			s.HeldDown = true
			s.HeldReason = fmt.Sprintf("healthy but held down until %s after %d recent falls; back then if it stays healthy, or as soon as fewer than %d of the %d masters serve",
				m.holdUntil.Format(time.RFC3339), m.flaps, t.majority(), len(t.masters))
		}
		switch m.member {
		case InService:
			s.Weight = t.weight(m.addr)
		case Draining:
			s.DrainSince = m.drainSince
		default:
			s.Weight = -1
		}
		if m.probed {
			s.LastProbe = &carestatus.Probe{At: m.lastAt, OK: m.last.OK, Status: m.last.Status, Reason: m.last.Reason, Latency: m.last.Latency.Seconds()}
		}
		out = append(out, s)
	}
	return out
}
