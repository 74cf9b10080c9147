package vmtests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/cluster"
	"github.com/vipctl/vipctl/e2e/lab"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The faults of the worker scenario (docs/lab.md, "Faults with the worker
// joined"), one after the other, each from its own start to "recovered":
// every master back in IPVS and a renewal of the worker's node Lease after
// that. During each, the node's clients (lab.Traffic: kubectl in a loop and
// a kubelet-like heartbeat and watch) run through the VIP, and the node's
// Ready condition and Lease are sampled through the VIP (nodeWatch).

// faultFigures are one fault's measurements, printed as MEASURE lines
// <scenario>_fault_<name>_<figure> (worker.scenario).
type faultFigures struct {
	scenario, name string
	figs           []figure
}

type figure struct {
	key  string
	v    float64
	unit string
}

func (f *faultFigures) add(key string, v float64, unit string) {
	f.figs = append(f.figs, figure{key, v, unit})
	fmt.Printf("MEASURE %s_fault_%s_%s=%.3f\n", f.scenario, f.name, key, v)
}

func (f *faultFigures) dur(key string, d time.Duration) { f.add(key+"_s", d.Seconds(), "s") }

// runFaults runs the sequence: the host's faults on spec.FaultMaster when
// there is one (more than one master), then the worker's own.
func (w *worker) runFaults(kubectl func(...string) (string, error)) {
	t := w.t
	nw := w.watchNode()
	defer nw.stop()
	clients := lab.Clients(t, "/usr/local/bin/kubectl", "/tmp/admin.conf")
	var all []*faultFigures
	// Each fault is a subtest: one that fails is reported, and the next
	// (and the teardown) still run on what it left.
	run := func(name string, f func(*lab.Real, *nodeWatch, func(...string) (string, error)) *faultFigures) {
		parent := w.t
		defer func() { w.t = parent }()
		t.Run(name, func(st *testing.T) {
			w.t = st
			all = append(all, f(clients, nw, kubectl))
		})
	}
	if w.spec.FaultMaster != "" {
		run("kill_apiserver", w.faultKillAPIServer)
		run("cut_off", w.faultCutOff)
	} else {
		t.Log("one master: the faults of a master are skipped (nothing to fail over to)")
	}
	run("kube_proxy_restart", w.faultKubeProxy)
	run("watchdog_killed", w.faultWatchdog)
	run("reboot", w.faultReboot)
	var b strings.Builder
	for _, f := range all {
		fmt.Fprintf(&b, "  %s:", f.name)
		for _, g := range f.figs {
			fmt.Fprintf(&b, " %s=%.3g%s", g.key, g.v, g.unit)
		}
		b.WriteString("\n")
	}
	t.Logf("the faults:\n%s", b.String())
}

// faultRun is one fault under way.
type faultRun struct {
	w     *worker
	figs  *faultFigures
	tr    *lab.Traffic
	iw    *ipvsWatch
	nw    *nodeWatch
	start time.Time
	cpu   cpuSnap // the guest's CPU at the clients' start
}

// begin waits for the steady state (every master in IPVS), starts the
// clients (unless clients is nil) and the IPVS watch, and lets them run a
// moment before the fault.
func (w *worker) begin(name string, nw *nodeWatch, clients *lab.Real, target string, flushes bool) *faultRun {
	t := w.t
	require.NoError(t, lab.Poll(2*time.Minute, w.allInIPVS), "%s: every master in IPVS before the fault", name)
	fr := &faultRun{w: w, figs: &faultFigures{scenario: w.scenario(), name: name}, nw: nw}
	if clients == nil {
		// No IPVS watch either during the reboot (the node goes down;
		// the next boot watches again, afterBoot).
		fr.start = time.Now()
		t.Logf("fault %s: start", name)
		return fr
	}
	fr.cpu = takeCPUSnap()
	fr.tr = clients.StartTraffic()
	fr.iw = w.watchIPVS(target, fr.tr, flushes)
	time.Sleep(2 * time.Second) // a baseline of the clients before the fault
	fr.start = fr.tr.Fault()
	t.Logf("fault %s: start", name)
	return fr
}

// end waits for a Lease renewal after recovered, stops the clients and the
// watches, records the figures, and asserts: no unexcused failure, the
// watch open at the end, and (unless mayBeNotReady) the node Ready in
// every sample through the VIP.
func (fr *faultRun) end(recovered time.Time, mayBeNotReady bool) {
	t, name := fr.w.t, fr.figs.name
	require.NoError(t, lab.Poll(2*time.Minute, func() bool { return fr.nw.renewedAfter(recovered) }),
		"%s: no Lease renewal after the recovery", name)
	end := time.Now()
	rep := fr.tr.Stop()
	var ig ipvsFigures
	if fr.iw != nil {
		ig = fr.iw.stop()
	}
	rep.Record(t, fr.w.scenario()+"_"+name)
	ns := fr.nw.between(fr.start, end)
	fr.figs.dur("recovered", recovered.Sub(fr.start))
	fr.figs.dur("lease_longest_gap", ns.leaseGap)
	fr.figs.add("ready_samples", float64(ns.ready), "")
	fr.figs.add("not_ready_samples", float64(ns.notReady), "")
	fr.figs.add("failed_samples", float64(ns.failed), "")
	if fr.iw != nil {
		fr.figs.add("ipvs_not_all_periods", float64(ig.notAll), "")
		fr.figs.dur("ipvs_not_all_longest", ig.longestNotAll)
		fr.figs.add("ipvs_empty_periods", float64(ig.empty), "")
		fr.figs.dur("ipvs_empty_longest", ig.longestEmpty)
		fr.figs.add("watchdog_fail_open_periods", float64(ig.failOpen), "")
		fr.figs.dur("watchdog_fail_open_longest", ig.longestFailOpen)
		t.Logf("fault %s: IPVS and the watchdog, from 2 s before the fault: %v", name, fr.iw.timeline())
	}
	if !fr.cpu.at.IsZero() {
		g := cpuSince(fr.cpu)
		fr.figs.add("guest_cpu_busy_pct", g.busyPct, "%")
		t.Logf("fault %s: the guest's vCPUs %.0f%% busy over %s; CPU by process (with reaped children): %s",
			name, g.busyPct, time.Since(fr.cpu.at).Round(time.Second), strings.Join(g.top, ", "))
	}
	for _, c := range rep.Clients {
		fr.figs.add(c.Name+"_failed", float64(c.Failed), "")
		fr.figs.add(c.Name+"_unexcused", float64(c.Unexcused), "")
	}
	t.Logf("fault %s: recovered %s after its start; Lease longest gap %s; node samples through the VIP: %d Ready, %d not, %d failed; IPVS: %d periods without every master (longest %s), %d without any (longest %s)",
		name, recovered.Sub(fr.start).Round(100*time.Millisecond), ns.leaseGap.Round(100*time.Millisecond), ns.ready, ns.notReady, ns.failed,
		ig.notAll, ig.longestNotAll.Round(time.Millisecond), ig.empty, ig.longestEmpty.Round(time.Millisecond))
	t.Logf("fault %s: Lease renewals, from the fault's start: %v", name, ns.renewals)
	for _, c := range rep.Clients {
		assert.Positive(t, c.Attempted, "%s: %s made no request", name, c.Name)
		assert.Zero(t, c.Unexcused, "%s: %s requests failed outside the fault's excused windows: %v", name, c.Name, c.UnexcusedErrors)
	}
	assert.True(t, rep.WatchOpenAtEnd, "%s: the clients' watch open at the end", name)
	if !mayBeNotReady {
		assert.Zero(t, ns.notReady, "%s: samples with the node not Ready", name)
	}
	require.Positive(t, ns.ready, "%s: no sample read the node Ready", name)
	st, _ := exec.Command("/usr/local/bin/vipctl", "status").CombinedOutput()
	t.Logf("fault %s: vipctl status at the end:\n%s", name, st)
	require.NoError(t, lab.Poll(4*time.Minute, fr.w.allInIPVS), "%s: every master in IPVS at the end", name)
}

// hostFault asks the host for fault name (cluster.FaultLine) and waits for
// its answer (hostAnswer).
func (fr *faultRun) hostFault(name string, wait time.Duration) map[string]string {
	fmt.Println(cluster.FaultLine(name))
	return fr.hostAnswer(name, wait)
}

// hostAnswer waits for the host's answer to fault name, the ConfigMap
// cluster.FaultConfigMap(name) read through the VIP every 500 ms (with
// client-go, not kubectl: the wait spans the fault, and a kubectl start
// costs the emulated guest ~1.8 s of CPU), and returns its data: the
// milliseconds from the line to the fault applied, and healed when it has
// a duration.
func (fr *faultRun) hostAnswer(name string, wait time.Duration) map[string]string {
	t := fr.w.t
	var data map[string]string
	require.NoError(t, lab.PollEvery(wait, 500*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cm, err := fr.nw.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, cluster.FaultConfigMap(name), metav1.GetOptions{})
		if err != nil {
			return false
		}
		data = cm.Data
		return true
	}), "the host never answered fault %s", name)
	require.Empty(t, data["error"], "the host's fault %s", name)
	t.Logf("fault %s: the host answered %v (ms after the line)", name, data)
	return data
}

func msAfter(t0 time.Time, data map[string]string, key string) time.Time {
	ms, _ := strconv.Atoi(data[key])
	return t0.Add(time.Duration(ms) * time.Millisecond)
}

// faultKillAPIServer: the host SIGKILLs the fault master's kube-apiserver
// container; its kubelet restarts it. Failures are excused from the line
// to the watchdog taking the master out.
func (w *worker) faultKillAPIServer(clients *lab.Real, nw *nodeWatch, kubectl func(...string) (string, error)) *faultFigures {
	t, m := w.t, w.spec.FaultMaster
	fr := w.begin("kill_apiserver", nw, clients, m, false)
	data := fr.hostFault(cluster.FaultKillAPIServer, 2*time.Minute)
	kill := msAfter(fr.start, data, "applied")
	out := fr.iw.waitOut(t, time.Minute)
	fr.tr.Excuse(lab.Window{From: fr.start, To: out, Why: "kill -> out"})
	in := fr.iw.waitIn(t, 4*time.Minute)
	settled := fr.iw.waitSettled(t, 4*time.Minute)
	fr.figs.dur("kill_to_out", out.Sub(kill))
	fr.figs.dur("kill_to_in", in.Sub(kill))
	fr.figs.dur("kill_to_settled", settled.Sub(kill))
	fr.end(settled, false)
	return fr.figs
}

// faultCutOff: the host cuts the fault master off for cluster.FaultCutFor
// (its link down with three masters, the worker's packets to it dropped
// with two) and reconnects it.
func (w *worker) faultCutOff(clients *lab.Real, nw *nodeWatch, kubectl func(...string) (string, error)) *faultFigures {
	t, m := w.t, w.spec.FaultMaster
	fr := w.begin("cut_off", nw, clients, m, false)
	fmt.Println(cluster.FaultLine(cluster.FaultCutOff))
	out := fr.iw.waitOut(t, time.Minute)
	fr.tr.Excuse(lab.Window{From: fr.start, To: out, Why: "cut -> out"})
	data := fr.hostAnswer(cluster.FaultCutOff, 2*time.Minute)
	cut, healed := msAfter(fr.start, data, "applied"), msAfter(fr.start, data, "healed")
	in := fr.iw.waitIn(t, 3*time.Minute)
	settled := fr.iw.waitSettled(t, 4*time.Minute)
	fr.figs.dur("cut_to_out", out.Sub(cut))
	fr.figs.dur("heal_to_in", in.Sub(healed))
	fr.figs.dur("heal_to_settled", settled.Sub(healed))
	fr.end(settled, false)
	return fr.figs
}

// faultKubeProxy: kube-proxy's container killed in containerd; the kubelet
// restarts it and its nftables-mode start flushes the IPVS table, which
// the watchdog restores. Each period with no real server is excused
// (ipvsWatch, flushes).
func (w *worker) faultKubeProxy(clients *lab.Real, nw *nodeWatch, kubectl func(...string) (string, error)) *faultFigures {
	t := w.t
	old := w.runningContainer("/kube-proxy:")
	require.NotEmpty(t, old, "kube-proxy's running container")
	fr := w.begin("kube_proxy_restart", nw, clients, "", true)
	w.sh("ctr -n k8s.io tasks kill -s SIGKILL " + old)
	// Recovered: the kubelet has started a new container, and either its
	// healthz says 200 (its first sync, after the start-up clean-up that
	// flushes IPVS) or the flush was seen and the masters are back.
	var running, healthy time.Time
	var code int
	var body string
	err := pollProc(4*time.Minute, func() bool {
		if running.IsZero() {
			if c := w.runningContainer("/kube-proxy:"); c == "" || c == old {
				return false
			}
			running = time.Now()
		}
		if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:10256/healthz"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
			if code == http.StatusOK {
				healthy = time.Now()
				return true
			}
		}
		return fr.iw.snapshot().empty > 0 && w.allInIPVS()
	})
	if err != nil || healthy.IsZero() {
		pod, _ := kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "--field-selector", "spec.nodeName="+w.spec.Name, "-o", "name")
		lg, _ := kubectl("logs", "-n", "kube-system", "--tail", "40", strings.TrimSpace(pod))
		o, _ := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "tasks", "ls").CombinedOutput()
		t.Logf("kube-proxy after its kill: new container running since %v, healthz %d %q, IPVS flushes seen %d; ctr tasks ls:\n%s\nits log:\n%s",
			running, code, body, fr.iw.snapshot().empty, o, lg)
	}
	require.NoError(t, err, "kube-proxy never restarted (a new container running, then healthz 200 or the flush restored)")
	fr.figs.dur("kill_to_running", running.Sub(fr.start))
	if !healthy.IsZero() {
		fr.figs.dur("kill_to_healthy", healthy.Sub(fr.start))
	}
	// Recovered: the masters settled in IPVS after the flush (if any),
	// kube-proxy back.
	rec := fr.iw.waitSettled(t, 4*time.Minute)
	if healthy.After(rec) {
		rec = healthy
	} else if healthy.IsZero() && running.After(rec) {
		rec = running
	}
	fr.end(rec, false)
	return fr.figs
}

// faultWatchdog: the watchdog's container stopped (ctr's default signal,
// SIGTERM, as the kubelet stops it); the kubelet starts it again. The
// rules must stay while it is gone (no teardown on exit, docs/care.md).
func (w *worker) faultWatchdog(clients *lab.Real, nw *nodeWatch, kubectl func(...string) (string, error)) *faultFigures {
	t := w.t
	old := w.runningContainer("vipctl/vipctl:")
	require.NotEmpty(t, old, "the watchdog's running container")
	fr := w.begin("watchdog_killed", nw, clients, "", false)
	w.sh("ctr -n k8s.io tasks kill " + old)
	var running time.Time
	require.NoError(t, pollProc(4*time.Minute, func() bool {
		c := w.runningContainer("vipctl/vipctl:")
		running = time.Now()
		return c != "" && c != old
	}), "the watchdog's container never ran again")
	var st string
	require.NoError(t, pollProc(2*time.Minute, func() bool {
		o, err := exec.Command("/usr/local/bin/vipctl", "status", "-o", "json").CombinedOutput()
		st = string(o)
		return err == nil && w.allMastersHealthy(o)
	}), "vipctl status never showed every master healthy after the restart:\n%s", st)
	rec := time.Now()
	fr.figs.dur("kill_to_running", running.Sub(fr.start))
	fr.figs.dur("kill_to_status_up", rec.Sub(fr.start))
	ig := fr.iw.snapshot()
	fr.end(rec, false)
	// The rules stay: never a sample without the virtual server or
	// without a real server. (A master taken out by a probe that timed
	// out under load is the watchdog's job, and counted in the figures.)
	assert.Zero(t, ig.empty, "periods with the VIP's virtual server gone or empty while the watchdog was down and back (its rules must stay)")
	return fr.figs
}

// faultReboot reboots the worker for real (docs/lab.md says what and
// why): the VM runs on a disk; requestReboot shuts the node down and asks
// for the reboot, and TestClusterWorkerAfterReboot goes on in the next
// boot. The node's clients die with it: they start again once the boot has
// put the VIP back, and must then see no failure.
func (w *worker) faultReboot(clients *lab.Real, nw *nodeWatch, kubectl func(...string) (string, error)) *faultFigures {
	require.True(w.t, rootOnDisk(), "the worker's reboot needs the VM on a disk (e2e/cluster bootVM)")
	fr := w.begin("reboot", nw, nil, "", false)
	w.requestReboot(fr)
	return fr.figs
}

// runningContainer is the id of the running container whose image
// contains image, "" when none runs.
func (w *worker) runningContainer(image string) string {
	out, err := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "containers", "ls").Output()
	if err != nil {
		return ""
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.Contains(f[1], image) {
			ids[f[0]] = true
		}
	}
	out, err = exec.Command("/usr/bin/ctr", "-n", "k8s.io", "tasks", "ls").Output()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && ids[f[0]] && f[2] == "RUNNING" {
			return f[0]
		}
	}
	return ""
}

// ipvsWatch samples the IPVS table every 20 ms during a fault: when the
// target master went out and came back in, and the periods without every
// master and without any real server. With flushes, each period with no
// real server marks a fault instant on the clients (requests in flight
// then, and connections open then, broke by the flush) and is excused.
type ipvsWatch struct {
	mu      sync.Mutex
	g       ipvsFigures
	out, in time.Time
	// allIn is when every master was last seen back in (zero while not)
	allIn time.Time
	// events: each master's membership changes and the watchdog's
	// fail-open changes, for the log
	events     []string
	done, fin  chan struct{}
	stopOnce   sync.Once
	target     netip.AddrPort
	haveTarget bool
}

type ipvsFigures struct {
	notAll, empty, notAllSamples int
	longestNotAll, longestEmpty  time.Duration
	// periods in which the watchdog's /status said failOpen (every
	// master judged down: all are served)
	failOpen        int
	longestFailOpen time.Duration
}

func (w *worker) watchIPVS(target string, tr *lab.Traffic, flushes bool) *ipvsWatch {
	iw := &ipvsWatch{done: make(chan struct{}), fin: make(chan struct{})}
	if target != "" {
		iw.target, iw.haveTarget = netip.MustParseAddrPort(target), true
	}
	start := time.Now()
	status := &http.Client{Timeout: time.Second}
	go func() {
		defer close(iw.fin)
		var notAllSince, emptySince, openSince time.Time
		prev := map[netip.AddrPort]bool{}
		lastProbe := map[string]string{} // each master's last probe time seen
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			// The watchdog's fail-open, every 200 ms: with every master
			// judged down it serves them all, a dead one included; the
			// clients' failures then are those of no master at all.
			if i%10 == 0 {
				var st struct {
					FailOpen bool `json:"failOpen"`
					Masters  []struct {
						Address   string `json:"address"`
						LastProbe *struct {
							Time    string  `json:"time"`
							OK      bool    `json:"ok"`
							Reason  string  `json:"reason"`
							Latency float64 `json:"latencySeconds"`
						} `json:"lastProbe"`
					} `json:"masters"`
				}
				err := lab.ReadCareStatus(status, &st)
				now := time.Now()
				iw.mu.Lock()
				// The probes the watchdog's status shows: each of the
				// target's, and every other master's failures (a probe
				// between two reads of /status is not seen).
				for _, m := range st.Masters {
					if m.LastProbe == nil || lastProbe[m.Address] == m.LastProbe.Time {
						continue
					}
					lastProbe[m.Address] = m.LastProbe.Time
					if i > 0 && (!m.LastProbe.OK || (iw.haveTarget && m.Address == iw.target.String())) {
						iw.events = append(iw.events, fmt.Sprintf("+%s probe %s ok=%v %s (%.2fs)", now.Sub(start).Round(10*time.Millisecond),
							m.Address, m.LastProbe.OK, m.LastProbe.Reason, m.LastProbe.Latency))
					}
				}
				switch {
				case err == nil && st.FailOpen && openSince.IsZero():
					openSince = now
					iw.g.failOpen++
					iw.events = append(iw.events, fmt.Sprintf("+%s fail-open", now.Sub(start).Round(10*time.Millisecond)))
				case err == nil && !st.FailOpen && !openSince.IsZero():
					iw.g.longestFailOpen = max(iw.g.longestFailOpen, now.Sub(openSince))
					if tr != nil {
						tr.Excuse(lab.Window{From: openSince.Add(-200 * time.Millisecond), To: now, Why: "the watchdog failed open (every master judged down)", NoMaster: true})
					}
					iw.events = append(iw.events, fmt.Sprintf("+%s fail-open ends", now.Sub(start).Round(10*time.Millisecond)))
					openSince = time.Time{}
				}
				iw.mu.Unlock()
			}
			rs := procRealServers()
			now := time.Now()
			all, empty := true, true
			for _, m := range w.spec.Masters {
				if rs[netip.MustParseAddrPort(m)] <= 0 {
					all = false
				}
			}
			for _, wt := range rs {
				if wt > 0 {
					empty = false
				}
			}
			iw.mu.Lock()
			g := &iw.g
			for _, m := range w.spec.Masters {
				a := netip.MustParseAddrPort(m)
				if in := rs[a] > 0; in != prev[a] || i == 0 {
					prev[a] = in
					word := "out"
					if in {
						word = "in"
					}
					iw.events = append(iw.events, fmt.Sprintf("+%s %s %s", now.Sub(start).Round(10*time.Millisecond), m, word))
				}
			}
			if !all {
				g.notAllSamples++
				iw.allIn = time.Time{}
				if notAllSince.IsZero() {
					notAllSince = now
					g.notAll++
				}
			} else {
				if iw.allIn.IsZero() {
					iw.allIn = now
				}
				if !notAllSince.IsZero() {
					g.longestNotAll = max(g.longestNotAll, now.Sub(notAllSince))
					notAllSince = time.Time{}
				}
			}
			if empty && emptySince.IsZero() {
				emptySince = now
				g.empty++
				if flushes {
					tr.Fault()
				}
			} else if !empty && !emptySince.IsZero() {
				g.longestEmpty = max(g.longestEmpty, now.Sub(emptySince))
				if flushes {
					tr.Excuse(lab.Window{From: emptySince.Add(-20 * time.Millisecond), To: now, Why: "no real server (kube-proxy's flush) -> restored", NoMaster: true})
				}
				emptySince = time.Time{}
			}
			if iw.haveTarget {
				in := rs[iw.target] > 0
				switch {
				case !in && iw.out.IsZero():
					iw.out = now
				case in && !iw.out.IsZero() && iw.in.IsZero():
					iw.in = now
				}
			}
			iw.mu.Unlock()
			select {
			case <-iw.done:
				iw.mu.Lock()
				if !openSince.IsZero() {
					g.longestFailOpen = max(g.longestFailOpen, now.Sub(openSince))
				}
				if !notAllSince.IsZero() {
					g.longestNotAll = max(g.longestNotAll, now.Sub(notAllSince))
				}
				if !emptySince.IsZero() {
					g.longestEmpty = max(g.longestEmpty, now.Sub(emptySince))
				}
				iw.mu.Unlock()
				return
			case <-tk.C:
			}
		}
	}()
	return iw
}

// timeline is the membership and fail-open changes, from the watch's start.
func (iw *ipvsWatch) timeline() []string {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	return append([]string(nil), iw.events...)
}

func (iw *ipvsWatch) snapshot() ipvsFigures {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	return iw.g
}

func (iw *ipvsWatch) stop() ipvsFigures {
	iw.stopOnce.Do(func() { close(iw.done); <-iw.fin })
	return iw.snapshot()
}

// waitOut waits for the target master out of IPVS and returns when.
func (iw *ipvsWatch) waitOut(t require.TestingT, d time.Duration) time.Time {
	var at time.Time
	require.NoError(t, lab.Poll(d, func() bool {
		iw.mu.Lock()
		defer iw.mu.Unlock()
		at = iw.out
		return !at.IsZero()
	}), "the watchdog never took %s out; IPVS and the watchdog meanwhile: %v", iw.target, iw.timeline())
	return at
}

// settleFor is how long every master must stay in IPVS for a fault to
// count as recovered: a master just back may be taken out again (its
// apiserver still warming up, or a probe timing out under load).
const settleFor = 10 * time.Second

// waitSettled waits until every master has been in IPVS for settleFor and
// returns since when.
func (iw *ipvsWatch) waitSettled(t require.TestingT, d time.Duration) time.Time {
	var at time.Time
	require.NoError(t, lab.Poll(d, func() bool {
		iw.mu.Lock()
		defer iw.mu.Unlock()
		at = iw.allIn
		return !at.IsZero() && time.Since(at) >= settleFor
	}), "the masters never stayed in IPVS for %s", settleFor)
	return at
}

// waitIn waits for the target master back in IPVS after it went out.
func (iw *ipvsWatch) waitIn(t require.TestingT, d time.Duration) time.Time {
	var at time.Time
	require.NoError(t, lab.Poll(d, func() bool {
		iw.mu.Lock()
		defer iw.mu.Unlock()
		at = iw.in
		return !at.IsZero()
	}), "%s never came back into IPVS", iw.target)
	return at
}

// nodeWatch samples, every second through the VIP, the worker's Ready
// condition and its node Lease's renewTime, with one client-go client
// (admin.conf): kubectl under emulation takes seconds a call, which would
// sample the 10 s renewals too coarsely to see each.
type nodeWatch struct {
	// cs reads through the VIP (admin credentials), in-process: polling
	// with it costs the guest far less than starting kubectl.
	cs        kubernetes.Interface
	mu        sync.Mutex
	samples   []nodeSample
	renewals  []time.Time
	done, fin chan struct{}
	once      sync.Once
}

type nodeSample struct {
	at            time.Time
	failed, ready bool
}

type nodeFigures struct {
	ready, notReady, failed int
	leaseGap                time.Duration
	// renewals around the window, from its start
	renewals []time.Duration
}

func (w *worker) watchNode() *nodeWatch {
	t := w.t
	cs := kubeClient(t, "/tmp/admin.conf", 5*time.Second, "vipctl-e2e-node-watch")
	nw := &nodeWatch{cs: cs, done: make(chan struct{}), fin: make(chan struct{})}
	name := w.spec.Name
	go func() {
		defer close(nw.fin)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s := nodeSample{}
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			s.failed = err != nil
			if err == nil {
				s.ready = nodeReady(n)
			}
			l, lerr := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
			cancel()
			s.at = time.Now()
			nw.mu.Lock()
			nw.samples = append(nw.samples, s)
			if lerr == nil && l.Spec.RenewTime != nil {
				if rt := l.Spec.RenewTime.Time; len(nw.renewals) == 0 || rt.After(nw.renewals[len(nw.renewals)-1]) {
					nw.renewals = append(nw.renewals, rt)
				}
			}
			nw.mu.Unlock()
			select {
			case <-nw.done:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return nw
}

func (nw *nodeWatch) stop() { nw.once.Do(func() { close(nw.done); <-nw.fin }) }

// renewedAfter reports whether a renewal later than t was seen.
func (nw *nodeWatch) renewedAfter(t time.Time) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return len(nw.renewals) > 0 && nw.renewals[len(nw.renewals)-1].After(t)
}

// between is what the samples from from to to saw, and the longest gap
// between two consecutive renewals that overlaps that window.
func (nw *nodeWatch) between(from, to time.Time) nodeFigures {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var f nodeFigures
	for _, s := range nw.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		switch {
		case s.failed:
			f.failed++
		case s.ready:
			f.ready++
		default:
			f.notReady++
		}
	}
	for i := 1; i < len(nw.renewals); i++ {
		a, b := nw.renewals[i-1], nw.renewals[i]
		if b.After(from) && a.Before(to) {
			f.leaseGap = max(f.leaseGap, b.Sub(a))
			if len(f.renewals) == 0 {
				f.renewals = append(f.renewals, a.Sub(from).Round(100*time.Millisecond))
			}
			f.renewals = append(f.renewals, b.Sub(from).Round(100*time.Millisecond))
		}
	}
	return f
}

// nodeReady is whether n's Ready condition is True.
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
