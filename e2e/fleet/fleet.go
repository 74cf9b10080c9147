// Package fleet measures what a fleet of nodes costs one kube-apiserver:
// one real kube-apiserver and etcd (anonymous authentication off, client
// certificates, Node and RBAC authorization), and N simulated nodes in this
// process, each with its own client certificate, connections and TLS
// sessions, running one load at a time: vipctl's watchdog (the real
// care/probe code at the watchdog's defaults), the kubelet's node-Lease
// renewal, lvscare's health check, or a bare health-path GET. For each load
// and N it records the apiserver's CPU and RSS above idle and its open
// connections over a fixed window (see Run, and docs/benchmarks.md).
//
// Run expects to be alone in a network namespace where Addr is a local
// address: EnterNamespace re-executes the calling program in one.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vipctl/vipctl/e2e/realcp"
)

// Addr is where the apiserver listens, inside the fleet's namespace.
var Addr = netip.MustParseAddrPort("10.10.9.1:6443")

// Options configure Run.
type Options struct {
	// Dir is the working folder: PKI, etcd data, logs. Required.
	Dir      string
	Binaries realcp.Binaries
	// Sizes are the numbers of simulated nodes, each measured with every load.
	Sizes []int
	// Loads are the loads to measure (DefaultLoads when empty), one at a
	// time, in this order, for each size.
	Loads []string
	// Window is how long each measurement lasts (default 30 s).
	Window time.Duration
	// Warmup is how long a load runs before its window opens, and the
	// apiserver rests between loads (default 15 s: longer than every
	// load's period, so each is in its steady state).
	Warmup time.Duration
	// StartSpreads are the spans over which the nodes of a load start, each
	// at a random instant; 0 starts them all at once, as after a restart of
	// the whole fleet. Default: one second. The steady-state samples take
	// exactly one; with Startup, every load and size runs once per spread.
	StartSpreads []time.Duration
	// Startup, when not 0, measures instead of the steady state how each
	// load's requests and the apiserver's CPU spread in time over its
	// first Startup (see Startup and Result.Startups).
	Startup time.Duration
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Sample is one load at one size.
type Sample struct {
	Load  string
	Nodes int
	// Cores is the apiserver's CPU above idle, in cores.
	Cores float64
	// RSSMB is the apiserver's RSS at the window's end above its level
	// just before the load started, in MB.
	RSSMB float64
	// Conns are the apiserver's established client connections at the
	// window's end, less those it has idle (its own loopback client's).
	Conns int
	// ClientCores is this process's CPU: what the N nodes spend on the load.
	ClientCores float64
	// Requests and Errors are the load's requests (probes, lease updates,
	// GETs) in the window and how many of them failed.
	Requests, Errors int64
	// LastError is the last failure's message, for the log.
	LastError string
}

// PerNodeMS is the apiserver's CPU per node: ms of CPU per second.
func (s Sample) PerNodeMS() float64 { return s.Cores / float64(s.Nodes) * 1000 }

// Result is a run's measurements.
type Result struct {
	Start   time.Time
	Version string // kube-apiserver's
	Window  time.Duration
	// IdleCores and IdleRSSMB are the apiserver's CPU and RSS with no load.
	IdleCores, IdleRSSMB float64
	IdleConns            int
	Samples              []Sample
	// Startups are the start-up timelines of a run with Options.Startup.
	Startups []Startup
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		return errors.New("fleet: Options.Dir is empty")
	}
	if len(o.Sizes) == 0 {
		return errors.New("fleet: no sizes (Options.Sizes)")
	}
	for _, n := range o.Sizes {
		if n < 1 {
			return fmt.Errorf("fleet: size %d: want at least 1 node", n)
		}
	}
	if len(o.Loads) == 0 {
		o.Loads = DefaultLoads
	}
	for _, l := range o.Loads {
		if err := validLoad(l); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
	}
	if o.Window == 0 {
		o.Window = 30 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 15 * time.Second
	}
	if o.Window < time.Second || o.Warmup < 0 {
		return fmt.Errorf("fleet: window %s, warm-up %s: want a window of at least 1s", o.Window, o.Warmup)
	}
	if len(o.StartSpreads) == 0 {
		o.StartSpreads = []time.Duration{time.Second}
	}
	for _, d := range o.StartSpreads {
		if d < 0 {
			return fmt.Errorf("fleet: start spread %s: want 0 (all at once) or more", d)
		}
	}
	if o.Startup < 0 {
		return fmt.Errorf("fleet: start-up timeline %s: want 0 (none) or more", o.Startup)
	}
	if o.Startup == 0 && len(o.StartSpreads) != 1 {
		return fmt.Errorf("fleet: start spreads %v: the steady state takes one (several only with a start-up timeline)", o.StartSpreads)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Run starts the control plane, measures it idle and then under every
// load at every size, and stops it.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	srv, err := startServer(ctx, o.Dir, o.Binaries, Addr, o.Logf)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	res := &Result{Start: time.Now(), Version: o.Binaries.Version, Window: o.Window}
	maxN := slices.Max(o.Sizes)
	nodes := make([]*node, maxN)
	for i := range nodes {
		if nodes[i], err = srv.issueNode(fmt.Sprintf("fleet-%05d", i)); err != nil {
			return nil, err
		}
	}
	o.Logf("fleet: %d node certificates issued; letting the apiserver settle for %s", maxN, o.Warmup)
	if !sleep(ctx, o.Warmup) {
		return nil, ctx.Err()
	}
	idle, err := measure(ctx, srv, o.Window, nil)
	if err != nil {
		return nil, err
	}
	res.IdleCores, res.IdleRSSMB, res.IdleConns = idle.Cores, idle.RSSMB, idle.Conns
	o.Logf("fleet: idle: apiserver %.3f cores, RSS %.0f MB", res.IdleCores, res.IdleRSSMB)
	if o.Startup > 0 {
		for _, n := range o.Sizes {
			for _, l := range o.Loads {
				for _, d := range o.StartSpreads {
					st, err := runStartup(ctx, srv, o, res.IdleCores, l, nodes[:n], d)
					if err != nil {
						return nil, err
					}
					res.Startups = append(res.Startups, st)
				}
			}
		}
		return res, nil
	}
	for _, n := range o.Sizes {
		for _, l := range o.Loads {
			s, err := runLoad(ctx, srv, o, l, nodes[:n])
			if err != nil {
				return nil, err
			}
			s.Cores -= res.IdleCores
			s.Conns -= res.IdleConns
			res.Samples = append(res.Samples, s)
			o.Logf("fleet: %-10s N=%-5d apiserver %.3f cores above idle (%.3f ms/s per node), RSS +%.0f MB, %d connections; harness %.2f cores; %d requests, %d failed %s",
				l, n, s.Cores, s.PerNodeMS(), s.RSSMB, s.Conns, s.ClientCores, s.Requests, s.Errors, s.LastError)
		}
	}
	return res, nil
}

// runLoad runs load l on nodes for the warm-up and the window, measuring
// the window, then stops it and lets the apiserver rest.
func runLoad(ctx context.Context, srv *server, o Options, l string, nodes []*node) (Sample, error) {
	rss0, err := rssMB(srv.pid())
	if err != nil {
		return Sample{}, err
	}
	e := &env{target: Addr, srv: srv, conns: newConnTracker()}
	var m meter
	stopLoad := startLoad(ctx, e, l, nodes, o.StartSpreads[0], &m)
	if !sleep(ctx, o.Warmup) {
		stopLoad()
		return Sample{}, ctx.Err()
	}
	s, err := measure(ctx, srv, o.Window, &m)
	stopLoad()
	if err != nil {
		return Sample{}, err
	}
	s.Load, s.Nodes = l, len(nodes)
	s.RSSMB -= rss0
	sleep(ctx, o.Warmup)
	return s, ctx.Err()
}

// measure samples the apiserver's and this process's CPU over window, and
// the apiserver's RSS and connections at its end; m, when not nil, counts
// the load's requests.
func measure(ctx context.Context, srv *server, window time.Duration, m *meter) (Sample, error) {
	pid := srv.pid()
	var r0, e0 int64
	if m != nil {
		r0, e0 = m.requests.Load(), m.errors.Load()
	}
	a0, err := cpuSeconds(pid)
	if err != nil {
		return Sample{}, err
	}
	c0, err := cpuSeconds(os.Getpid())
	if err != nil {
		return Sample{}, err
	}
	t0 := time.Now()
	if !sleep(ctx, window) {
		return Sample{}, ctx.Err()
	}
	a1, err := cpuSeconds(pid)
	if err != nil {
		return Sample{}, err
	}
	c1, err := cpuSeconds(os.Getpid())
	if err != nil {
		return Sample{}, err
	}
	el := time.Since(t0).Seconds()
	s := Sample{Cores: (a1 - a0) / el, ClientCores: (c1 - c0) / el}
	if s.RSSMB, err = rssMB(pid); err != nil {
		return Sample{}, err
	}
	if s.Conns, err = established(Addr.Port()); err != nil {
		return Sample{}, err
	}
	if m != nil {
		s.Requests, s.Errors, s.LastError = m.requests.Load()-r0, m.errors.Load()-e0, m.last()
	}
	return s, nil
}
