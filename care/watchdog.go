package care

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/ipvs"
)

// Deps are what the watchdog acts on. Dataplane and Prober are required;
// the others may be nil (then that duty is skipped).
type Deps struct {
	Dataplane Dataplane
	Plumbing  Plumbing
	Closer    ConnCloser
	Events    EventSource
	Prober    Prober
	Sentinel  Sentinel
	// Liveness, when set, probes a master's liveness endpoint (/livez)
	// before its connections are reset: a master that answered its health
	// check with an unhealthy status but is still live (an apiserver in its
	// graceful shutdown delay) is drained without resetting connections
	// that it still serves.
	Liveness Prober
	Log      *zap.Logger
	// Clock defaults to the system clock; tests pass
	// k8s.io/utils/clock/testing's FakeClock.
	Clock clock.WithTicker
	// Rand returns numbers in [0, 1) for the probe jitter; defaults to
	// math/rand/v2.
	Rand func() float64
	// Discovery, when set, lists the masters the API knows: they join the
	// --master seeds (see masterList).
	Discovery Discoverer
	// Store, when set, keeps the discovered masters across restarts.
	Store Store
}

// Discoverer lists the masters from the API.
type Discoverer interface {
	// Discover runs until ctx ends. It calls report with every complete
	// listing of the masters (err nil), and with an error whenever the
	// listing can no longer be trusted (the API unreachable, the watch
	// failed); it retries on its own.
	Discover(ctx context.Context, report func(addrs []netip.AddrPort, err error))
}

// Watchdog health-checks the masters and keeps the kernel in line.
type Watchdog struct {
	cfg     Config
	d       Deps
	log     *zap.Logger
	clock   clock.WithTicker
	rnd     func() float64
	tracker *health.Tracker
	met     *metrics
	errLog  *errLimiter

	ready atomic.Bool
	tick  atomic.Int64 // UnixNano of the loop's last iteration

	mu     sync.Mutex // guards status
	status Status
	kernel map[netip.AddrPort]carestatus.Kernel

	// Loop state, owned by the loop goroutine (or by Once).
	// list is the set of masters (seeds, discovered, restored), order its
	// current order, trusted whether the API's last word was a listing.
	list     *masterList
	order    []netip.AddrPort
	trusted  bool
	listings chan listing
	results  chan probeResult
	triggers chan netip.AddrPort
	lively   chan livenessResult
	masters  map[netip.AddrPort]*master
	// pending counts the liveness checks running; Once waits for them.
	pending int
	// wg counts the goroutines the watchdog started (probes, liveness
	// checks, sentinels): Run and Once wait for them before returning.
	wg sync.WaitGroup
}

// master is the loop's state of one master: its probes and its sentinel.
type master struct {
	// kick wakes its sentinel at once when it comes back up.
	kick chan struct{}
	// inFlight is the number of probes running: 0, 1, or 2 with a hedge.
	inFlight int
	// started is when the running probe started.
	started time.Time
	// hedged is set when a hedge probe was sent alongside it.
	hedged bool
	// retrigger marks a master whose sentinel fired while a probe was
	// running: it is probed again as soon as that probe returns.
	retrigger bool
	// closed marks a master whose sentinel connection it closed, until a
	// probe answers or the master goes down: a refused probe then is
	// conclusive (health.Outcome.Conclusive).
	closed bool
	// due is when its next scheduled probe is.
	due time.Time
	// status is the HTTP status of its last probe, 0 without an answer.
	status int
	// stop ends its sentinel (nil when none runs).
	stop context.CancelFunc
}

// listing is what discovery reported: the masters, or why there is no
// trusted listing.
type listing struct {
	addrs []netip.AddrPort
	err   error
}

type probeResult struct {
	addr netip.AddrPort
	r    probe.Result
}

// livenessResult is the answer of a master's liveness check, asked before
// resetting its connections.
type livenessResult struct {
	addr    netip.AddrPort
	trigger string
	live    bool
}

// New checks cfg and returns a watchdog; nothing is touched yet.
func New(cfg Config, d Deps) (*Watchdog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Dataplane == nil || d.Prober == nil {
		return nil, errors.New("care: a dataplane and a prober are required")
	}
	w := &Watchdog{cfg: cfg, d: d, log: d.Log, clock: d.Clock, rnd: d.Rand, met: newMetrics(),
		list:     newMasterList(cfg.Service.VIP, cfg.Masters, cfg.ForgetAfter),
		listings: make(chan listing),
		results:  make(chan probeResult, 2*len(cfg.Masters)),
		triggers: make(chan netip.AddrPort, len(cfg.Masters)),
		lively:   make(chan livenessResult, len(cfg.Masters)),
		masters:  map[netip.AddrPort]*master{},
	}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	w.restore()
	w.order = w.list.masters()
	t, err := health.NewTracker(cfg.Health, w.order)
	if err != nil {
		return nil, err
	}
	w.tracker = t
	if w.clock == nil {
		w.clock = clock.RealClock{}
	}
	if w.rnd == nil {
		w.rnd = rand.Float64
	}
	w.errLog = &errLimiter{last: map[string]errLogged{}, every: 30 * time.Second}
	for _, m := range w.order {
		w.masters[m] = &master{kick: make(chan struct{}, 1)}
	}
	w.met.masters.Set(float64(len(w.order)))
	w.status = Status{VIP: cfg.Service.VIP, Scheduler: cfg.Service.Scheduler, Mode: cfg.VIP.Mode, NodeIP: cfg.VIP.NodeIP, Version: cfg.Version}
	if cfg.VIP.Mode == ipvs.ModeLink {
		w.status.Interface = cfg.VIP.Interface
	}
	w.markTick()
	w.refreshStatus()
	return w, nil
}

// Status returns a copy of the watchdog's current view.
func (w *Watchdog) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Ready = w.ready.Load()
	s.Masters = append([]carestatus.Master(nil), w.status.Masters...)
	return s
}

// Once adopts the kernel's state, probes every master once, reconciles once
// (plumbing included) and returns the reconcile's error.
func (w *Watchdog) Once(ctx context.Context) error {
	defer w.wg.Wait()
	w.adopt(ctx)
	w.firstRound(ctx)
	err := w.reconcile(ctx, "once", true)
	for ; w.pending > 0; w.pending-- {
		select {
		case lr := <-w.lively:
			if cerr := w.closeConns(ctx, lr); cerr != nil {
				err = errors.Join(err, cerr)
			}
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
	}
	return err
}

// Run adopts the kernel's state, probes every master, reconciles, and then
// keeps doing so until ctx ends. It returns nil when ctx ends, once every
// goroutine it started (probes, liveness checks, sentinels) has returned:
// the kernel's rules are left in place (`vipctl ipvs delete` removes them).
// Kernel errors are logged and retried, never fatal.
func (w *Watchdog) Run(ctx context.Context) error {
	w.log.Info("watchdog starting",
		zap.Stringer("vip", w.cfg.Service.VIP), zap.Stringers("masters", w.order), zap.Stringers("seeds", w.cfg.Masters),
		zap.String("mode", string(w.cfg.VIP.Mode)), zap.Stringer("nodeIP", w.cfg.VIP.NodeIP),
		zap.Duration("interval", w.cfg.Health.Interval), zap.Duration("timeout", w.cfg.Timeout),
		zap.Int("rise", w.cfg.Health.Rise), zap.Int("fall", w.cfg.Health.Fall),
		zap.Duration("resyncPeriod", w.cfg.ResyncPeriod), zap.Bool("sentinel", w.d.Sentinel != nil),
		zap.Bool("discovery", w.d.Discovery != nil))
	// Every goroutine the watchdog starts ends with ctx; Run returns after.
	defer w.wg.Wait()
	w.adopt(ctx)
	w.firstRound(ctx)
	_ = w.reconcile(ctx, "start", true)
	if ctx.Err() != nil {
		return nil
	}
	events := w.subscribe(ctx)
	for _, m := range w.order {
		w.startSentinel(ctx, m)
	}
	if w.d.Discovery != nil {
		w.wg.Go(func() {
			w.d.Discovery.Discover(ctx, func(addrs []netip.AddrPort, err error) {
				select {
				case w.listings <- listing{addrs: addrs, err: err}:
				case <-ctx.Done():
				}
			})
		})
	}
	probeTimer := w.clock.NewTimer(w.untilDue())
	resync := w.clock.NewTimer(w.cfg.ResyncPeriod)
	assert := w.clock.NewTimer(w.cfg.Health.Interval)
	defer probeTimer.Stop()
	defer resync.Stop()
	defer assert.Stop()
	for {
		w.markTick()
		select {
		case <-ctx.Done():
			w.log.Info("watchdog stopping; kernel rules stay in place")
			return nil
		case l := <-w.listings:
			w.onListing(ctx, l)
			probeTimer.Reset(w.untilDue())
		case pr := <-w.results:
			m := w.masters[pr.addr]
			if m == nil {
				continue // forgotten while its probe ran
			}
			if m.inFlight--; m.inFlight <= 0 {
				m.inFlight, m.hedged = 0, false
			}
			if w.observe(pr.addr, pr.r) {
				_ = w.reconcile(ctx, "probe", false)
			}
			if m.inFlight == 0 && m.retrigger {
				// The sentinel fired while this probe was running: its
				// answer may predate the death, so probe again now.
				m.retrigger = false
				w.launch(ctx, pr.addr)
			}
			probeTimer.Reset(w.untilDue())
		case addr := <-w.triggers:
			m := w.masters[addr]
			if m == nil {
				continue
			}
			m.closed = true
			if m.inFlight == 0 {
				w.launch(ctx, addr)
			} else {
				m.retrigger = true
			}
		case lr := <-w.lively:
			w.pending--
			_ = w.closeConns(ctx, lr)
		case <-probeTimer.C():
			launch, hedge, _ := schedule(w.clock.Now(), w.slots(), w.hedgeAfter(), w.cfg.Health.Interval)
			for _, i := range launch {
				w.launch(ctx, w.order[i])
			}
			for _, i := range hedge {
				w.masters[w.order[i]].hedged = true
				w.launch(ctx, w.order[i])
			}
			probeTimer.Reset(w.untilDue())
		case <-resync.C():
			w.resync(ctx)
			resync.Reset(w.cfg.ResyncPeriod)
		case <-assert.C():
			if w.d.Discovery != nil {
				w.sweep()
			}
			_ = w.reconcile(ctx, "interval", true)
			assert.Reset(w.cfg.Health.Interval)
		case _, ok := <-events:
			if !ok {
				events = nil
				if ctx.Err() == nil {
					w.met.errors.WithLabelValues("watch").Inc()
					w.log.Warn("netlink event subscription ended; relying on the interval and resync polls")
				}
				continue
			}
			_ = w.reconcile(ctx, "event", true)
		}
	}
}

func (w *Watchdog) markTick() { w.tick.Store(w.clock.Now().UnixNano()) }

// alive reports whether the loop ticked recently.
func (w *Watchdog) alive() (time.Duration, bool) {
	age := w.clock.Now().Sub(time.Unix(0, w.tick.Load()))
	limit := max(5*time.Second, 3*w.cfg.Health.Interval)
	return age, age < limit
}

// adopt reads the kernel's service and hands it to the tracker.
func (w *Watchdog) adopt(ctx context.Context) {
	cur, err := w.get(ctx)
	if err != nil {
		w.fail("get", err)
		return
	}
	w.tracker.Adopt(cur, w.clock.Now())
	if cur == nil {
		w.log.Info("no virtual server in the kernel yet: the first probe round decides", zap.Stringer("vip", w.cfg.Service.VIP))
		return
	}
	for _, s := range w.tracker.Snapshot() {
		w.log.Info("adopted kernel state", zap.Stringer("master", s.Address), zap.String("state", string(s.Phase)), zap.String("membership", string(s.Membership)))
	}
	w.refreshStatus()
}

// get returns the kernel's service, nil when it does not exist.
func (w *Watchdog) get(ctx context.Context) (*ipvs.State, error) {
	st, err := w.d.Dataplane.Get(ctx, w.cfg.Service.VIP)
	if errors.Is(err, ipvs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// firstRound probes every master at once and waits for all (each probe is
// bounded by the timeout).
func (w *Watchdog) firstRound(ctx context.Context) {
	res := make([]probe.Result, len(w.order))
	var wg sync.WaitGroup
	for i, m := range w.order {
		wg.Go(func() { res[i] = w.d.Prober.Probe(ctx, m) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, m := range w.order {
		w.observe(m, res[i])
	}
}

func (w *Watchdog) launch(ctx context.Context, addr netip.AddrPort) {
	m := w.masters[addr]
	if m.inFlight == 0 {
		m.started = w.clock.Now()
	}
	m.inFlight++
	run := w.d.Prober.Probe
	if fp, ok := w.d.Prober.(FreshProber); ok && w.tracker.MayFlap(addr) {
		run = fp.ProbeFresh
	}
	w.wg.Go(func() {
		r := run(ctx, addr)
		select { // buffered: at most two in flight per master, until masters are added
		case w.results <- probeResult{addr: addr, r: r}:
		case <-ctx.Done():
		}
	})
}

// hedgeAfter is how long a probe of a master in service may run before a
// second, hedging probe is sent alongside it. An unreachable master answers
// nothing, so each probe takes the whole timeout; with a hedge the --fall
// confirmations overlap instead of following each other, and a silent
// master is out after about 1.5 timeouts rather than 2 timeouts plus a
// re-probe delay. A slow but healthy master costs one extra probe.
func (w *Watchdog) hedgeAfter() time.Duration { return w.cfg.Timeout / 2 }

// slot is what scheduling knows of one master.
type slot struct {
	inFlight  int       // probes running
	hedged    bool      // a hedge was sent for the running probe
	inService bool      // only a master in service is hedged
	started   time.Time // when the running probe started
	due       time.Time // when the next scheduled probe is
}

// slots returns every master's slot, in the order of the configuration.
func (w *Watchdog) slots() []slot {
	out := make([]slot, len(w.order))
	for i, a := range w.order {
		m := w.masters[a]
		out[i] = slot{inFlight: m.inFlight, hedged: m.hedged, inService: w.tracker.InService(a), started: m.started, due: m.due}
	}
	return out
}

// schedule decides, at now, which masters to probe (launch: none running
// and due) and which to hedge (one probe running for hedgeAfter on a
// master in service, not hedged yet), and how long until the next such
// decision; idle when every master has probes running (a result comes
// first). It is pure: the loop calls it when its timer fires.
func schedule(now time.Time, slots []slot, hedgeAfter, idle time.Duration) (launch, hedge []int, wait time.Duration) {
	wait = -1
	next := func(at time.Time) {
		if d := max(at.Sub(now), 0); wait < 0 || d < wait {
			wait = d
		}
	}
	for i, s := range slots {
		hedgeable := s.inFlight == 1 && !s.hedged && s.inService
		switch {
		case s.inFlight == 0 && !now.Before(s.due):
			launch = append(launch, i)
		case hedgeable && now.Sub(s.started) >= hedgeAfter:
			hedge = append(hedge, i)
		case s.inFlight == 0:
			next(s.due)
		case hedgeable:
			next(s.started.Add(hedgeAfter))
		}
	}
	if wait < 0 {
		wait = idle
	}
	if len(launch) > 0 || len(hedge) > 0 {
		wait = 0 // decided now; the caller asks again after launching
	}
	return launch, hedge, wait
}

// untilDue is the time until the earliest scheduled probe or hedge.
func (w *Watchdog) untilDue() time.Duration {
	_, _, wait := schedule(w.clock.Now(), w.slots(), w.hedgeAfter(), w.cfg.Health.Interval)
	return wait
}

// observe feeds a probe result to the tracker, logs and schedules the next
// probe. It reports whether the master changed state.
func (w *Watchdog) observe(addr netip.AddrPort, r probe.Result) bool {
	now := w.clock.Now()
	result := "success"
	if !r.OK {
		result = "failure"
	}
	w.met.probeDuration.WithLabelValues(addr.String(), result).Observe(r.Latency.Seconds())
	w.log.Debug("probe", zap.Stringer("master", addr), zap.Bool("ok", r.OK), zap.Int("status", r.Status),
		zap.String("reason", r.Reason), zap.Duration("latency", r.Latency), zap.Uint32("retransmits", r.Retransmits))
	m := w.masters[addr]
	if m == nil {
		return false
	}
	conclusive := !r.OK && r.Refused && m.closed
	if r.OK || r.Status != 0 {
		m.closed = false // it answers: whatever closed the sentinel, it lives
	}
	events := w.tracker.Observe(addr, health.Outcome{OK: r.OK, Fast: r.Fast, Status: r.Status, Reason: r.Reason, Latency: r.Latency,
		Conclusive: conclusive, Retransmitted: retransmitTimedOut(r)}, now)
	w.emit(events)
	m.due = now.Add(w.tracker.NextProbe(addr, w.rnd()))
	m.status = r.Status
	w.checkUnauthorized()
	w.refreshStatus()
	for _, e := range events {
		if e.Kind == health.EventTransition {
			m.closed = false
			return true
		}
	}
	return false
}

// unauthorized reports whether the masters' last answers say that the
// probes' credentials are refused: at least one master answered 401 or 403
// and none answered any other HTTP status (masters that did not answer at
// all do not count). It is pure.
func unauthorized(statuses []int) bool {
	seen := false
	for _, s := range statuses {
		switch s {
		case 0:
		case 401, 403:
			seen = true
		default:
			return false
		}
	}
	return seen
}

// checkUnauthorized says loudly, once per change, when the apiservers
// refuse the probes' credentials: every master then looks down and the
// watchdog fails open, health checking silently off.
func (w *Watchdog) checkUnauthorized() {
	statuses := make([]int, 0, len(w.masters))
	for _, m := range w.masters {
		statuses = append(statuses, m.status)
	}
	now := unauthorized(statuses)
	w.mu.Lock()
	was := w.status.ProbesUnauthorized
	w.status.ProbesUnauthorized = now
	w.mu.Unlock()
	if now == was {
		return
	}
	if now {
		w.met.unauthorized.Set(1)
		w.log.Error("probes unauthorized: every master that answers refuses the probes' credentials (HTTP 401/403); check --kubeconfig or the client certificate, and the RBAC of /readyz")
	} else {
		w.met.unauthorized.Set(0)
		w.log.Info("probes authorized again")
	}
}

// emit logs events and updates metrics.
func (w *Watchdog) emit(events []health.Event) {
	for _, e := range events {
		f := []zap.Field{zap.String("event", string(e.Kind)), zap.String("reason", e.Reason)}
		if e.Master.IsValid() {
			f = append(f, zap.Stringer("master", e.Master))
		}
		if e.From != "" || e.To != "" {
			f = append(f, zap.String("from", e.From), zap.String("to", e.To))
		}
		if !e.HoldUntil.IsZero() {
			f = append(f, zap.Time("holdDownUntil", e.HoldUntil))
		}
		switch e.Kind {
		case health.EventTransition:
			w.met.transitions.WithLabelValues(e.Master.String(), e.From, e.To).Inc()
			if e.To == string(health.Down) {
				w.log.Warn("master down", f...)
			} else {
				w.log.Info("master "+e.To, f...)
			}
			if m := w.masters[e.Master]; m != nil && e.To == string(health.Up) {
				select {
				case m.kick <- struct{}{}:
				default:
				}
			}
		case health.EventFailOpen:
			w.met.failOpen.Set(1)
			w.log.Warn("fail-open", f...)
		case health.EventFailOpenEnd:
			w.met.failOpen.Set(0)
			w.log.Info("fail-open ended", f...)
		default:
			w.log.Info(string(e.Kind), f...)
		}
	}
}

// resync is the frequent poll that notices what emits no event: a flush of
// the IPVS table or a changed scheduler. With a Presence check it costs
// one small netlink round trip; a full reconcile follows only when the
// service is missing or wrong (or the check fails). Real servers changed
// behind vipctl's back are repaired by the interval's reconcile.
func (w *Watchdog) resync(ctx context.Context) {
	if p, ok := w.d.Dataplane.(Presence); ok {
		sched, ok, err := p.Present(ctx, w.cfg.Service.VIP)
		if err == nil && ok && sched == w.cfg.Service.Scheduler {
			return
		}
	}
	_ = w.reconcile(ctx, "resync", false)
}

// reconcile makes the kernel match the tracker's plan. With plumbing, the
// VIP interface, address and route are re-asserted first.
func (w *Watchdog) reconcile(ctx context.Context, trigger string, plumbing bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	w.met.reconciles.WithLabelValues(trigger).Inc()
	var errs []error
	if plumbing && w.d.Plumbing != nil {
		changes, err := w.d.Plumbing.EnsureVIP(ctx, w.cfg.VIP)
		w.logChanges(trigger, changes)
		if err != nil {
			w.fail("vip", err)
			errs = append(errs, fmt.Errorf("VIP plumbing: %w", err))
		}
	}
	cur, err := w.get(ctx)
	if err != nil {
		w.fail("get", err)
		return w.finish(append(errs, fmt.Errorf("read virtual server %s: %w", w.cfg.Service.VIP, err)))
	}
	now := w.clock.Now()
	plan := w.tracker.Plan(cur, now)
	w.emit(plan.Events)
	desired := ipvs.Desired{Service: w.cfg.Service, RealServers: plan.RealServers}
	w.setKernel(cur)
	if cur == nil || !ipvs.MakePlan(cur, desired).Empty() {
		changes, err := w.d.Dataplane.Apply(ctx, desired)
		w.logChanges(trigger, changes)
		if err != nil {
			w.fail("apply", err)
			return w.finish(append(errs, fmt.Errorf("apply virtual server %s: %w", w.cfg.Service.VIP, err)))
		}
		if len(changes) > 0 {
			if st, err := w.get(ctx); err == nil {
				w.setKernel(st)
			}
		}
	}
	// Connections are reset only once weight 0 is in place, so clients
	// reconnect to another master.
	for _, a := range plan.Close {
		w.tracker.ConnsClosed(a)
		if w.d.Closer == nil {
			continue
		}
		if w.d.Liveness != nil && w.tracker.LastStatus(a) != 0 {
			// It answered unhealthily: ask its liveness first, without
			// holding up the loop (the resync repair runs meanwhile).
			w.pending++
			w.wg.Go(func() {
				live := w.d.Liveness.Probe(ctx, a).OK
				select {
				case w.lively <- livenessResult{addr: a, trigger: trigger, live: live}:
				case <-ctx.Done():
				}
			})
			continue
		}
		if err := w.closeConns(ctx, livenessResult{addr: a, trigger: trigger}); err != nil {
			errs = append(errs, err)
		}
	}
	return w.finish(errs)
}

// closeConns resets the connections to master lr.addr, unless it answered
// its liveness check (lr.live): an apiserver in its shutdown delay (readyz
// 500, livez 200) keeps serving the requests on its connections, so they
// are left to finish. A master that did not answer at all (refused, reset,
// timeout) is not asked, and one whose liveness fails too (etcd lost) has
// them reset. A master back in service by the time the answer comes keeps
// them.
func (w *Watchdog) closeConns(ctx context.Context, lr livenessResult) error {
	a := lr.addr
	target := w.cfg.Service.VIP.String() + " -> " + a.String()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case lr.live:
		w.log.Info("reconcile action", zap.String("trigger", lr.trigger), zap.String("op", "keep"),
			zap.String("kind", "connections"), zap.String("target", target),
			zap.String("reason", "master answers its liveness check: draining without resetting its connections"))
		return nil
	case w.tracker.InService(a):
		return nil
	}
	n, err := w.d.Closer.CloseConnections(ctx, w.cfg.Service.VIP, a)
	w.met.connsReset.WithLabelValues(a.String()).Add(float64(n))
	if err != nil {
		w.fail("close", err)
		err = fmt.Errorf("reset connections to %s: %w", a, err)
		w.mu.Lock()
		w.status.LastError = err.Error()
		w.mu.Unlock()
		return err
	}
	w.log.Info("reconcile action", zap.String("trigger", lr.trigger), zap.String("op", "reset"),
		zap.String("kind", "connections"), zap.String("target", target), zap.Int("count", n))
	return nil
}

// finish records the outcome of a reconcile.
func (w *Watchdog) finish(errs []error) error {
	err := errors.Join(errs...)
	now := w.clock.Now()
	w.mu.Lock()
	if err != nil {
		w.status.LastError = err.Error()
	} else {
		w.status.LastError = ""
		w.status.LastReconcile = now
	}
	w.mu.Unlock()
	if err == nil {
		w.met.lastReconcile.Set(float64(now.UnixNano()) / 1e9)
		if !w.ready.Swap(true) {
			w.log.Info("first reconcile done: ready")
		}
	}
	w.refreshStatus()
	return err
}

// logChanges logs every kernel change with the trigger, one line each, so
// that measurements can be derived from the log.
func (w *Watchdog) logChanges(trigger string, changes []ipvs.Change) {
	for _, c := range changes {
		w.met.actions.WithLabelValues(string(c.Op), string(c.Kind)).Inc()
		w.log.Info("reconcile action", zap.String("trigger", trigger), zap.String("op", string(c.Op)),
			zap.String("kind", string(c.Kind)), zap.String("target", c.Target), zap.String("detail", c.Detail))
	}
}

// fail counts an error and logs it, at most every 30 s for a repeated one
// (the resync poll would otherwise log it ten times a second).
func (w *Watchdog) fail(stage string, err error) {
	w.met.errors.WithLabelValues(stage).Inc()
	if w.errLog.allow(stage, err.Error(), w.clock.Now()) {
		w.log.Error("reconcile error", zap.String("stage", stage), zap.Error(err))
	}
}

func (w *Watchdog) setKernel(cur *ipvs.State) {
	k := map[netip.AddrPort]carestatus.Kernel{}
	if cur != nil {
		for _, rs := range cur.RealServers {
			k[rs.Addr] = carestatus.Kernel{Weight: rs.Weight, ActiveConns: rs.ActiveConns, InactiveConns: rs.InactiveConns}
		}
	}
	w.mu.Lock()
	w.kernel = k
	w.mu.Unlock()
}

// refreshStatus rebuilds the status and the per-master gauges.
func (w *Watchdog) refreshStatus() {
	masters := w.tracker.Snapshot()
	now := w.clock.Now()
	for _, s := range masters {
		a := s.Address.String()
		up := 0.0
		if s.Phase == health.Up {
			up = 1
		}
		w.met.up.WithLabelValues(a).Set(up)
		held := 0.0
		if s.HeldDown {
			held = max(s.HoldUntil.Sub(now).Seconds(), 0)
		}
		w.met.heldDown.WithLabelValues(a).Set(held)
		for _, m := range []health.Membership{health.InService, health.Draining, health.Removed} {
			v := 0.0
			if m == s.Membership {
				v = 1
			}
			w.met.membership.WithLabelValues(a, string(m)).Set(v)
		}
	}
	for i := range masters {
		masters[i].Source, masters[i].LastSeenInAPI, masters[i].ForgetAt = w.list.info(masters[i].Address)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range masters {
		if k, ok := w.kernel[masters[i].Address]; ok {
			masters[i].Kernel = &k
		}
	}
	w.status.Masters = masters
	w.status.FailOpen = w.tracker.FailOpen()
}

// subscribe starts the netlink event subscription, if any.
func (w *Watchdog) subscribe(ctx context.Context) <-chan struct{} {
	if w.d.Events == nil {
		return nil
	}
	ch, err := w.d.Events.Watch(ctx)
	if err != nil {
		w.met.errors.WithLabelValues("watch").Inc()
		w.log.Warn("cannot watch netlink events; relying on the interval and resync polls", zap.Error(err))
		return nil
	}
	return ch
}

// startSentinel starts the sentinel of master addr, if sentinels are on;
// forgetting the master stops it.
func (w *Watchdog) startSentinel(ctx context.Context, addr netip.AddrPort) {
	m := w.masters[addr]
	if w.d.Sentinel == nil || m == nil || m.stop != nil {
		return
	}
	sctx, stop := context.WithCancel(ctx)
	m.stop = stop
	w.wg.Go(func() { w.sentinel(sctx, addr, m.kick) })
}

// sentinel keeps an idle connection to addr and triggers a probe when the
// master closes it. Short sessions (a server that does not keep idle
// connections) and failed dials back off; a kick (the master came up)
// redials at once.
func (w *Watchdog) sentinel(ctx context.Context, addr netip.AddrPort, kick <-chan struct{}) {
	interval := w.cfg.Health.Interval
	backoff := interval
	for {
		start := w.clock.Now()
		held := w.met.sentinelHeld.WithLabelValues(addr.String())
		established, err := w.d.Sentinel.Hold(ctx, addr, func() { held.Set(1) })
		held.Set(0)
		if ctx.Err() != nil {
			return
		}
		heldFor := w.clock.Now().Sub(start)
		if established {
			w.met.sentinel.WithLabelValues(addr.String()).Inc()
			w.log.Debug("sentinel connection ended: probing now", zap.Stringer("master", addr), zap.Duration("held", heldFor), zap.Error(err))
			select {
			case w.triggers <- addr:
			case <-ctx.Done():
				return
			}
		} else {
			w.log.Debug("sentinel connection failed", zap.Stringer("master", addr), zap.Error(err))
		}
		backoff = sentinelBackoff(backoff, interval, heldFor, established)
		t := w.clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-kick:
			backoff = interval
		case <-t.C():
		}
		t.Stop()
	}
}

// sentinelSteady is the hold after which a sentinel session counts as a
// kept connection whatever the interval: kube-apiserver closes idle
// connections after ~90 s, which must not back the sentinel off when the
// interval is long (10 s on a slow machine).
const sentinelSteady = 30 * time.Second

// sentinelMaxBackoff caps the wait before a sentinel redials.
const sentinelMaxBackoff = 5 * time.Minute

// sentinelBackoff is the wait before the sentinel redials, after a session
// held for heldFor (established: a connection was made) and the previous
// wait prev. A session held for ten intervals, or for sentinelSteady, was a
// kept connection ended by its idle timeout or by the master: redial after
// one interval. A shorter one (a server that does not keep connections) or
// a failed dial doubles the wait, up to sentinelMaxBackoff.
func sentinelBackoff(prev, interval, heldFor time.Duration, established bool) time.Duration {
	if established && heldFor >= min(10*interval, sentinelSteady) {
		return interval
	}
	return min(max(prev, interval)*2, sentinelMaxBackoff)
}

type errLogged struct {
	msg string
	at  time.Time
}

// errLimiter lets a repeated error through once per period.
type errLimiter struct {
	mu    sync.Mutex
	last  map[string]errLogged
	every time.Duration
}

func (l *errLimiter) allow(stage, msg string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.last[stage]
	if ok && p.msg == msg && now.Sub(p.at) < l.every {
		return false
	}
	l.last[stage] = errLogged{msg: msg, at: now}
	return true
}

// tcpMinRTO is Linux's floor of the TCP retransmission timeout
// (TCP_RTO_MIN).
const tcpMinRTO = 200 * time.Millisecond

// retransmitTimedOut tells whether a probe's answer needed a TCP
// retransmission and took at least the kernel's shortest retransmission
// timeout: a segment was lost and the exchange waited for the timer, as
// on a link that flaps. A retransmission that cost less (a tail loss
// probe or a fast retransmit, which a busy or emulated host sends for
// nothing now and then) is no sign of a lossy link.
func retransmitTimedOut(r probe.Result) bool {
	return r.Retransmits > 0 && r.Latency >= tcpMinRTO
}
