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
	// Clock defaults to the system clock.
	Clock Clock
	// Rand returns numbers in [0, 1) for the probe jitter; defaults to
	// math/rand/v2.
	Rand func() float64
}

// Watchdog health-checks the masters and keeps the kernel in line.
type Watchdog struct {
	cfg     Config
	d       Deps
	log     *zap.Logger
	clock   Clock
	rnd     func() float64
	tracker *health.Tracker
	met     *metrics
	errLog  *errLimiter

	ready atomic.Bool
	tick  atomic.Int64 // UnixNano of the loop's last iteration

	mu     sync.Mutex // guards status
	status Status
	kernel map[netip.AddrPort]KernelRealServer

	// Loop state, owned by the loop goroutine.
	results  chan probeResult
	triggers chan netip.AddrPort
	kicks    map[netip.AddrPort]chan struct{}
	inFlight map[netip.AddrPort]int       // probes running: 0, 1, or 2 with a hedge
	started  map[netip.AddrPort]time.Time // when the running probe started
	hedged   map[netip.AddrPort]bool      // a hedge probe was sent for it
	// retrigger marks a master whose sentinel fired while a probe was
	// running: it is probed again as soon as that probe returns.
	retrigger map[netip.AddrPort]bool
	// closed marks a master whose sentinel connection it closed, until a
	// probe answers or the master goes down: a refused probe then is
	// conclusive (health.Outcome.Conclusive).
	closed map[netip.AddrPort]bool
	due    map[netip.AddrPort]time.Time
}

type probeResult struct {
	addr netip.AddrPort
	r    probe.Result
}

// New checks cfg and returns a watchdog; nothing is touched yet.
func New(cfg Config, d Deps) (*Watchdog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Dataplane == nil || d.Prober == nil {
		return nil, errors.New("care: a dataplane and a prober are required")
	}
	t, err := health.NewTracker(cfg.Health, cfg.Masters)
	if err != nil {
		return nil, err
	}
	w := &Watchdog{cfg: cfg, d: d, log: d.Log, clock: d.Clock, rnd: d.Rand, tracker: t, met: newMetrics(),
		results:   make(chan probeResult, 2*len(cfg.Masters)),
		triggers:  make(chan netip.AddrPort, len(cfg.Masters)),
		kicks:     map[netip.AddrPort]chan struct{}{},
		inFlight:  map[netip.AddrPort]int{},
		started:   map[netip.AddrPort]time.Time{},
		hedged:    map[netip.AddrPort]bool{},
		retrigger: map[netip.AddrPort]bool{},
		closed:    map[netip.AddrPort]bool{},
		due:       map[netip.AddrPort]time.Time{},
	}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	if w.clock == nil {
		w.clock = RealClock{}
	}
	if w.rnd == nil {
		w.rnd = rand.Float64
	}
	w.errLog = &errLimiter{last: map[string]errLogged{}, every: 30 * time.Second}
	for _, m := range cfg.Masters {
		w.kicks[m] = make(chan struct{}, 1)
	}
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
	s.Masters = append([]MasterStatus(nil), w.status.Masters...)
	return s
}

// Once adopts the kernel's state, probes every master once, reconciles once
// (plumbing included) and returns the reconcile's error.
func (w *Watchdog) Once(ctx context.Context) error {
	w.adopt(ctx)
	w.firstRound(ctx)
	return w.reconcile(ctx, "once", true)
}

// Run adopts the kernel's state, probes every master, reconciles, and then
// keeps doing so until ctx ends. It returns nil when ctx ends: the kernel's
// rules are left in place (`vipctl ipvs delete` removes them). Kernel errors
// are logged and retried, never fatal.
func (w *Watchdog) Run(ctx context.Context) error {
	w.log.Info("watchdog starting",
		zap.Stringer("vip", w.cfg.Service.VIP), zap.Stringers("masters", w.cfg.Masters),
		zap.String("mode", string(w.cfg.VIP.Mode)), zap.Stringer("nodeIP", w.cfg.VIP.NodeIP),
		zap.Duration("interval", w.cfg.Health.Interval), zap.Duration("timeout", w.cfg.Timeout),
		zap.Int("rise", w.cfg.Health.Rise), zap.Int("fall", w.cfg.Health.Fall),
		zap.Duration("resyncPeriod", w.cfg.ResyncPeriod), zap.Bool("sentinel", w.d.Sentinel != nil))
	w.adopt(ctx)
	w.firstRound(ctx)
	_ = w.reconcile(ctx, "start", true)
	if ctx.Err() != nil {
		return nil
	}
	events := w.subscribe(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	if w.d.Sentinel != nil {
		for _, m := range w.cfg.Masters {
			wg.Go(func() { w.sentinel(ctx, m, w.kicks[m]) })
		}
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
		case pr := <-w.results:
			if w.inFlight[pr.addr]--; w.inFlight[pr.addr] <= 0 {
				w.inFlight[pr.addr], w.hedged[pr.addr] = 0, false
			}
			if w.observe(pr.addr, pr.r) {
				_ = w.reconcile(ctx, "probe", false)
			}
			if w.inFlight[pr.addr] == 0 && w.retrigger[pr.addr] {
				// The sentinel fired while this probe was running: its
				// answer may predate the death, so probe again now.
				w.retrigger[pr.addr] = false
				w.launch(ctx, pr.addr)
			}
			probeTimer.Reset(w.untilDue())
		case addr := <-w.triggers:
			w.closed[addr] = true
			if w.inFlight[addr] == 0 {
				w.launch(ctx, addr)
			} else {
				w.retrigger[addr] = true
			}
		case <-probeTimer.C():
			now := w.clock.Now()
			for _, m := range w.cfg.Masters {
				switch {
				case w.inFlight[m] == 0 && !now.Before(w.due[m]):
					w.launch(ctx, m)
				case w.hedgeDue(m, now):
					w.hedged[m] = true
					w.launch(ctx, m)
				}
			}
			probeTimer.Reset(w.untilDue())
		case <-resync.C():
			w.resync(ctx)
			resync.Reset(w.cfg.ResyncPeriod)
		case <-assert.C():
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
	res := make([]probe.Result, len(w.cfg.Masters))
	var wg sync.WaitGroup
	for i, m := range w.cfg.Masters {
		wg.Go(func() { res[i] = w.d.Prober.Probe(ctx, m) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	for i, m := range w.cfg.Masters {
		w.observe(m, res[i])
	}
}

func (w *Watchdog) launch(ctx context.Context, addr netip.AddrPort) {
	if w.inFlight[addr] == 0 {
		w.started[addr] = w.clock.Now()
	}
	w.inFlight[addr]++
	go func() {
		r := w.d.Prober.Probe(ctx, addr)
		w.results <- probeResult{addr: addr, r: r} // buffered: at most two in flight per master
	}()
}

// hedgeAfter is how long a probe of a master in service may run before a
// second, hedging probe is sent alongside it.
func (w *Watchdog) hedgeAfter() time.Duration { return w.cfg.Timeout / 2 }

// hedgeDue reports whether master m, in service, has had a single probe
// running for hedgeAfter. An unreachable master answers nothing, so each
// probe takes the whole timeout; with a hedge the --fall confirmations
// overlap instead of following each other, and a silent master is out
// after about 1.5 timeouts rather than 2 timeouts plus a re-probe delay.
// A slow but healthy master costs one extra probe.
func (w *Watchdog) hedgeDue(m netip.AddrPort, now time.Time) bool {
	return w.inFlight[m] == 1 && !w.hedged[m] && w.tracker.InService(m) &&
		now.Sub(w.started[m]) >= w.hedgeAfter()
}

// untilDue is the time until the earliest scheduled probe.
func (w *Watchdog) untilDue() time.Duration {
	now := w.clock.Now()
	next := time.Duration(-1)
	for _, m := range w.cfg.Masters {
		if w.inFlight[m] > 0 {
			if w.inFlight[m] == 1 && !w.hedged[m] && w.tracker.InService(m) {
				d := max(w.started[m].Add(w.hedgeAfter()).Sub(now), 0)
				if next < 0 || d < next {
					next = d
				}
			}
			continue
		}
		d := max(w.due[m].Sub(now), 0)
		if next < 0 || d < next {
			next = d
		}
	}
	if next < 0 {
		return w.cfg.Health.Interval // every master in flight; a result resets the timer
	}
	return next
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
		zap.String("reason", r.Reason), zap.Duration("latency", r.Latency))
	conclusive := !r.OK && r.Refused && w.closed[addr]
	if r.OK || r.Status != 0 {
		w.closed[addr] = false // it answers: whatever closed the sentinel, it lives
	}
	events := w.tracker.Observe(addr, health.Outcome{OK: r.OK, Fast: r.Fast, Status: r.Status, Reason: r.Reason, Latency: r.Latency, Conclusive: conclusive}, now)
	w.emit(events)
	w.due[addr] = now.Add(w.tracker.NextProbe(addr, w.rnd()))
	w.refreshStatus()
	for _, e := range events {
		if e.Kind == health.EventTransition {
			w.closed[addr] = false
			return true
		}
	}
	return false
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
			if e.To == string(health.Up) {
				select {
				case w.kicks[e.Master] <- struct{}{}:
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
		if w.stillLive(ctx, a) {
			w.log.Info("reconcile action", zap.String("trigger", trigger), zap.String("op", "keep"),
				zap.String("kind", "connections"), zap.String("target", w.cfg.Service.VIP.String()+" -> "+a.String()),
				zap.String("reason", "master answers its liveness check: draining without resetting its connections"))
			continue
		}
		n, err := w.d.Closer.CloseConnections(ctx, w.cfg.Service.VIP, a)
		w.met.connsReset.WithLabelValues(a.String()).Add(float64(n))
		if err != nil {
			w.fail("close", err)
			errs = append(errs, fmt.Errorf("reset connections to %s: %w", a, err))
			continue
		}
		w.log.Info("reconcile action", zap.String("trigger", trigger), zap.String("op", "reset"),
			zap.String("kind", "connections"), zap.String("target", w.cfg.Service.VIP.String()+" -> "+a.String()), zap.Int("count", n))
	}
	return w.finish(errs)
}

// stillLive reports whether master a, taken out because it answered its
// health check with an unhealthy status, still answers its liveness check:
// an apiserver in its shutdown delay (readyz 500, livez 200) keeps serving
// the requests on its connections, so they are left to finish. A master
// that did not answer at all (refused, reset, timeout), or whose liveness
// fails too (etcd lost), has its connections reset.
func (w *Watchdog) stillLive(ctx context.Context, a netip.AddrPort) bool {
	if w.d.Liveness == nil || w.tracker.LastStatus(a) == 0 {
		return false
	}
	return w.d.Liveness.Probe(ctx, a).OK
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
		w.met.actions.WithLabelValues(string(c.Op), c.Kind).Inc()
		w.log.Info("reconcile action", zap.String("trigger", trigger), zap.String("op", string(c.Op)),
			zap.String("kind", c.Kind), zap.String("target", c.Target), zap.String("detail", c.Detail))
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
	k := map[netip.AddrPort]KernelRealServer{}
	if cur != nil {
		for _, rs := range cur.RealServers {
			k[rs.Addr] = KernelRealServer{Weight: rs.Weight, ActiveConns: rs.ActiveConns, InactiveConns: rs.InactiveConns}
		}
	}
	w.mu.Lock()
	w.kernel = k
	w.mu.Unlock()
}

// refreshStatus rebuilds the status and the per-master gauges.
func (w *Watchdog) refreshStatus() {
	snap := w.tracker.Snapshot()
	now := w.clock.Now()
	masters := make([]MasterStatus, len(snap))
	for i, s := range snap {
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
		masters[i] = MasterStatus{MasterStatus: s}
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

// sentinel keeps an idle connection to addr and triggers a probe when the
// master closes it. Short sessions (a server that does not keep idle
// connections) and failed dials back off; a kick (the master came up)
// redials at once.
func (w *Watchdog) sentinel(ctx context.Context, addr netip.AddrPort, kick <-chan struct{}) {
	const maxBackoff = 5 * time.Minute
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
		if established && heldFor >= 10*interval {
			backoff = interval
		} else {
			backoff = min(backoff*2, maxBackoff)
		}
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
