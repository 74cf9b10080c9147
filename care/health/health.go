// Package health is the watchdog's decision core: a per-master state machine
// with rise/fall hysteresis, fast re-probing of a master that just failed,
// an exponential hold-down for masters that flap, fail-open when every master
// is down, and the drain of a master taken out of service (weight 0 first,
// delete once it has no active connections or after a bound).
//
// The package is pure: it does no I/O, starts no goroutines and reads no
// clock. Callers pass the time and the probe outcomes in, and get back the
// real servers the kernel should have, the connections to reset and the
// events to log. That keeps every decision table-testable.
package health

import (
	"errors"
	"fmt"
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
	// Up: healthy. Leaves after Fall consecutive failures.
	Up = carestatus.Up
	// Down: unhealthy. Leaves after Rise consecutive successes, and not
	// before its hold-down ends (unless no master is Up).
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
	// master Down.
	Fall int
	// Interval is the time between two probes of a master in steady state.
	Interval time.Duration
	// Jitter spreads probes: each interval is lengthened by a random
	// fraction in [0, Jitter) of itself, so the average rate stays below one
	// probe per Interval.
	Jitter float64
	// FastRetry is the delay before re-probing an Up master whose last probe
	// failed (refused, reset, bad status or timeout), so that Fall failures
	// take FastRetry*(Fall-1) plus the probes, not Interval*(Fall-1).
	FastRetry time.Duration
	// HoldDown is the hold-down after a master's second fall within a flap
	// window; it doubles with every further fall, up to MaxHoldDown. The
	// first fall has none, so a plain restart of an apiserver recovers after
	// Rise probes.
	HoldDown time.Duration
	// MaxHoldDown caps the hold-down. A master that stays Up this long is
	// forgiven its past falls.
	MaxHoldDown time.Duration
	// DrainTimeout bounds how long a master stays in the service with
	// weight 0 while it still has active connections.
	DrainTimeout time.Duration
	// Weight is the weight of a master in service.
	Weight int
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
		MaxHoldDown:  5 * time.Minute,
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
}

// EventKind names what an Event reports.
type EventKind string

// The kinds of events.
const (
	// EventTransition: a master changed phase (From, To).
	EventTransition EventKind = "transition"
	// EventHeldDown: a master passed Rise but stays Down until HoldUntil.
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
	flaps      int       // falls not yet forgiven
	holdUntil  time.Time
	heldTold   bool // a held-down event was emitted for the current hold
	member     Membership
	drainSince time.Time
	closeDue   bool // connections must be reset once weight 0 is applied
	probed     bool
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
	m.probed, m.last, m.lastAt = true, o, now
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
		if o.OK || (m.failures < t.cfg.Fall && !o.Conclusive) {
			return nil
		}
		// A master that stayed up long enough is forgiven its past falls.
		if now.Sub(m.since) >= t.cfg.MaxHoldDown {
			m.flaps = 0
		}
		m.flaps++
		m.holdUntil = now.Add(t.holdDown(m.flaps))
		m.heldTold = false
		why := fmt.Sprintf("%s (%d consecutive failures)", o.Reason, m.failures)
		if m.failures < t.cfg.Fall {
			why = o.Reason + " after the master closed the sentinel connection"
		}
		e := t.setPhase(m, Down, now, why)
		if m.holdUntil.After(now) {
			e.HoldUntil = m.holdUntil
		}
		return []Event{e}
	case Down:
		if !o.OK && m.flaps >= 2 {
			// A flapping master must be steadily healthy for the whole
			// hold-down: every failure while down starts it again, so a
			// master that keeps flapping stays out instead of flapping the
			// kernel.
			if until := now.Add(t.holdDown(m.flaps)); until.After(m.holdUntil) {
				m.holdUntil = until
				m.heldTold = false
			}
		}
		if !o.OK || m.successes < t.cfg.Rise {
			return nil
		}
		// The hold-down is waived when no master is Up: a flapping master
		// beats none at all.
		if now.Before(m.holdUntil) && t.anyUp() {
			if m.heldTold {
				return nil
			}
			m.heldTold = true
			return []Event{{Kind: EventHeldDown, Master: m.addr, At: now, HoldUntil: m.holdUntil,
				Reason: fmt.Sprintf("healthy again but flapping (%d falls): held down until %s", m.flaps, m.holdUntil.Format(time.RFC3339Nano))}}
		}
		return []Event{t.setPhase(m, Up, now, fmt.Sprintf("%s (%d consecutive successes)", o.Reason, m.successes))}
	}
	return nil
}

// holdDown is the hold-down after the n-th unforgiven fall: none for the
// first, HoldDown for the second, doubling after, capped at MaxHoldDown.
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
	return t.cfg.Interval + time.Duration(float64(t.cfg.Interval)*t.cfg.Jitter*rnd)
}

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
			p.RealServers = append(p.RealServers, ipvs.RealServer{Addr: m.addr, Weight: t.cfg.Weight})
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

// Snapshot returns every master's state, in the order given to NewTracker,
// for /status and the metrics; Kernel is left nil.
func (t *Tracker) Snapshot() []carestatus.Master {
	out := make([]carestatus.Master, 0, len(t.masters))
	for _, m := range t.masters {
		s := carestatus.Master{Address: m.addr, Phase: m.phase, Since: m.since, Membership: m.member,
			Successes: m.successes, Failures: m.failures, Flaps: m.flaps, HoldUntil: m.holdUntil}
		switch m.member {
		case InService:
			s.Weight = t.cfg.Weight
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
