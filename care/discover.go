package care

import (
	"context"
	"net/netip"

	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/health"
)

// restore adds the masters of the state file (when there is one) to the
// list, before the tracker is made: a restart while the API is unreachable
// still knows the masters discovered before it.
func (w *Watchdog) restore() {
	if w.d.Store == nil {
		return
	}
	st, err := w.d.Store.Load()
	if err != nil {
		w.met.discoveryErrors.WithLabelValues("state").Inc()
		w.log.Warn("cannot read the saved masters: starting from --master only", zap.Error(err))
		return
	}
	added, bad := w.list.restore(st)
	for _, b := range bad {
		w.log.Warn("ignoring a saved master", zap.Stringer("master", b.addr), zap.String("reason", b.why))
	}
	if len(added) > 0 {
		w.log.Info("masters restored from the state file", zap.Stringers("masters", added))
	}
}

// onListing takes what discovery reported: new masters join (Down, out of
// service until they pass --rise probes, their sentinel started and a probe
// due at once); an error only makes absence count for nothing until the
// next listing. Nothing is removed here (see sweep).
func (w *Watchdog) onListing(ctx context.Context, l listing) {
	if l.err != nil {
		w.met.discoveryErrors.WithLabelValues("api").Inc()
		if w.trusted || w.errLog.allow("discovery", l.err.Error(), w.clock.Now()) {
			w.log.Warn("master discovery failing: keeping every master, retrying", zap.Error(l.err))
		}
		w.trusted = false
		w.list.untrusted()
		w.refreshStatus()
		return
	}
	if !w.trusted {
		w.log.Info("master discovery: listing from the API", zap.Stringers("masters", l.addrs))
	}
	w.trusted = true
	now := w.clock.Now()
	added, bad := w.list.seen(l.addrs, now)
	for _, b := range bad {
		if w.errLog.allow("discovery-bad:"+b.addr.String(), b.why, now) {
			w.log.Warn("ignoring an address the API lists", zap.Stringer("address", b.addr), zap.String("reason", b.why))
		}
	}
	for _, a := range added {
		w.tracker.Add(a, now)
		w.masters[a] = &master{kick: make(chan struct{}, 1), due: now}
		w.startSentinel(ctx, a)
		w.log.Info("master discovered", zap.Stringer("master", a))
	}
	w.order = w.list.masters()
	if len(added) > 0 {
		w.save()
	}
	w.met.masters.Set(float64(len(w.order)))
	w.refreshStatus()
}

// sweep forgets the discovered masters absent from the API and unhealthy
// for --forget-after: the tracker lets them go, and the next reconcile
// drains them from the kernel as real servers that are no master.
func (w *Watchdog) sweep() {
	healthy := func(a netip.AddrPort) bool { return w.tracker.Phase(a) == health.Up }
	forget := w.list.sweep(w.clock.Now(), w.trusted, healthy)
	for _, a := range forget {
		if !w.tracker.Remove(a) {
			continue
		}
		if m := w.masters[a]; m != nil && m.stop != nil {
			m.stop()
		}
		delete(w.masters, a)
		w.met.forget(a.String())
		w.met.forgotten.Inc()
		w.log.Warn("master forgotten: absent from the API and unhealthy", zap.Stringer("master", a),
			zap.Duration("forgetAfter", w.cfg.ForgetAfter))
	}
	if len(forget) > 0 {
		w.order = w.list.masters()
		w.save()
		w.met.masters.Set(float64(len(w.order)))
	}
	w.refreshStatus()
}

// save writes the discovered masters to the state file, if any.
func (w *Watchdog) save() {
	if w.d.Store == nil {
		return
	}
	if err := w.d.Store.Save(w.list.stored()); err != nil {
		w.met.discoveryErrors.WithLabelValues("state").Inc()
		w.log.Warn("cannot save the discovered masters", zap.Error(err))
	}
}
