package care

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the watchdog's Prometheus metrics, in a registry of its own
// (never the global default registry).
type metrics struct {
	reg           *prometheus.Registry
	up            *prometheus.GaugeVec
	membership    *prometheus.GaugeVec
	probeDuration *prometheus.HistogramVec
	transitions   *prometheus.CounterVec
	actions       *prometheus.CounterVec
	errors        *prometheus.CounterVec
	reconciles    *prometheus.CounterVec
	connsReset    *prometheus.CounterVec
	sentinel      *prometheus.CounterVec
	sentinelHeld  *prometheus.GaugeVec
	heldDown      *prometheus.GaugeVec
	failOpen      prometheus.Gauge
	unauthorized  prometheus.Gauge
	// discovery of the masters
	masters         prometheus.Gauge
	forgotten       prometheus.Counter
	discoveryErrors *prometheus.CounterVec
	lastReconcile   prometheus.Gauge
}

// forget drops the series of a master the watchdog no longer manages.
func (m *metrics) forget(master string) {
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.up, m.membership, m.probeDuration, m.transitions, m.connsReset, m.sentinel, m.sentinelHeld, m.heldDown} {
		v.DeletePartialMatch(prometheus.Labels{"master": master})
	}
}

func newMetrics() *metrics {
	const ns, sub = "vipctl", "care"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "master_up",
			Help: "1 when the master is healthy (state up), 0 otherwise."}, []string{"master"}),
		membership: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "master_membership",
			Help: "1 for the master's current membership in the IPVS service (in-service, draining, removed)."}, []string{"master", "membership"}),
		probeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "probe_duration_seconds",
			Help:    "Duration of health probes, by master and result (success, failure).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"master", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "state_transitions_total",
			Help: "Health state transitions of masters."}, []string{"master", "from", "to"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reconcile_actions_total",
			Help: "Changes made to the kernel, by operation and kind (virtual server, real server, interface, address, route)."}, []string{"op", "kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reconcile_errors_total",
			Help: "Failed reconcile steps, by stage (get, apply, vip, close, watch)."}, []string{"stage"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reconciles_total",
			Help: "Reconcile passes, by trigger (start, probe, resync, interval, event)."}, []string{"trigger"}),
		connsReset: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connections_reset_total",
			Help: "Established connections reset when their real server was taken out of service."}, []string{"master"}),
		sentinel: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sentinel_closed_total",
			Help: "Idle sentinel connections the master closed (each triggers an immediate probe)."}, []string{"master"}),
		sentinelHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sentinel_held",
			Help: "1 while the idle sentinel connection to the master is held (a kill is then noticed at once), 0 otherwise."}, []string{"master"}),
		heldDown: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "held_down_seconds",
			Help: "Seconds until a healthy master that the flap hold-down keeps out of service may come back (earlier if fewer than a majority of the masters serve); 0 when not held down."}, []string{"master"}),
		failOpen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "fail_open",
			Help: "1 while every master is down and all are kept in service."}),
		unauthorized: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "probes_unauthorized",
			Help: "1 while every master that answers refuses the probes' credentials (HTTP 401 or 403): check them."}),
		masters: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "masters",
			Help: "Masters the watchdog manages: the --master seeds and those discovered from the API."}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "masters_forgotten_total",
			Help: "Discovered masters dropped after --forget-after absent from the API and unhealthy."}),
		discoveryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "discovery_errors_total",
			Help: "Failures of the discovery of masters, by stage (api: the listing or watch; state: reading or writing --state-file)."}, []string{"stage"}),
		lastReconcile: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_reconcile_timestamp_seconds",
			Help: "Unix time of the last successful reconcile."}),
	}
	m.reg.MustRegister(m.up, m.membership, m.probeDuration, m.transitions, m.actions, m.errors, m.reconciles,
		m.connsReset, m.sentinel, m.sentinelHeld, m.heldDown, m.failOpen, m.unauthorized, m.masters, m.forgotten, m.discoveryErrors, m.lastReconcile,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
