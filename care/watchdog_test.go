package care

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

var (
	vip  = netip.MustParseAddrPort("10.103.97.2:6443")
	mA   = netip.MustParseAddrPort("192.0.2.11:6443")
	mB   = netip.MustParseAddrPort("192.0.2.12:6443")
	mC   = netip.MustParseAddrPort("192.0.2.13:6443")
	node = netip.MustParseAddr("192.0.2.20")
)

func testConfig(masters ...netip.AddrPort) Config {
	return Config{
		Service:      ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: ipvs.DefaultScheduler},
		Masters:      masters,
		VIP:          ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: ipvs.DefaultInterface, VIP: vip.Addr(), NodeIP: node},
		Health:       health.DefaultConfig(),
		Timeout:      500 * time.Millisecond,
		ResyncPeriod: careconfig.DefaultResyncPeriod,
	}
}

// rig is a watchdog on an in-memory kernel.
type rig struct {
	w      *Watchdog
	mem    *ipvstest.Memory
	plumb  *ipvstest.MemoryPlumbing
	prober *fakeProber
	logs   *observer.ObservedLogs
}

func newRig(t *testing.T, cfg Config, mod func(*Deps)) *rig {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	r := &rig{mem: ipvstest.NewMemory(), plumb: ipvstest.NewMemoryPlumbing(), prober: newFakeProber(), logs: logs}
	d := Deps{Dataplane: r.mem, Plumbing: r.plumb, Closer: r.plumb, Prober: r.prober, Log: zap.New(core),
		Rand: func() float64 { return 0.5 }}
	if mod != nil {
		mod(&d)
	}
	w, err := New(cfg, d)
	require.NoError(t, err)
	r.w = w
	return r
}

// run runs the loop until the test ends.
func (r *rig) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	require.Eventually(t, r.w.ready.Load, 5*time.Second, time.Millisecond, "first reconcile")
}

// weights returns the kernel's weights by real server; nil without service.
func (r *rig) weights() map[netip.AddrPort]int {
	st, err := r.mem.Get(context.Background(), vip)
	if err != nil {
		return nil
	}
	w := map[netip.AddrPort]int{}
	for _, rs := range st.RealServers {
		w[rs.Addr] = rs.Weight
	}
	return w
}

func (r *rig) ops() int {
	n := 0
	for _, op := range []string{"add", "update", "delete"} {
		for _, k := range []string{"virtual server", "real server"} {
			n += r.mem.Ops(op + " " + k)
		}
	}
	return n
}

// seed puts a correct service in the kernel, as a previous run left it.
func (r *rig) seed(t *testing.T, cfg Config, weights map[netip.AddrPort]int) {
	t.Helper()
	d := ipvs.Desired{Service: cfg.Service}
	for _, m := range cfg.Masters {
		if w, ok := weights[m]; ok {
			d.RealServers = append(d.RealServers, ipvs.RealServer{Addr: m, Weight: w})
		}
	}
	_, err := r.mem.Apply(context.Background(), d)
	require.NoError(t, err)
	_, err = r.plumb.EnsureVIP(context.Background(), cfg.VIP)
	require.NoError(t, err)
}

func TestOnceCreatesServiceWithHealthyMasters(t *testing.T) {
	cfg := testConfig(mA, mB, mC)
	r := newRig(t, cfg, nil)
	r.prober.set(mB, refused())
	require.NoError(t, r.w.Once(context.Background()))
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mC: 1}, r.weights(), "a master down at the first probe is not added")
	assert.True(t, r.plumb.Has(cfg.VIP), "the VIP plumbing is in place")
	assert.True(t, r.w.Status().Ready)
	for _, m := range cfg.Masters {
		assert.Equal(t, 1, r.prober.count(m), "one probe round")
	}
}

func TestOnceAllDownFailsOpen(t *testing.T) {
	r := newRig(t, testConfig(mA, mB), nil)
	r.prober.set(mA, refused())
	r.prober.set(mB, refused())
	require.NoError(t, r.w.Once(context.Background()))
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, r.weights(), "never an empty service")
	assert.True(t, r.w.Status().FailOpen)
}

func TestRestartAdoptsKernelWithoutChanges(t *testing.T) {
	for name, tc := range map[string]struct {
		kernel map[netip.AddrPort]int
		down   []netip.AddrPort
	}{
		"all healthy":                 {map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, nil},
		"one out, still out":          {map[netip.AddrPort]int{mA: 1, mB: 1}, []netip.AddrPort{mC}},
		"fail-open, all still down":   {map[netip.AddrPort]int{mA: 1, mB: 1, mC: 1}, []netip.AddrPort{mA, mB, mC}},
		"one draining, still refused": {map[netip.AddrPort]int{mA: 1, mB: 1, mC: 0}, []netip.AddrPort{mC}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(mA, mB, mC)
			cfg.ResyncPeriod = 10 * time.Millisecond
			cfg.Health.Interval = 100 * time.Millisecond
			cfg.Timeout = 50 * time.Millisecond
			r := newRig(t, cfg, nil)
			r.seed(t, cfg, tc.kernel)
			// Connections keep the draining master from being deleted.
			r.mem.SetConns(vip, mC, 5, 0)
			before := r.ops()
			for _, m := range tc.down {
				r.prober.set(m, refused())
			}
			r.run(t)
			// Let it probe, retry and resync many times.
			require.Eventually(t, func() bool { return r.prober.count(mA) >= 4 }, 5*time.Second, time.Millisecond)
			assert.Equal(t, before, r.ops(), "a restart changes nothing that is right")
			assert.Equal(t, tc.kernel, r.weights())
			for _, m := range cfg.Masters {
				assert.Zero(t, r.plumb.CloseCalls(m), "no connection is reset at a restart")
			}
			assert.Empty(t, r.logs.FilterMessage("reconcile action").All())
		})
	}
}

func TestFlushIsRepaired(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.ResyncPeriod = 10 * time.Millisecond
	cfg.Health.Interval = time.Hour // only the resync poll can repair it
	cfg.Timeout = time.Second
	r := newRig(t, cfg, nil)
	r.run(t)
	require.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, r.weights())
	r.mem.Flush() // ipvsadm -C: no netlink event
	start := time.Now()
	require.Eventually(t, func() bool { return len(r.weights()) == 2 }, 5*time.Second, time.Millisecond)
	t.Logf("flush repaired in %s (resync period %s)", time.Since(start), cfg.ResyncPeriod)
	assert.Equal(t, 2, r.mem.Ops("add virtual server"))
	entries := r.logs.FilterMessage("reconcile action").FilterField(zap.String("trigger", "resync")).All()
	require.NotEmpty(t, entries, "the repair is logged with its trigger")
	assert.Equal(t, "add", entries[0].ContextMap()["op"])
}

// The frequent poll asks only whether the service exists with the right
// scheduler; the whole service is read only when it does not.
func TestResyncPollReadsOnlyPresence(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.ResyncPeriod = 10 * time.Millisecond
	cfg.Health.Interval = time.Hour // no interval reconcile during the test
	cfg.Timeout = time.Second
	r := newRig(t, cfg, nil)
	r.run(t)
	require.Eventually(t, func() bool { return r.mem.Ops("present") >= 1 }, 5*time.Second, time.Millisecond)
	gets, presents := r.mem.Ops("get"), r.mem.Ops("present")
	require.Eventually(t, func() bool { return r.mem.Ops("present") >= presents+10 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, gets, r.mem.Ops("get"), "a right service is not read in full")

	// A scheduler changed behind vipctl's back is noticed by the poll.
	_, err := r.mem.Apply(context.Background(), ipvs.Desired{
		Service:     ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: "wrr"},
		RealServers: []ipvs.RealServer{{Addr: mA, Weight: 1}, {Addr: mB, Weight: 1}},
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := r.mem.Get(context.Background(), vip)
		return err == nil && st.Service.Scheduler == cfg.Service.Scheduler
	}, 5*time.Second, time.Millisecond)
}

func TestMasterDownDrainsThenDeletes(t *testing.T) {
	cfg := testConfig(mA, mB)
	r := newRig(t, cfg, func(d *Deps) {})
	r.plumb.Conns = func(_, rs netip.AddrPort) int { return 7 }
	ctx := context.Background()
	require.NoError(t, r.w.Once(ctx))
	r.mem.SetConns(vip, mA, 3, 1)

	r.w.observe(mA, refused())
	assert.Equal(t, cfg.Health.FastRetry, r.w.masters[mA].due.Sub(r.w.clock.Now()).Round(time.Millisecond), "re-probed at once")
	require.True(t, r.w.observe(mA, refused()), "fall 2 reached")
	require.NoError(t, r.w.reconcile(ctx, "probe", false))
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, r.weights(), "weight 0 first")
	assert.Equal(t, 1, r.plumb.CloseCalls(mA), "its connections are reset at once")
	assert.Equal(t, 7, r.plumb.Closed(mA))

	require.NoError(t, r.w.reconcile(ctx, "resync", false))
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, r.weights(), "kept while it has active connections")
	assert.Equal(t, 1, r.plumb.CloseCalls(mA), "reset once")

	r.mem.SetConns(vip, mA, 0, 2)
	require.NoError(t, r.w.reconcile(ctx, "resync", false))
	assert.Equal(t, map[netip.AddrPort]int{mB: 1}, r.weights(), "deleted once drained")

	// Back after rise successes.
	r.w.observe(mA, healthy())
	r.w.observe(mA, healthy())
	require.NoError(t, r.w.reconcile(ctx, "probe", false))
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 1}, r.weights())

	var actions []string
	for _, e := range r.logs.FilterMessage("reconcile action").All() {
		m := e.ContextMap()
		actions = append(actions, m["op"].(string)+" "+m["kind"].(string)+" "+m["target"].(string))
		assert.False(t, e.Time.IsZero(), "timestamped")
	}
	assert.Equal(t, []string{
		"add interface vipctl0",
		"add virtual server 10.103.97.2:6443",
		"add real server 10.103.97.2:6443 -> 192.0.2.11:6443",
		"add real server 10.103.97.2:6443 -> 192.0.2.12:6443",
		"update real server 10.103.97.2:6443 -> 192.0.2.11:6443",
		"reset connections 10.103.97.2:6443 -> 192.0.2.11:6443",
		"delete real server 10.103.97.2:6443 -> 192.0.2.11:6443",
		"add real server 10.103.97.2:6443 -> 192.0.2.11:6443",
	}, actions, "every kernel change is logged, in order")
	assert.Len(t, r.logs.FilterMessage("master down").All(), 1)
}

func TestApplyFailureIsRetriedAndConnsResetAfter(t *testing.T) {
	cfg := testConfig(mA, mB)
	r := newRig(t, cfg, nil)
	ctx := context.Background()
	require.NoError(t, r.w.Once(ctx))
	r.mem.SetConns(vip, mA, 3, 0)
	r.w.observe(mA, refused())
	r.w.observe(mA, refused())
	r.mem.FailNext(errors.New("netlink: device busy"))
	err := r.w.reconcile(ctx, "probe", false)
	require.ErrorContains(t, err, "device busy")
	assert.Contains(t, r.w.Status().LastError, "device busy")
	assert.Zero(t, r.plumb.CloseCalls(mA), "no reset before weight 0 is in place")
	require.NoError(t, r.w.reconcile(ctx, "resync", false))
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, r.weights())
	assert.Equal(t, 1, r.plumb.CloseCalls(mA))
	assert.Empty(t, r.w.Status().LastError)
}

// A killed master is out after --fall probes spaced by the fast retry, not
// by the interval: with an interval of an hour, only the fast retry can take
// it out within the test.
func TestKilledMasterRemovedQuickly(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = time.Hour // no scheduled probe during the test
	cfg.Timeout = 100 * time.Millisecond
	cfg.Health.FastRetry = 20 * time.Millisecond
	cfg.ResyncPeriod = 10 * time.Millisecond
	r := newRig(t, cfg, nil)
	r.run(t)
	before := r.prober.count(mA)
	// Killed: its connections are reset. The sentinel notices (a reset is
	// not conclusive, unlike a refused connection), and a probe follows.
	r.prober.set(mA, probe.Result{Fast: true, Reason: "connection reset by peer"})
	r.w.triggers <- mA
	require.Eventually(t, func() bool { w, ok := r.weights()[mA]; return ok && w == 0 }, 5*time.Second, time.Millisecond,
		"out without waiting for the interval")
	assert.Equal(t, before+cfg.Health.Fall, r.prober.count(mA), "out after --fall probes: the triggered one, then fast retries")
	// The reset follows the weight's change in the same reconcile: the
	// weight may be seen first.
	require.Eventually(t, func() bool { return r.plumb.CloseCalls(mA) > 0 }, 5*time.Second, time.Millisecond, "its connections are reset")
	assert.Equal(t, 1, r.plumb.CloseCalls(mA), "reset once")
	assert.Equal(t, map[netip.AddrPort]int{mA: 0, mB: 1}, r.weights(), "the other master is untouched")
}

// A master in service whose probe runs past half the timeout gets a second,
// hedging probe: a silent (blackholed) master's fall confirmations overlap.
// A master that answers promptly is never hedged.
func TestSilentMasterIsHedged(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = 200 * time.Millisecond
	cfg.Timeout = 150 * time.Millisecond
	cfg.Health.FastRetry = 20 * time.Millisecond
	cfg.ResyncPeriod = 10 * time.Millisecond
	r := newRig(t, cfg, nil)
	r.run(t)
	r.prober.silence(mA, cfg.Timeout)
	require.Eventually(t, func() bool { return r.weights()[mA] == 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 2, r.prober.maxParallel(mA), "a hedge probe ran alongside the slow one")
	assert.Equal(t, 1, r.prober.maxParallel(mB), "the healthy master was never hedged")
}

// sentinelRig runs a watchdog whose only probes are the first round and
// those the sentinel triggers (and their fast retries), once both sentinel
// connections are held.
func sentinelRig(t *testing.T) (*rig, *fakeSentinel) {
	t.Helper()
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = time.Hour // no scheduled probe during the test
	cfg.Timeout = time.Second
	cfg.Health.FastRetry = 10 * time.Millisecond
	s := newFakeSentinel()
	r := newRig(t, cfg, func(d *Deps) { d.Sentinel = s })
	r.run(t)
	held := map[netip.AddrPort]bool{}
	for len(held) < 2 {
		select {
		case m := <-s.started:
			held[m] = true
		case <-time.After(5 * time.Second):
			t.Fatal("sentinel connections not opened")
		}
	}
	require.Equal(t, 1, r.prober.count(mA), "only the first round before")
	return r, s
}

// A master that closes the sentinel connection and then refuses a new one
// has no apiserver any more: that one refused probe takes it out.
func TestSentinelCloseThenRefusedIsConclusive(t *testing.T) {
	r, s := sentinelRig(t)
	r.prober.set(mA, refused())
	s.drop(mA) // the apiserver died: its kernel closed the connection
	require.Eventually(t, func() bool { return r.weights()[mA] == 0 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 2, r.prober.count(mA), "out after the one probe the sentinel triggered")
	down := r.logs.FilterMessage("master down").All()
	require.Len(t, down, 1)
	assert.Contains(t, down[0].ContextMap()["reason"], "after the master closed the sentinel connection")
}

// Anything short of a refused connection still needs fall failures.
func TestSentinelCloseThenTimeoutNeedsFall(t *testing.T) {
	r, s := sentinelRig(t)
	r.prober.set(mA, probe.Result{Reason: "timeout after 1s"})
	s.drop(mA)
	require.Eventually(t, func() bool { return r.prober.count(mA) >= 2 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return r.weights()[mA] == 0 }, 5*time.Second, time.Millisecond)
	assert.GreaterOrEqual(t, r.prober.count(mA), 3, "fall 2: the triggered probe and a retry")
}

// A sentinel connection closed by a live master (its idle timeout) makes
// a later refused probe no more conclusive than any other.
func TestSentinelCloseAnsweredIsForgotten(t *testing.T) {
	r := newRig(t, testConfig(mA, mB), nil)
	require.NoError(t, r.w.Once(context.Background()))
	phase := func() health.Phase { return r.w.tracker.Snapshot()[0].Phase }

	r.w.masters[mA].closed = true // the sentinel connection ended
	r.w.observe(mA, healthy())
	r.w.observe(mA, refused())
	assert.Equal(t, health.Up, phase(), "it answered after the close: one refused probe is not enough")

	r.w.observe(mA, healthy())
	r.w.masters[mA].closed = true
	r.w.observe(mA, refused())
	assert.Equal(t, health.Down, phase(), "closed, then refused: out at once")
}

func TestEventReassertsPlumbing(t *testing.T) {
	cfg := testConfig(mA)
	cfg.Health.Interval = time.Hour
	cfg.Timeout = time.Second
	cfg.ResyncPeriod = time.Hour
	ev := &fakeEvents{ch: make(chan struct{}, 1)}
	r := newRig(t, cfg, func(d *Deps) { d.Events = ev })
	r.run(t)
	require.True(t, r.plumb.Has(cfg.VIP))
	r.plumb.Drop(cfg.VIP.VIP) // someone deleted the interface
	ev.ch <- struct{}{}
	require.Eventually(t, func() bool { return r.plumb.Has(cfg.VIP) }, 5*time.Second, time.Millisecond)
	assert.NotEmpty(t, r.logs.FilterField(zap.String("trigger", "event")).All())
}

func TestStatusAndEndpoints(t *testing.T) {
	cfg := testConfig(mA, mB)
	clock := testingclock.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	r := newRig(t, cfg, func(d *Deps) { d.Clock = clock })
	srv := httptest.NewServer(r.w.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not ready before the first reconcile")
	code, _ = get("/healthz")
	assert.Equal(t, http.StatusOK, code)

	r.prober.set(mB, probe403())
	require.NoError(t, r.w.Once(context.Background()))
	code, _ = get("/readyz")
	assert.Equal(t, http.StatusOK, code)

	code, body := get("/status")
	require.Equal(t, http.StatusOK, code)
	var st Status
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	assert.Equal(t, vip, st.VIP)
	assert.True(t, st.Ready)
	require.Len(t, st.Masters, 2)
	assert.Equal(t, health.Up, st.Masters[0].Phase)
	assert.Equal(t, health.InService, st.Masters[0].Membership)
	assert.Equal(t, 1, st.Masters[0].Weight)
	require.NotNil(t, st.Masters[0].Kernel)
	assert.Equal(t, 1, st.Masters[0].Kernel.Weight)
	assert.Equal(t, health.Down, st.Masters[1].Phase)
	require.NotNil(t, st.Masters[1].LastProbe)
	assert.Equal(t, 403, st.Masters[1].LastProbe.Status)
	assert.Contains(t, st.Masters[1].LastProbe.Reason, "403")
	assert.Equal(t, 1, st.Masters[1].Failures)
	assert.Nil(t, st.Masters[1].Kernel)

	fetched, err := FetchStatus(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	assert.Equal(t, st.Masters[1].Address, fetched.Masters[1].Address)

	code, body = get("/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`vipctl_care_master_up{master="192.0.2.11:6443"} 1`,
		`vipctl_care_master_up{master="192.0.2.12:6443"} 0`,
		`vipctl_care_fail_open 0`,
		`vipctl_care_probe_duration_seconds_count{master="192.0.2.12:6443",result="failure"} 1`,
		`vipctl_care_state_transitions_total{from="unknown",master="192.0.2.11:6443",to="up"} 1`,
		`vipctl_care_reconcile_actions_total{kind="real server",op="add"} 1`,
		`vipctl_care_master_membership{master="192.0.2.11:6443",membership="in-service"} 1`,
		`vipctl_care_reconciles_total{trigger="once"} 1`,
		`go_goroutines`,
	} {
		assert.Contains(t, body, want)
	}

	// The loop is not running: /healthz notices once time moves on.
	clock.Step(time.Minute)
	code, body = get("/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "loop stuck")
}

func probe403() probe.Result {
	return probe.Result{Fast: true, Status: 403, Reason: "HTTP 403 (want 200)"}
}

func TestFetchStatusErrors(t *testing.T) {
	_, err := FetchStatus(context.Background(), "127.0.0.1:1")
	assert.ErrorContains(t, err, "127.0.0.1:1")
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err = FetchStatus(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	assert.ErrorContains(t, err, "HTTP 404")
}

func TestServeFailsOnBusyAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, Serve(ctx, "127.0.0.1:0", http.NotFoundHandler(), zap.NewNop()))
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	err := Serve(ctx, strings.TrimPrefix(srv.URL, "http://"), http.NotFoundHandler(), zap.NewNop())
	assert.ErrorContains(t, err, "--metrics-addr")
}

func TestConfigValidate(t *testing.T) {
	good := testConfig(mA, mB)
	require.NoError(t, good.Validate())
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Masters = nil }, "--master: at least one"},
		{func(c *Config) { c.Masters = []netip.AddrPort{mA, mA} }, "--master 192.0.2.11:6443: listed twice"},
		{func(c *Config) { c.Masters = []netip.AddrPort{netip.AddrPortFrom(vip.Addr(), 6443)} }, "same address as --vip"},
		{func(c *Config) { c.Masters = []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:6443")} }, "address family"},
		{func(c *Config) { c.Masters = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:6443")} }, "cannot be a real server"},
		{func(c *Config) { c.Service.VIP = netip.MustParseAddrPort("127.0.0.1:6443") }, "--vip"},
		{func(c *Config) { c.Service.Scheduler = "fifo" }, `--scheduler "fifo"`},
		{func(c *Config) { c.Health.Rise = 0 }, "--rise 0"},
		{func(c *Config) { c.Health.Fall = 0 }, "--fall 0"},
		{func(c *Config) { c.Health.Interval = 0 }, "--interval 0s"},
		{func(c *Config) { c.Timeout = 0 }, "--timeout 0s"},
		{func(c *Config) { c.Timeout = time.Second }, "--timeout 1s: must be shorter than --interval 1s"},
		{func(c *Config) { c.ResyncPeriod = time.Millisecond }, "--resync-period 1ms"},
		{func(c *Config) { c.Health.DrainTimeout = -time.Second }, "--drain-timeout"},
		{func(c *Config) { c.Health.HoldDown = -time.Second }, "--hold-down"},
		{func(c *Config) { c.Health.MaxHoldDown = time.Second }, "--max-hold-down 1s"},
		{func(c *Config) { c.VIP.Mode = "tunnel" }, `--mode "tunnel"`},
		{func(c *Config) { c.VIP.Interface = "a-very-long-interface-name" }, "--interface"},
		{func(c *Config) { c.VIP.NodeIP = netip.Addr{} }, "--node-ip"},
		{func(c *Config) { c.VIP.NodeIP = vip.Addr() }, "--node-ip 10.103.97.2: equal to --vip"},
	} {
		c := good
		c.Masters = append([]netip.AddrPort(nil), good.Masters...)
		tc.mut(&c)
		err := c.Validate()
		if assert.Error(t, err, tc.want) {
			assert.Contains(t, err.Error(), tc.want)
		}
		_, err = New(c, Deps{Dataplane: ipvstest.NewMemory(), Prober: newFakeProber()})
		assert.Error(t, err, "New refuses it too")
	}
	route := good
	route.VIP.Mode, route.VIP.Interface = ipvs.ModeRoute, ""
	assert.NoError(t, route.Validate(), "route mode needs no interface")
}

// benchWatchdog is a watchdog with three healthy masters, once reconciled
// against an in-memory kernel.
func benchWatchdog(b *testing.B) (*Watchdog, *ipvstest.Memory) {
	b.Helper()
	mem := ipvstest.NewMemory()
	w, err := New(testConfig(mA, mB, mC), Deps{Dataplane: mem, Plumbing: ipvstest.NewMemoryPlumbing(), Prober: newFakeProber()})
	require.NoError(b, err)
	require.NoError(b, w.Once(context.Background()))
	b.ReportAllocs()
	return w, mem
}

func BenchmarkReconcileSteady(b *testing.B) {
	w, _ := benchWatchdog(b)
	ctx := context.Background()
	for b.Loop() {
		if err := w.reconcile(ctx, "resync", false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReconcileRepairFlush(b *testing.B) {
	w, mem := benchWatchdog(b)
	ctx := context.Background()
	for b.Loop() {
		mem.Flush()
		if err := w.reconcile(ctx, "resync", false); err != nil {
			b.Fatal(err)
		}
	}
}

// A master taken out for an unhealthy status keeps its connections while it
// still answers its liveness check (an apiserver in its shutdown delay); a
// master that is not live, or that does not answer at all, has them reset.
func TestConnectionResetAsksLivenessFirst(t *testing.T) {
	unhealthy := probe.Result{Fast: true, Status: 500, Reason: "HTTP 500 (want 200)"}
	for _, tc := range []struct {
		name      string
		result    probe.Result
		live      bool
		wantReset int
		wantAsked int
	}{
		{"shutting down: readyz 500, livez 200", unhealthy, true, 0, 1},
		{"etcd lost: readyz 500, livez 500", unhealthy, false, 1, 1},
		{"killed: refused, no liveness probe", refused(), true, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(mA, mB)
			cfg.Health.Interval = 100 * time.Millisecond
			cfg.Health.FastRetry = 10 * time.Millisecond
			cfg.Timeout = 50 * time.Millisecond
			cfg.ResyncPeriod = 10 * time.Millisecond
			live := newFakeProber()
			if !tc.live {
				live.set(mA, unhealthy)
			}
			r := newRig(t, cfg, func(d *Deps) { d.Liveness = live })
			r.run(t)
			r.prober.set(mA, tc.result)
			require.Eventually(t, func() bool { _, ok := r.weights()[mA]; return !ok }, 5*time.Second, time.Millisecond, "drained and deleted")
			assert.Equal(t, tc.wantReset, r.plumb.CloseCalls(mA))
			assert.Equal(t, tc.wantAsked, live.count(mA))
		})
	}
}

// A sentinel that fires while a probe of that master is running must not be
// lost: the running probe may have been answered just before the master
// died. The master is probed again as soon as that probe returns.
func TestSentinelDuringARunningProbeIsNotLost(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = time.Hour // no scheduled probe during the test
	cfg.Timeout = time.Second
	cfg.Health.FastRetry = 10 * time.Millisecond
	r := newRig(t, cfg, nil)
	r.run(t)
	r.prober.mu.Lock()
	r.prober.delay[mA] = 300 * time.Millisecond
	r.prober.mu.Unlock()
	before := r.prober.count(mA)
	r.w.triggers <- mA // a probe starts, healthy as of now
	require.Eventually(t, func() bool { return r.prober.count(mA) == before+1 }, 5*time.Second, time.Millisecond)
	r.prober.set(mA, refused()) // the master dies while that probe runs
	r.w.triggers <- mA          // and the sentinel notices
	require.Eventually(t, func() bool { return r.weights()[mA] == 0 }, 5*time.Second, time.Millisecond,
		"taken out without waiting for a scheduled probe")
}

// Run returns only once the goroutines it started have: a probe still
// running when ctx ends (here, one that takes a moment to give up) is
// waited for.
func TestRunWaitsForItsProbes(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = 100 * time.Millisecond
	cfg.Timeout = 50 * time.Millisecond
	cfg.Health.FastRetry = 10 * time.Millisecond
	r := newRig(t, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.w.Run(ctx) }()
	require.Eventually(t, r.w.ready.Load, 5*time.Second, time.Millisecond, "first reconcile")
	// The next probes run until ctx ends, and take a moment to give up.
	r.prober.mu.Lock()
	r.prober.delay[mA] = time.Hour
	r.prober.linger = 50 * time.Millisecond
	r.prober.mu.Unlock()
	require.Eventually(t, func() bool { return r.prober.runningNow(mA) > 0 }, 5*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	assert.Zero(t, r.prober.runningNow(mA), "no probe outlives Run")
}

// The liveness check asked before resetting a master's connections runs
// beside the loop: while it waits, the resync poll still repairs a flushed
// table.
func TestLivenessCheckDoesNotStallTheLoop(t *testing.T) {
	cfg := testConfig(mA, mB)
	cfg.Health.Interval = 100 * time.Millisecond
	cfg.Health.FastRetry = 10 * time.Millisecond
	cfg.Timeout = 50 * time.Millisecond
	cfg.ResyncPeriod = 10 * time.Millisecond
	live := newFakeProber()
	release := make(chan struct{})
	live.block = release // the liveness check answers when released
	r := newRig(t, cfg, func(d *Deps) { d.Liveness = live })
	r.run(t)
	r.prober.set(mA, probe.Result{Fast: true, Status: 500, Reason: "HTTP 500 (want 200)"})
	require.Eventually(t, func() bool { return live.count(mA) == 1 }, 5*time.Second, time.Millisecond, "liveness asked")
	r.mem.Flush()
	require.Nil(t, r.weights())
	require.Eventually(t, func() bool { return r.weights()[mB] == 1 }, 5*time.Second, time.Millisecond,
		"the flush is repaired while the liveness check runs")
	assert.Equal(t, 1, live.count(mA), "asked once")
	assert.Zero(t, r.plumb.CloseCalls(mA), "no reset before the answer")
	close(release) // live: its connections are kept
	require.Eventually(t, func() bool {
		return len(r.logs.FilterMessage("reconcile action").FilterField(zap.String("op", "keep")).All()) == 1
	}, 5*time.Second, time.Millisecond)
	assert.Zero(t, r.plumb.CloseCalls(mA))
}

func TestSchedule(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	const hedgeAfter, idle = 250 * time.Millisecond, time.Second
	ms := time.Millisecond
	for _, tc := range []struct {
		name          string
		slots         []slot
		launch, hedge []int
		wait          time.Duration
	}{
		{"nothing due: wait for the earliest", []slot{{due: t0.Add(300 * ms)}, {due: t0.Add(100 * ms)}}, nil, nil, 100 * ms},
		{"due now or past", []slot{{due: t0}, {due: t0.Add(-time.Second)}, {due: t0.Add(ms)}}, []int{0, 1}, nil, 0},
		{"running: not launched again", []slot{{inFlight: 1, started: t0, due: t0.Add(-ms)}}, nil, nil, idle},
		{"in service, slow: hedged", []slot{{inFlight: 1, inService: true, started: t0.Add(-hedgeAfter)}}, nil, []int{0}, 0},
		{"in service, not slow yet", []slot{{inFlight: 1, inService: true, started: t0.Add(-100 * ms)}}, nil, nil, 150 * ms},
		{"hedged once only", []slot{{inFlight: 1, hedged: true, inService: true, started: t0.Add(-time.Second)}}, nil, nil, idle},
		{"two running", []slot{{inFlight: 2, inService: true, started: t0.Add(-time.Second)}}, nil, nil, idle},
		{"out of service: never hedged", []slot{{inFlight: 1, started: t0.Add(-time.Second)}, {due: t0.Add(400 * ms)}}, nil, nil, 400 * ms},
	} {
		launch, hedge, wait := schedule(t0, tc.slots, hedgeAfter, idle)
		assert.Equal(t, tc.launch, launch, tc.name)
		assert.Equal(t, tc.hedge, hedge, tc.name)
		assert.Equal(t, tc.wait, wait, tc.name)
	}
}

func TestUnauthorizedIsWhenEveryAnswerRefusesTheCredentials(t *testing.T) {
	for _, tc := range []struct {
		statuses []int
		want     bool
	}{
		{[]int{401, 401, 401}, true},
		{[]int{403, 401, 0}, true}, // a master that does not answer does not count
		{[]int{401, 200, 401}, false},
		{[]int{401, 500}, false},
		{[]int{0, 0, 0}, false},
		{nil, false},
	} {
		assert.Equal(t, tc.want, unauthorized(tc.statuses), "%v", tc.statuses)
	}
}

func TestUnauthorizedProbesAreSaidLoudly(t *testing.T) {
	r := newRig(t, testConfig(mA, mB, mC), nil)
	denied := probe.Result{Fast: true, Status: 401, Reason: "HTTP 401 (want 200)"}
	for _, m := range []netip.AddrPort{mA, mB} {
		r.prober.set(m, denied)
	}
	r.prober.set(mC, refused())
	require.NoError(t, r.w.Once(context.Background()))
	assert.True(t, r.w.Status().ProbesUnauthorized)
	assert.Equal(t, 1, r.logs.FilterMessageSnippet("probes unauthorized").Len())
	assert.Contains(t, metricsText(t, r.w), "vipctl_care_probes_unauthorized 1")

	r.prober.set(mA, healthy())
	require.NoError(t, r.w.Once(context.Background()))
	assert.False(t, r.w.Status().ProbesUnauthorized, "a master accepts them")
	assert.Equal(t, 1, r.logs.FilterMessage("probes authorized again").Len())
	assert.Contains(t, metricsText(t, r.w), "vipctl_care_probes_unauthorized 0")
}

// metricsText is what the watchdog's /metrics serves.
func metricsText(t *testing.T, w *Watchdog) string {
	t.Helper()
	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// A master that may be flapping is probed on new connections, as new
// clients connect; a steady one on the prober's kept connection.
func TestMayFlapMasterProbedOnNewConnections(t *testing.T) {
	cfg := testConfig(mA, mB)
	r := newRig(t, cfg, nil)
	ctx := context.Background()
	require.NoError(t, r.w.Once(ctx))
	probeOnce := func(m netip.AddrPort) {
		r.w.launch(ctx, m)
		res := <-r.w.results
		require.Equal(t, m, res.addr)
		r.w.masters[m].inFlight--
	}
	probeOnce(mB)
	assert.Zero(t, r.prober.freshCount(mB), "a steady master: the kept connection")
	r.w.observe(mA, refused())
	r.w.observe(mA, healthy())
	probeOnce(mA)
	assert.Equal(t, 1, r.prober.freshCount(mA), "a failure among its last probes: a new connection")
}

// Only a retransmission that made the exchange wait for the kernel's
// retransmission timer tells of a lossy link; a tail loss probe or a fast
// retransmit that cost nothing does not.
func TestRetransmitTimedOut(t *testing.T) {
	for _, tc := range []struct {
		rtx  uint32
		lat  time.Duration
		want bool
	}{
		{0, time.Second, false},
		{1, 40 * time.Millisecond, false},
		{2, 199 * time.Millisecond, false},
		{1, 200 * time.Millisecond, true},
		{2, 430 * time.Millisecond, true},
	} {
		assert.Equal(t, tc.want, retransmitTimedOut(probe.Result{OK: true, Retransmits: tc.rtx, Latency: tc.lat}), "%d retransmissions in %s", tc.rtx, tc.lat)
	}
}
