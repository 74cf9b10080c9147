package vmtests

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// The TestReal scenarios run against three real kube-apiservers (v1.34,
// sharing one etcd) that the host runs for the VM (e2e/realcp), with real
// clients on the node: kubectl in a loop and a kubelet-like client-go
// heartbeat and watch (lab.Traffic). They run only in the VM that the e2e
// package's TestRealControlPlane boots; TestVM skips them.

// realLab is the common start: the node, the watchdog, every master in.
func realLab(t *testing.T) *lab.Real {
	r := lab.NewReal(t)
	r.StartCare()
	r.WaitAllServing(30 * time.Second)
	return r
}

// conclude ends a scenario: it reports what the clients saw (rep), checks
// it against c, and checks that the kernel and the watchdog settle with
// every master in.
func conclude(t *testing.T, r *lab.Real, rep lab.Report, scenario string, c lab.Criteria) {
	t.Helper()
	rep.Record(t, scenario)
	rep.Check(t, c)
	r.CheckSettled(30 * time.Second)
}

// hold keeps a fault in place for d while the clients run: pacing of the
// scenario, not a wait for a condition.
func hold(d time.Duration) { time.Sleep(d) }

// envInt reads a positive count from the environment.
func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "%s=%q", name, s)
	require.Positive(t, n, "%s=%q", name, s)
	return n
}

// neverInBefore samples the kernel until stop is closed and reports
// whether m was ever given traffic meanwhile.
func neverInBefore(t *testing.T, m *lab.RealMaster, stop <-chan struct{}) <-chan bool {
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	res := make(chan bool, 1)
	go func() {
		defer rd.Close()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			if rs := rd.RealServers(); rs[m.Addr] > 0 {
				res <- false
				return
			}
			select {
			case <-stop:
				res <- true
				return
			case <-tk.C:
			}
		}
	}()
	return res
}

// TestRealKillRestart SIGKILLs a master and restarts it, round robin over
// the masters, VIPCTL_REAL_CYCLES times (default 10; `make bench` runs 50).
// A restarting apiserver answers 403, then 500, before 200: it must get no
// traffic before it is ready.
//
// The watchdog runs with --max-hold-down 10s: each master is killed every
// third cycle (~15-20 s apart) and each kill is meant as a fresh crash
// (recent falls halve every 10 s). With the default (30 s) the watchdog
// rightly treats a master that crashes every 20 s as flapping and doubles
// its hold-down with each crash while the other two serve;
// TestRealFlappingMaster covers that, TestRecoveryBench failures a minute
// apart.
func TestRealKillRestart(t *testing.T) {
	r := lab.NewReal(t)
	r.StartCare("--max-hold-down", "10s")
	r.WaitAllServing(30 * time.Second)
	cycles := envInt(t, "VIPCTL_REAL_CYCLES", 10)
	tr := r.StartTraffic()
	var worstOut, worstIn time.Duration
	for i := range cycles {
		m := r.Masters[i%len(r.Masters)]
		require.NoError(t, lab.Poll(30*time.Second, func() bool { return sentinelsHeld(t) == len(r.Masters) }), "sentinels held")
		t0 := tr.Fault()
		m.Kill()
		m.WaitOut(10 * time.Second)
		out := time.Since(t0)
		tr.Excuse(lab.Window{From: t0, To: time.Now(), Why: "kill -> out"})
		stop := make(chan struct{})
		early := neverInBefore(t, m, stop)
		t1 := time.Now()
		m.Start()
		m.WaitReady(2 * time.Minute)
		ready := time.Since(t1)
		close(stop)
		assert.True(t, <-early, "cycle %d: %s got traffic before its /readyz said 200", i, m.Name)
		m.WaitIn(30 * time.Second)
		in := time.Since(t1)
		lab.Record(t, "real_kill_to_out", out)
		lab.Record(t, "real_restart_to_ready", ready)
		lab.Record(t, "real_ready_to_in", in-ready)
		worstOut, worstIn = max(worstOut, out), max(worstIn, in)
	}
	rep := tr.Stop()
	t.Logf("%d cycles: kill -> out at worst %s, restart -> back in at worst %s", cycles, worstOut.Round(time.Millisecond), worstIn.Round(time.Millisecond))
	conclude(t, r, rep, "kill_restart", lab.Criteria{})
}

// TestRealGracefulShutdown sends SIGTERM to an apiserver started with
// --shutdown-delay-duration=5s: its /readyz fails at once while it keeps
// serving, so the watchdog takes it out before it stops. No request may
// fail except one in flight when the watchdog resets the connections to it
// (see below). VIPCTL_REAL_SIGTERM_CYCLES times (default 3), round robin.
func TestRealGracefulShutdown(t *testing.T) {
	r := realLab(t)
	cycles := envInt(t, "VIPCTL_REAL_SIGTERM_CYCLES", 3)
	for _, m := range r.Masters {
		m.Kill()
		m.StartWithShutdownDelay(5 * time.Second)
	}
	for _, m := range r.Masters {
		m.WaitReady(2 * time.Minute)
	}
	r.WaitAllServing(30 * time.Second)
	tr := r.StartTraffic()
	hold(2 * time.Second)
	for i := range cycles {
		m := r.Masters[i%len(r.Masters)]
		t0 := time.Now()
		m.Terminate()
		out := m.WaitOut(10 * time.Second)
		// The watchdog resets the node's connections to a master right
		// after it takes it out, even to one that still serves during its
		// shutdown delay: a request in flight on them then fails. Counted
		// in the report ("in an excused window"), not hidden.
		outAt := time.Now()
		tr.Excuse(lab.Window{From: outAt.Add(-50 * time.Millisecond), To: outAt.Add(300 * time.Millisecond), Why: "reset by the watchdog when it took the terminating master out"})
		m.WaitExit(30 * time.Second)
		exited := time.Since(t0)
		lab.Record(t, "real_sigterm_to_out", out)
		lab.Record(t, "real_sigterm_to_exit", exited)
		assert.Less(t, out, 5*time.Second, "out of service before the shutdown delay ends")
		m.StartWithShutdownDelay(5 * time.Second)
		m.WaitReady(2 * time.Minute)
		m.WaitIn(30 * time.Second)
		hold(time.Second)
	}
	rep := tr.Stop()
	conclude(t, r, rep, "sigterm", lab.Criteria{})
}

// TestRealEtcdLostBehindOneMaster takes one master's etcd away (the others
// keep it): its /readyz answers 500 and it must leave the service; it comes
// back when its etcd does.
func TestRealEtcdLostBehindOneMaster(t *testing.T) {
	r := realLab(t)
	faultThenRecover(t, r, []*lab.RealMaster{r.Masters[1]}, "etcd_lost", "etcd lost -> out",
		(*lab.RealMaster).EtcdDown, (*lab.RealMaster).EtcdUp, 2*time.Minute)
}

// TestRealBlackhole cuts a master's link (packets dropped, no RST, no
// ICMP): the watchdog's probes time out, it takes the master out and resets
// the node's connections to it, so the watch re-opens elsewhere at once.
// VIPCTL_REAL_BLACKHOLE_CYCLES times (default 1), round robin.
func TestRealBlackhole(t *testing.T) {
	r := lab.NewReal(t)
	r.StartCare("--max-hold-down", "10s")
	r.WaitAllServing(30 * time.Second)
	cycles := envInt(t, "VIPCTL_REAL_BLACKHOLE_CYCLES", 1)
	ms := make([]*lab.RealMaster, cycles)
	for i := range ms {
		ms[i] = r.Masters[(2+i)%len(r.Masters)]
	}
	faultThenRecover(t, r, ms, "blackhole", "link cut -> out",
		(*lab.RealMaster).LinkDown, (*lab.RealMaster).LinkUp, 30*time.Second)
}

// faultThenRecover runs the clients and, for each master of cycles in turn,
// injects fault, waits for the master to leave the service (the time
// between is an excused window), heals it and waits for it to come back
// within backWithin; then it checks the clients' report. It records
// real_NAME_to_out and real_NAME_back_to_in per cycle.
func faultThenRecover(t *testing.T, r *lab.Real, cycles []*lab.RealMaster, name, why string, fault, heal func(*lab.RealMaster), backWithin time.Duration) {
	t.Helper()
	tr := r.StartTraffic()
	hold(time.Second)
	for _, m := range cycles {
		t0 := tr.Fault()
		fault(m)
		out := m.WaitOut(15 * time.Second)
		tr.Excuse(lab.Window{From: t0, To: time.Now(), Why: why})
		lab.Record(t, "real_"+name+"_to_out", out)
		hold(3 * time.Second)
		t1 := time.Now()
		heal(m)
		m.WaitIn(backWithin)
		lab.Record(t, "real_"+name+"_back_to_in", time.Since(t1))
		hold(time.Second)
	}
	rep := tr.Stop()
	conclude(t, r, rep, name, lab.Criteria{})
}

// servingLog records when m enters and leaves the service.
type servingLog struct {
	mu    sync.Mutex
	times []time.Time
	state []bool
}

func (s *servingLog) watch(t *testing.T, m *lab.RealMaster, stop <-chan struct{}) <-chan struct{} {
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer rd.Close()
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			cur := rd.RealServers()[m.Addr] > 0
			s.mu.Lock()
			if n := len(s.state); n == 0 || s.state[n-1] != cur {
				s.times, s.state = append(s.times, time.Now()), append(s.state, cur)
			}
			s.mu.Unlock()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return done
}

// at reports whether m was in service at time x, and when it next left.
func (s *servingLog) at(x time.Time) (in bool, nextOut time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range s.times {
		if !t.After(x) {
			in = s.state[i]
			continue
		}
		if !s.state[i] {
			return in, t
		}
	}
	return in, time.Time{}
}

func (s *servingLog) transitions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times) - 1
}

// TestRealFlappingMaster flaps a master's link (0.5 s down, 0.5 s up) for
// 20 s. Hysteresis and the hold-down must keep it out after its second fall
// rather than flap the kernel, and the clients see failures only between a
// cut and the watchdog's reaction.
func TestRealFlappingMaster(t *testing.T) {
	r := realLab(t)
	m := r.Masters[1]
	tr := r.StartTraffic()
	var log servingLog
	stop := make(chan struct{})
	logDone := log.watch(t, m, stop)
	hold(time.Second)
	var faults []time.Time
	tk := time.NewTicker(500 * time.Millisecond)
	for i := range 40 {
		<-tk.C
		if i%2 == 0 {
			faults = append(faults, tr.Fault())
			m.LinkDown()
		} else {
			m.LinkUp()
		}
	}
	tk.Stop()
	m.LinkUp()
	flapEnd := time.Now()
	m.WaitIn(2 * time.Minute)
	lab.Record(t, "real_flap_end_to_in", time.Since(flapEnd))
	hold(time.Second)
	close(stop)
	<-logDone
	for _, f := range faults {
		if in, out := log.at(f); in && !out.IsZero() {
			tr.Excuse(lab.Window{From: f, To: out, Why: "link cut -> out"})
		}
	}
	rep := tr.Stop()
	t.Logf("%s's weight changed %d times during 20 s of flapping and its recovery", m.Name, log.transitions())
	assert.LessOrEqual(t, log.transitions(), 6, "the kernel must not follow the flapping")
	conclude(t, r, rep, "flapping", lab.Criteria{})
}

// TestRealAllDownThenOneBack kills every apiserver: the watchdog fails
// open (the service is never empty); when one comes back it alone serves,
// and the clients recover through it.
func TestRealAllDownThenOneBack(t *testing.T) {
	r := realLab(t)
	tr := r.StartTraffic()
	hold(time.Second)
	t0 := tr.Fault()
	for _, m := range r.Masters {
		m.Kill()
	}
	require.NoError(t, lab.Poll(10*time.Second, func() bool {
		st, err := lab.CareStatus()
		return err == nil && st["failOpen"] == true
	}), "the watchdog fails open")
	hold(3 * time.Second)
	back := r.Masters[0]
	t1 := time.Now()
	back.Start()
	back.WaitReady(2 * time.Minute)
	lab.WaitFor(t, 30*time.Second, "only "+back.Name+" serves", func(rs map[netip.AddrPort]int) bool {
		for _, m := range r.Masters {
			if (rs[m.Addr] > 0) != (m == back) {
				return false
			}
		}
		return true
	})
	lab.Record(t, "real_one_back_start_to_alone_in", time.Since(t1))
	tr.Excuse(lab.Window{From: t0, To: time.Now(), Why: "no master", NoMaster: true})
	hold(3 * time.Second)
	for _, m := range r.Masters[1:] {
		m.Start()
	}
	for _, m := range r.Masters[1:] {
		m.WaitReady(2 * time.Minute)
	}
	r.WaitAllServing(30 * time.Second)
	hold(time.Second)
	rep := tr.Stop()
	conclude(t, r, rep, "all_down_one_back", lab.Criteria{})
}

// TestRealIPVSFlush flushes the whole IPVS table VIPCTL_REAL_FLUSH_CYCLES
// times (default 10), once a second, as kube-proxy does when it starts in
// another mode, while the clients run.
func TestRealIPVSFlush(t *testing.T) {
	r := realLab(t)
	tr := r.StartTraffic()
	hold(time.Second)
	var worst time.Duration
	for range envInt(t, "VIPCTL_REAL_FLUSH_CYCLES", 10) {
		t0 := tr.Fault()
		lab.FlushIPVS(t)
		d := r.WaitAllServing(5 * time.Second)
		tr.Excuse(lab.Window{From: t0, To: time.Now(), Why: "flush -> restored"})
		lab.Record(t, "real_flush_to_restored", d)
		worst = max(worst, d)
		hold(time.Second)
	}
	rep := tr.Stop()
	t.Logf("flush -> restored at worst %s", worst.Round(time.Millisecond))
	conclude(t, r, rep, "ipvs_flush", lab.Criteria{AllowEmpty: true})
}

// statusOf returns the watchdog's /status entry of master a, nil when it
// does not list it.
func statusOf(t *testing.T, a netip.AddrPort) map[string]any {
	st, err := lab.CareStatus()
	if err != nil {
		return nil
	}
	ms, _ := st["masters"].([]any)
	for _, x := range ms {
		if m, _ := x.(map[string]any); m["address"] == a.String() {
			return m
		}
	}
	return nil
}

// TestRealMastersFromTheAPI runs the watchdog as a kubeadm node's: with
// the kubelet-shaped kubeconfig (a system:nodes certificate) and a state
// file, seeded with the three running masters. It proves, in order:
//
//   - discovery: a fourth apiserver started on the host is in the node's
//     IPVS table soon after its /readyz says 200, with no argument of the
//     watchdog changed;
//   - persisted list: the watchdog restarted while no apiserver answers
//     serves the master it discovered (from its state file);
//   - forget: that master, shut down for good, is forgotten once it has
//     been absent from the API and unhealthy for --forget-after, never
//     before, while the seeds stay.
//
// The nodes' RBAC grant is applied first with `vipctl rbac apply`, through
// the VIP.
func TestRealMastersFromTheAPI(t *testing.T) {
	r := lab.NewReal(t)
	require.NotEmpty(t, r.Standby, "the lab has a standby master")
	require.NotEmpty(t, r.NodeKubeconfig, "the lab has a node kubeconfig")
	m4 := r.Standby[0]
	const forgetAfter = 20 * time.Second
	state := filepath.Join(t.TempDir(), "masters.json")
	args := []string{"--kubeconfig", r.NodeKubeconfig, "--state-file", state, "--forget-after", forgetAfter.String()}
	care := r.StartCare(args...)
	r.WaitAllServing(30 * time.Second)
	out, err := exec.Command(r.Vipctl, "rbac", "apply", "--kubeconfig", r.Kubeconfig).CombinedOutput()
	require.NoError(t, err, "vipctl rbac apply: %s", out)
	t.Logf("vipctl rbac apply: %s", strings.TrimSpace(string(out)))
	require.NoError(t, lab.Poll(60*time.Second, func() bool {
		return metricSum(t, "vipctl_care_masters") == 3 && statusOf(t, r.Masters[0].Addr)["lastSeenInAPI"] != nil
	}),
		"the watchdog lists the masters from the API")
	if rss, err := care.RSS(); err == nil {
		lab.RecordValue(t, "real_care_rss_discovery", float64(rss)/(1<<20), "MiB")
	}

	// Discovery.
	m4.Start()
	m4.WaitReady(2 * time.Minute)
	ready := time.Now()
	m4.WaitIn(30 * time.Second)
	lab.Record(t, "real_discovery_ready_to_in", time.Since(ready))
	s := statusOf(t, m4.Addr)
	require.NotNil(t, s)
	assert.Equal(t, "api", s["source"])
	b, err := os.ReadFile(state)
	require.NoError(t, err)
	assert.Contains(t, string(b), m4.Addr.String(), "the state file keeps it")
	for _, m := range r.Masters {
		assert.Equal(t, "seed", statusOf(t, m.Addr)["source"], m.Name)
	}

	// Persisted list: no apiserver answers while the watchdog restarts.
	care.Stop()
	for _, m := range append(slices.Clone(r.Masters), m4) {
		m.Kill()
	}
	gone := time.Now()
	care = r.StartCare(args...)
	require.NotNil(t, statusOf(t, m4.Addr), "restarted with no API: the saved master is managed")
	rs := lab.RealServers(t)
	_, inKernel := rs[m4.Addr]
	assert.True(t, inKernel, "and in the kernel's table (every master down: fail-open keeps all): %v", rs)
	for _, m := range r.Masters {
		m.Start()
	}
	for _, m := range r.Masters {
		m.WaitReady(2 * time.Minute)
	}
	r.WaitAllServing(30 * time.Second)

	// Forget: m4 stays down; the API drops it from the slice, and after
	// forgetAfter absent and unhealthy it goes.
	require.NoError(t, lab.Poll(3*time.Minute, func() bool { return statusOf(t, m4.Addr) == nil }), "forgotten")
	forgotten := time.Now()
	t.Logf("master %s forgotten %s after it went down (--forget-after %s)", m4.Name, forgotten.Sub(gone).Round(time.Millisecond), forgetAfter)
	assert.GreaterOrEqual(t, forgotten.Sub(gone), forgetAfter, "never before --forget-after")
	_, inKernel = lab.RealServers(t)[m4.Addr]
	assert.False(t, inKernel, "drained out of the kernel")
	b, err = os.ReadFile(state)
	require.NoError(t, err)
	assert.NotContains(t, string(b), m4.Addr.String(), "and out of the state file")
	assert.Positive(t, metricSum(t, "vipctl_care_masters_forgotten_total"))
	r.CheckSettled(30 * time.Second)
}

// copyNodeKubeconfig copies the node's kubeconfig and its certificate
// (named relative to it) to a writable folder, as a node holds them, and
// returns the kubeconfig's and the certificate's paths.
func copyNodeKubeconfig(t *testing.T, r *lab.Real) (kubeconfig, cert, key string) {
	dir := t.TempDir()
	src := filepath.Dir(r.NodeKubeconfig)
	for _, f := range []string{filepath.Base(r.NodeKubeconfig), "node.crt", "node.key"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o600))
	}
	return filepath.Join(dir, filepath.Base(r.NodeKubeconfig)), filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
}

// replaceFile writes data to path through a rename, as the kubelet
// replaces its certificate.
func replaceFile(t *testing.T, path string, data []byte) {
	require.NoError(t, os.WriteFile(path+".new", data, 0o600))
	require.NoError(t, os.Rename(path+".new", path))
}

// TestRealAnonymousAuthOff runs the masters with --anonymous-auth=false
// (CIS-hardened). It proves that an anonymous watchdog says so loudly
// (probes unauthorized) instead of silently failing open; that with the
// node's kubeconfig the probes are authenticated and a killed apiserver is
// out as fast as without; and that a rotated client certificate is taken
// up with no master leaving the table (rotation).
func TestRealAnonymousAuthOff(t *testing.T) {
	r := lab.NewReal(t)
	for _, m := range r.Masters {
		m.Kill()
		m.StartAnonymousAuthOff()
	}
	for _, m := range r.Masters {
		m.WaitReady(2 * time.Minute)
	}

	anon := r.StartCare("--kubeconfig=")
	require.NoError(t, lab.Poll(30*time.Second, func() bool { return metricSum(t, "vipctl_care_probes_unauthorized") == 1 }),
		"anonymous probes: every master answers 401, said loudly")
	st, err := lab.CareStatus()
	require.NoError(t, err)
	assert.Equal(t, true, st["probesUnauthorized"])
	assert.Contains(t, anon.Log(), "probes unauthorized")
	anon.Stop()

	kc, certFile, keyFile := copyNodeKubeconfig(t, r)
	care := r.StartCare("--kubeconfig", kc, "--state-file=")
	r.WaitAllServing(30 * time.Second)
	assert.Zero(t, metricSum(t, "vipctl_care_probes_unauthorized"))

	// Kill detection, authenticated.
	for i, m := range r.Masters {
		require.NoError(t, lab.Poll(30*time.Second, func() bool { return sentinelsHeld(t) == len(r.Masters) }), "sentinels held")
		t0 := time.Now()
		m.Kill()
		m.WaitOut(10 * time.Second)
		lab.Record(t, "real_anonoff_kill_to_out", time.Since(t0))
		m.StartAnonymousAuthOff()
		m.WaitReady(2 * time.Minute)
		m.WaitIn(30 * time.Second)
		t.Logf("cycle %d done", i)
	}

	// Rotation: no master may leave while the certificate changes.
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	defer rd.Close()
	stop := make(chan struct{})
	left := make(chan []netip.AddrPort, 1)
	go func() {
		var out []netip.AddrPort
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			rs := rd.RealServers()
			for _, m := range r.Masters {
				if rs[m.Addr] <= 0 && !slices.Contains(out, m.Addr) {
					out = append(out, m.Addr)
				}
			}
			select {
			case <-stop:
				left <- out
				return
			case <-tk.C:
			}
		}
	}()
	cert, key := r.NodeCert()
	replaceFile(t, keyFile, key)
	replaceFile(t, certFile, cert)
	require.NoError(t, lab.Poll(30*time.Second, func() bool { return strings.Contains(care.Log(), "probes' credentials reloaded") }), "the new certificate is loaded")
	// Fresh connections (every 10 s, --probe-reuse) now present it: keep
	// sampling past two of them.
	hold(25 * time.Second)
	close(stop)
	assert.Empty(t, <-left, "no master left the table during the rotation")
	assert.NotContains(t, care.Log(), "cannot reload")
	assert.Zero(t, metricSum(t, "vipctl_care_probes_unauthorized"))
	r.CheckSettled(30 * time.Second)
}
