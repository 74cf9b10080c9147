package care

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/vipctl/vipctl/care/probe"
)

// fakeProber answers each master with a settable result and counts calls.
type fakeProber struct {
	mu      sync.Mutex
	results map[netip.AddrPort]probe.Result
	calls   map[netip.AddrPort]int
	// silent masters answer nothing: a probe runs for the given duration
	// (its timeout) and then fails, like one to a blackholed host.
	silent   map[netip.AddrPort]time.Duration
	running  map[netip.AddrPort]int
	parallel map[netip.AddrPort]int // the most probes of a master running at once
	// delay makes a master's probes take this long; the result is the one
	// set when the probe started.
	delay map[netip.AddrPort]time.Duration
	// linger is how long a probe takes to give up once its context ends.
	linger time.Duration
	// block, when set, holds every probe until it is closed.
	block chan struct{}
	fresh map[netip.AddrPort]int // probes made with ProbeFresh
}

// ProbeFresh counts a probe on a new connection and answers as Probe.
func (f *fakeProber) ProbeFresh(ctx context.Context, m netip.AddrPort) probe.Result {
	f.mu.Lock()
	if f.fresh == nil {
		f.fresh = map[netip.AddrPort]int{}
	}
	f.fresh[m]++
	f.mu.Unlock()
	return f.Probe(ctx, m)
}

func (f *fakeProber) freshCount(m netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fresh[m]
}

func newFakeProber() *fakeProber {
	return &fakeProber{results: map[netip.AddrPort]probe.Result{}, calls: map[netip.AddrPort]int{},
		silent: map[netip.AddrPort]time.Duration{}, running: map[netip.AddrPort]int{}, parallel: map[netip.AddrPort]int{},
		delay: map[netip.AddrPort]time.Duration{}}
}

// silence makes every probe of m run for timeout and fail.
func (f *fakeProber) silence(m netip.AddrPort, timeout time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent[m] = timeout
}

// maxParallel is the most probes of m that ran at the same time.
func (f *fakeProber) maxParallel(m netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.parallel[m]
}

func (f *fakeProber) set(m netip.AddrPort, r probe.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[m] = r
}

func (f *fakeProber) count(m netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

// runningNow is the number of probes of m running.
func (f *fakeProber) runningNow(m netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running[m]
}

func (f *fakeProber) Probe(ctx context.Context, m netip.AddrPort) probe.Result {
	f.mu.Lock()
	f.calls[m]++
	f.running[m]++
	f.parallel[m] = max(f.parallel[m], f.running[m])
	d, silent := f.silent[m]
	block, linger := f.block, f.linger
	f.mu.Unlock()
	defer func() {
		if ctx.Err() != nil && linger > 0 {
			time.Sleep(linger) // a slow give-up, for Run to wait for
		}
		f.mu.Lock()
		f.running[m]--
		f.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	if silent {
		select { // the probe's own duration: a silent host answers nothing
		case <-time.After(d):
		case <-ctx.Done():
		}
		return probe.Result{Reason: "timeout after " + d.String()}
	}
	f.mu.Lock()
	if d := f.delay[m]; d > 0 {
		r, ok := f.results[m]
		f.mu.Unlock()
		if !ok {
			r = healthy()
		}
		select { // a slow answer, decided when the probe started
		case <-time.After(d):
		case <-ctx.Done():
		}
		return r
	}
	defer f.mu.Unlock()
	r, ok := f.results[m]
	if !ok {
		return healthy()
	}
	return r
}

func healthy() probe.Result { return probe.Result{OK: true, Status: 200, Reason: "HTTP 200"} }
func refused() probe.Result {
	return probe.Result{Fast: true, Refused: true, Reason: "connection refused"}
}

// fakeEvents is an EventSource the test fires by hand.
type fakeEvents struct{ ch chan struct{} }

func (f *fakeEvents) Watch(ctx context.Context) (<-chan struct{}, error) { return f.ch, nil }

// fakeSentinel holds until released, then reports an established session.
type fakeSentinel struct {
	mu      sync.Mutex
	holding map[netip.AddrPort]chan struct{}
	started chan netip.AddrPort
}

func newFakeSentinel() *fakeSentinel {
	return &fakeSentinel{holding: map[netip.AddrPort]chan struct{}{}, started: make(chan netip.AddrPort, 16)}
}

func (f *fakeSentinel) Hold(ctx context.Context, m netip.AddrPort, idle func()) (bool, error) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.holding[m] = ch
	f.mu.Unlock()
	idle()
	f.started <- m
	select {
	case <-ch:
		return true, context.Canceled
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// drop ends the held connection to m, as a dying apiserver would.
func (f *fakeSentinel) drop(m netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.holding[m])
}
