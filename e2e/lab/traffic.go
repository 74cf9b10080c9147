package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Traffic is the node's clients running against the VIP while a scenario
// injects faults, plus a sampler of the kernel's IPVS table:
//
//   - "kubectl": kubectl (built from the same Kubernetes release) in a loop,
//     `kubectl get namespace default` with the admin client certificate
//     through https://apiserver.cluster.local:6443; each run is a new process
//     and a new TCP connection, so IPVS spreads them over the masters.
//     Real.KubectlPause is the pause after each run (none by default: back
//     to back).
//   - "kubelet": a client-go client set up like the kubelet's: one
//     keep-alive HTTP/2 connection carrying a lease heartbeat (an update of
//     a coordination.k8s.io Lease every 200 ms) and a long-lived watch of
//     that lease. The watch is re-opened at once when it ends, from the last
//     resource version.
//
// Every request is timed; Stop returns the Report.
type Traffic struct {
	r      *Real
	t      testing.TB
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	mu      sync.Mutex
	stopped time.Time
	reqs    map[string][]Request
	spans   []watchSpan
	events  []time.Time
	// failed attempts to open the watch, and the last error
	watchFails    int
	watchLastFail string
	faults        []time.Time
	windows       []Window
	ipvs          ipvsSamples
	// dialed is when each of the client set's connections (by local
	// address) was opened.
	dialed map[string]time.Time
	// kubectlCPU is the CPU time (user and system) of the kubectl runs.
	kubectlCPU time.Duration
}

// Request is one client request.
type Request struct {
	Start, End time.Time
	Err        string // "" when it succeeded
	// ConnOpened is when the connection the request ran on was opened;
	// zero when unknown (kubectl, a request that got no connection).
	ConnOpened time.Time
}

// Window is a period in which failed requests are expected: the time from
// a fault to the watchdog taking the master out (detection), or a period
// with no master at all (NoMaster). A failure that overlaps no window and
// no fault instant counts against the scenario.
type Window struct {
	From, To time.Time
	Why      string
	NoMaster bool
}

type watchSpan struct {
	Open, Close time.Time // Close zero while open
	Err         string
}

type ipvsSamples struct {
	n, empty      int
	emptySince    time.Time
	longestEmpty  time.Duration
	emptyStretchs int
}

const (
	leaseNamespace = "default"
	leaseName      = "vipctl-e2e-node"
	heartbeatEvery = 200 * time.Millisecond
)

// StartTraffic starts the clients and the sampler; they run until Stop.
func (r *Real) StartTraffic() *Traffic {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Traffic{r: r, t: t, ctx: ctx, cancel: cancel, start: time.Now(), reqs: map[string][]Request{}, dialed: map[string]time.Time{}}
	cs := r.clientset(tr.dial)
	must(t, ensureLease(cs), "create the heartbeat lease")
	ready := make(chan struct{})
	tr.wg.Add(4)
	go tr.sampleIPVS()
	go tr.kubectlLoop()
	go tr.heartbeat(cs)
	go tr.watchLoop(cs, ready)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the lease watch did not open within 30 s")
	}
	t.Cleanup(func() { tr.Stop() })
	return tr
}

// dial opens the client set's connections and notes when.
func (tr *Traffic) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := dialer(5*time.Second).DialContext(ctx, network, addr)
	if err == nil {
		tr.mu.Lock()
		tr.dialed[c.LocalAddr().String()] = time.Now()
		tr.mu.Unlock()
	}
	return c, err
}

// traced returns ctx with a trace that stores, in *opened, when the
// connection the request gets was opened.
func (tr *Traffic) traced(ctx context.Context, opened *time.Time) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		tr.mu.Lock()
		*opened = tr.dialed[i.Conn.LocalAddr().String()]
		tr.mu.Unlock()
	}})
}

// clientset is a client-go client set like the kubelet's, through the VIP,
// whose connections dial opens.
func (r *Real) clientset(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *kubernetes.Clientset {
	cfg, err := clientcmd.BuildConfigFromFlags("", r.Kubeconfig)
	must(r.t, err, "kubeconfig")
	cfg.QPS, cfg.Burst = 1000, 1000
	cfg.UserAgent = "vipctl-e2e-kubelet"
	// A bounded connect (a blackholed master must not hold a new
	// connection for client-go's default 30 s); a custom dialer also keeps
	// this client's transport out of client-go's shared cache.
	cfg.Dial = dial
	cs, err := kubernetes.NewForConfig(cfg)
	must(r.t, err, "client set")
	return cs
}

func ensureLease(cs *kubernetes.Clientset) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pollCtx(ctx, func() error {
		_, err := cs.CoordinationV1().Leases(leaseNamespace).Get(ctx, leaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			holder := "vipctl-e2e"
			_, err = cs.CoordinationV1().Leases(leaseNamespace).Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: leaseName},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder},
			}, metav1.CreateOptions{})
		}
		return err
	})
}

// pollCtx retries f every 200 ms until it succeeds or ctx ends.
func pollCtx(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (tr *Traffic) record(client string, start time.Time, err error) {
	tr.recordOn(client, start, time.Time{}, err)
}

// recordOn records a request that ran on a connection opened at opened.
func (tr *Traffic) recordOn(client string, start, opened time.Time, err error) {
	end := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if err != nil && (tr.ctx.Err() != nil || !tr.stopped.IsZero()) {
		return // interrupted by Stop, not by a fault
	}
	q := Request{Start: start, End: end, ConnOpened: opened}
	if err != nil {
		q.Err = err.Error()
	}
	tr.reqs[client] = append(tr.reqs[client], q)
}

func (tr *Traffic) kubectlLoop() {
	defer tr.wg.Done()
	for tr.ctx.Err() == nil {
		start := time.Now()
		cmd := exec.CommandContext(tr.ctx, tr.r.Kubectl, "--kubeconfig", tr.r.Kubeconfig, "--request-timeout=10s",
			"get", "namespace", "default", "-o", "name")
		out, err := cmd.CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) != "namespace/default" {
			err = fmt.Errorf("unexpected output %q", out)
		}
		if err != nil {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
		}
		if ps := cmd.ProcessState; ps != nil {
			tr.mu.Lock()
			tr.kubectlCPU += ps.UserTime() + ps.SystemTime()
			tr.mu.Unlock()
		}
		tr.record("kubectl", start, err)
		if tr.r.KubectlPause > 0 {
			select {
			case <-tr.ctx.Done():
			case <-time.After(tr.r.KubectlPause):
			}
		}
	}
}

func (tr *Traffic) heartbeat(cs *kubernetes.Clientset) {
	defer tr.wg.Done()
	leases := cs.CoordinationV1().Leases(leaseNamespace)
	var cur *coordinationv1.Lease
	tk := time.NewTicker(heartbeatEvery)
	defer tk.Stop()
	for {
		select {
		case <-tr.ctx.Done():
			return
		case <-tk.C:
		}
		ctx, cancel := context.WithTimeout(tr.ctx, 10*time.Second)
		if cur == nil {
			var opened time.Time
			start := time.Now()
			l, err := leases.Get(tr.traced(ctx, &opened), leaseName, metav1.GetOptions{})
			tr.recordOn("kubelet", start, opened, err)
			if err == nil {
				cur = l
			}
		}
		if cur != nil {
			l := cur.DeepCopy()
			now := metav1.NewMicroTime(time.Now())
			l.Spec.RenewTime = &now
			var opened time.Time
			start := time.Now()
			l, err := leases.Update(tr.traced(ctx, &opened), l, metav1.UpdateOptions{})
			cur = nil // re-read after any error
			switch {
			case err == nil:
				cur = l
			case apierrors.IsConflict(err):
				// Our copy was stale (an update whose answer was lost went
				// through): not a failure of the request; re-read.
				err = nil
			}
			tr.recordOn("kubelet", start, opened, err)
		}
		cancel()
	}
}

func (tr *Traffic) watchLoop(cs *kubernetes.Clientset, ready chan struct{}) {
	defer tr.wg.Done()
	leases := cs.CoordinationV1().Leases(leaseNamespace)
	rv := ""
	first := true
	for tr.ctx.Err() == nil {
		w, err := leases.Watch(tr.ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + leaseName, ResourceVersion: rv})
		if err != nil {
			tr.mu.Lock()
			if tr.ctx.Err() == nil {
				tr.watchFails++
				tr.watchLastFail = err.Error()
			}
			tr.mu.Unlock()
			select {
			case <-tr.ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		tr.mu.Lock()
		tr.spans = append(tr.spans, watchSpan{Open: time.Now()})
		tr.mu.Unlock()
		if first {
			close(ready)
			first = false
		}
		why := "closed by the server"
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				err := apierrors.FromObject(ev.Object)
				why = fmt.Sprintf("error event: %v", err)
				if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
					rv = "" // too old to resume: start from now
				}
				break
			}
			if l, ok := ev.Object.(*coordinationv1.Lease); ok {
				rv = l.ResourceVersion
			}
			tr.mu.Lock()
			tr.events = append(tr.events, time.Now())
			tr.mu.Unlock()
		}
		w.Stop()
		tr.mu.Lock()
		if n := len(tr.spans); n > 0 && tr.ctx.Err() == nil {
			tr.spans[n-1].Close = time.Now()
			tr.spans[n-1].Err = why
		}
		tr.mu.Unlock()
	}
}

// sampleIPVS reads the VIP's service every 10 ms (Real.IPVSSampleEvery)
// and counts the samples in
// which it is missing or has no real server with a weight above 0.
func (tr *Traffic) sampleIPVS() {
	defer tr.wg.Done()
	h, err := mobyipvs.New("")
	if err != nil {
		tr.t.Errorf("ipvs handle: %v", err)
		return
	}
	defer h.Close()
	key := &mobyipvs.Service{Address: VIP.AsSlice(), Port: VIPPort.Port(), Protocol: syscall.IPPROTO_TCP, AddressFamily: syscall.AF_INET, Netmask: 0xffffffff}
	every := 10 * time.Millisecond
	if tr.r.IPVSSampleEvery > 0 {
		every = tr.r.IPVSSampleEvery
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-tr.ctx.Done():
			return
		case <-tk.C:
		}
		serving := false
		if svc, err := h.GetService(key); err == nil {
			if dests, err := h.GetDestinations(svc); err == nil {
				for _, d := range dests {
					if d.Weight > 0 {
						serving = true
					}
				}
			}
		}
		now := time.Now()
		tr.mu.Lock()
		s := &tr.ipvs
		s.n++
		if !serving {
			s.empty++
			if s.emptySince.IsZero() {
				s.emptySince = now
				s.emptyStretchs++
			}
			if d := now.Sub(s.emptySince); d > s.longestEmpty {
				s.longestEmpty = d
			}
		} else {
			s.emptySince = time.Time{}
		}
		tr.mu.Unlock()
	}
}

// Fault marks the instant a fault is injected: requests in flight then may
// fail. Call it right before the fault.
func (tr *Traffic) Fault() time.Time {
	now := time.Now()
	tr.mu.Lock()
	tr.faults = append(tr.faults, now)
	tr.mu.Unlock()
	return now
}

// Excuse declares a window in which failed requests are expected (see Window).
func (tr *Traffic) Excuse(w Window) {
	tr.mu.Lock()
	tr.windows = append(tr.windows, w)
	tr.mu.Unlock()
}

// Stop ends the clients and returns what they saw. Calling it again returns
// the same report.
func (tr *Traffic) Stop() Report {
	tr.mu.Lock()
	if tr.stopped.IsZero() {
		tr.stopped = time.Now()
	}
	tr.mu.Unlock()
	tr.cancel()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.report()
}

// Report is what the node's clients saw during a scenario.
type Report struct {
	Duration time.Duration
	Clients  []ClientReport
	// Watch: how many times it was (re)opened, the longest time from its
	// end to the next open (not counting time with no master at all), the
	// longest time without a watch event (the heartbeat makes one every
	// 200 ms), and whether it was open when the scenario ended.
	WatchOpens      int
	WatchFailedOpen int
	WatchLastError  string
	WatchReopenMax  time.Duration
	WatchReopenWhy  string
	WatchSilenceMax time.Duration
	WatchOpenAtEnd  bool
	// IPVS samples (every 10 ms, or Real.IPVSSampleEvery) in which the VIP had no serving real
	// server or no service at all, and the longest such stretch.
	IPVSSamples, IPVSEmpty, IPVSEmptyStretches int
	IPVSLongestEmpty                           time.Duration
	// KubectlCPU is the CPU time (user and system) kubectl's runs took.
	KubectlCPU time.Duration
}

// ClientReport is one client's requests.
type ClientReport struct {
	Name      string
	Attempted int
	Failed    int
	// Of the failed: in flight at a fault instant, started inside an
	// excused window (between a fault and the watchdog's reaction, or with
	// no master at all), run on a connection that was open at a fault (the
	// fault broke it: a flushed IPVS table resets the node's connections
	// through the VIP, docs/lab.md), and the rest, which count against the
	// scenario.
	InFlight, InWindow, OnBrokenConn, Unexcused int
	// LongestOutage is the longest time from a failed request's start to
	// the end of the next successful one; Slowest the longest request.
	LongestOutage, Slowest time.Duration
	SlowestDetail          string
	// The first few failures of each kind, for the log.
	UnexcusedErrors, ExcusedErrors []string
}

func (tr *Traffic) report() Report {
	rep := Report{Duration: tr.stopped.Sub(tr.start), KubectlCPU: tr.kubectlCPU}
	names := make([]string, 0, len(tr.reqs))
	for n := range tr.reqs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rep.Clients = append(rep.Clients, tr.clientReport(n, tr.reqs[n]))
	}
	rep.WatchOpens = len(tr.spans)
	rep.WatchFailedOpen, rep.WatchLastError = tr.watchFails, tr.watchLastFail
	for i := 1; i < len(tr.spans); i++ {
		from, to := tr.spans[i-1].Close, tr.spans[i].Open
		for _, w := range tr.windows {
			if w.NoMaster && !w.From.After(to) && !w.To.Before(from) && w.To.After(from) {
				from = minTime(w.To, to)
			}
		}
		if d := to.Sub(from); d > rep.WatchReopenMax {
			rep.WatchReopenMax, rep.WatchReopenWhy = d, tr.spans[i-1].Err
		}
	}
	if n := len(tr.spans); n > 0 {
		rep.WatchOpenAtEnd = tr.spans[n-1].Close.IsZero()
		if !rep.WatchOpenAtEnd {
			rep.WatchReopenMax = max(rep.WatchReopenMax, tr.stopped.Sub(tr.spans[n-1].Close))
			rep.WatchReopenWhy = "never re-opened: " + tr.spans[n-1].Err
		}
	}
	last := tr.start
	for _, e := range tr.events {
		rep.WatchSilenceMax = max(rep.WatchSilenceMax, e.Sub(last))
		last = e
	}
	rep.WatchSilenceMax = max(rep.WatchSilenceMax, tr.stopped.Sub(last))
	s := tr.ipvs
	rep.IPVSSamples, rep.IPVSEmpty, rep.IPVSEmptyStretches, rep.IPVSLongestEmpty = s.n, s.empty, s.emptyStretchs, s.longestEmpty
	return rep
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (tr *Traffic) clientReport(name string, reqs []Request) ClientReport {
	c := ClientReport{Name: name, Attempted: len(reqs)}
	var streak time.Time
	describe := func(q Request) string {
		d := fmt.Sprintf("at +%s took %s", q.Start.Sub(tr.start).Round(time.Millisecond), q.End.Sub(q.Start).Round(time.Millisecond))
		if q.Err != "" {
			d += ": " + q.Err
		}
		return d
	}
	for _, q := range reqs {
		if d := q.End.Sub(q.Start); d > c.Slowest {
			c.Slowest, c.SlowestDetail = d, describe(q)
		}
		if q.Err == "" {
			if !streak.IsZero() {
				c.LongestOutage = max(c.LongestOutage, q.End.Sub(streak))
				streak = time.Time{}
			}
			continue
		}
		c.Failed++
		if streak.IsZero() {
			streak = q.Start
		}
		switch {
		case tr.inFlightAtFault(q):
			c.InFlight++
		case tr.inWindow(q) != "":
			c.InWindow++
		case tr.connAcrossFault(q):
			c.OnBrokenConn++
		default:
			c.Unexcused++
			if len(c.UnexcusedErrors) < 5 {
				c.UnexcusedErrors = append(c.UnexcusedErrors, describe(q))
			}
			continue
		}
		if len(c.ExcusedErrors) < 3 {
			why := tr.inWindow(q)
			if tr.inFlightAtFault(q) {
				why = "in flight at a fault"
			} else if why == "" {
				why = "on a connection open at a fault"
			}
			c.ExcusedErrors = append(c.ExcusedErrors, why+", "+describe(q))
		}
	}
	if !streak.IsZero() {
		c.LongestOutage = max(c.LongestOutage, tr.stopped.Sub(streak))
	}
	return c
}

func (tr *Traffic) inFlightAtFault(q Request) bool {
	for _, f := range tr.faults {
		if !q.Start.After(f) && !q.End.Before(f) {
			return true
		}
	}
	return false
}

// connAcrossFault tells whether q ran on a connection opened before a fault
// that happened before q started.
func (tr *Traffic) connAcrossFault(q Request) bool {
	if q.ConnOpened.IsZero() {
		return false
	}
	for _, f := range tr.faults {
		if q.ConnOpened.Before(f) && f.Before(q.Start) {
			return true
		}
	}
	return false
}

// inWindow returns why q overlaps an excused window, or "".
func (tr *Traffic) inWindow(q Request) string {
	for _, w := range tr.windows {
		if !q.Start.After(w.To) && !q.End.Before(w.From) {
			return w.Why
		}
	}
	return ""
}

// Record prints the report as MEASURE lines ("MEASURE name value unit",
// names prefixed real_<scenario>_, durations in ms) and logs a summary.
func (rep Report) Record(t testing.TB, scenario string) {
	t.Helper()
	p := "real_" + scenario + "_"
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s of traffic\n", scenario, rep.Duration.Round(time.Millisecond))
	for _, c := range rep.Clients {
		fmt.Printf("MEASURE %s%s_attempted %d requests\n", p, c.Name, c.Attempted)
		fmt.Printf("MEASURE %s%s_failed %d requests\n", p, c.Name, c.Failed)
		fmt.Printf("MEASURE %s%s_failed_in_flight %d requests\n", p, c.Name, c.InFlight)
		fmt.Printf("MEASURE %s%s_failed_in_window %d requests\n", p, c.Name, c.InWindow)
		fmt.Printf("MEASURE %s%s_failed_on_broken_conn %d requests\n", p, c.Name, c.OnBrokenConn)
		fmt.Printf("MEASURE %s%s_failed_unexcused %d requests\n", p, c.Name, c.Unexcused)
		fmt.Printf("MEASURE %s%s_outage %.3f ms\n", p, c.Name, ms(c.LongestOutage))
		fmt.Printf("MEASURE %s%s_slowest %.3f ms\n", p, c.Name, ms(c.Slowest))
		fmt.Fprintf(&b, "  %-8s %4d requests, %3d failed (%d in flight at a fault, %d in an excused window, %d on a connection open at a fault, %d otherwise); longest outage %s\n",
			c.Name, c.Attempted, c.Failed, c.InFlight, c.InWindow, c.OnBrokenConn, c.Unexcused, c.LongestOutage.Round(time.Millisecond))
		if c.Name == "kubectl" {
			fmt.Printf("MEASURE %skubectl_cpu %.3f ms\n", p, ms(rep.KubectlCPU))
			fmt.Fprintf(&b, "           CPU of its runs %s\n", rep.KubectlCPU.Round(10*time.Millisecond))
		}
		if c.SlowestDetail != "" {
			fmt.Fprintf(&b, "           slowest request %s\n", c.SlowestDetail)
		}
		for _, e := range c.ExcusedErrors {
			fmt.Fprintf(&b, "           excused: %s\n", e)
		}
		for _, e := range c.UnexcusedErrors {
			fmt.Fprintf(&b, "           UNEXCUSED: %s\n", e)
		}
	}
	fmt.Printf("MEASURE %swatch_opens %d opens\n", p, rep.WatchOpens)
	fmt.Printf("MEASURE %swatch_reopen_max %.3f ms\n", p, ms(rep.WatchReopenMax))
	fmt.Printf("MEASURE %swatch_silence_max %.3f ms\n", p, ms(rep.WatchSilenceMax))
	fmt.Printf("MEASURE %sipvs_empty_samples %d samples\n", p, rep.IPVSEmpty)
	fmt.Printf("MEASURE %sipvs_longest_empty %.3f ms\n", p, ms(rep.IPVSLongestEmpty))
	fmt.Fprintf(&b, "  watch    opened %d times, longest re-open %s (%s), longest without an event %s, open at the end %v\n",
		rep.WatchOpens, rep.WatchReopenMax.Round(time.Millisecond), rep.WatchReopenWhy, rep.WatchSilenceMax.Round(time.Millisecond), rep.WatchOpenAtEnd)
	if rep.WatchFailedOpen > 0 {
		fmt.Fprintf(&b, "           %d failed attempts to open it, the last: %s\n", rep.WatchFailedOpen, rep.WatchLastError)
	}
	fmt.Fprintf(&b, "  ipvs     %d samples, %d with no serving real server (%d stretches, longest %s)",
		rep.IPVSSamples, rep.IPVSEmpty, rep.IPVSEmptyStretches, rep.IPVSLongestEmpty.Round(time.Millisecond))
	t.Log(b.String())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Criteria are the pass criteria of a scenario.
type Criteria struct {
	// MaxWatchReopen bounds the time from the watch's end to its re-open
	// (default 2 s).
	MaxWatchReopen time.Duration
	// AllowEmpty accepts samples with no serving real server (a flushed
	// table, which the watchdog restores).
	AllowEmpty bool
}

// Check asserts the criteria: no request failed outside a fault instant or
// an excused window, the watch re-opened within MaxWatchReopen and was open
// at the end, and (unless AllowEmpty) the VIP never lacked a serving real
// server.
func (rep Report) Check(t testing.TB, c Criteria) {
	t.Helper()
	if c.MaxWatchReopen == 0 {
		c.MaxWatchReopen = 2 * time.Second
	}
	var errs []error
	for _, cl := range rep.Clients {
		if cl.Attempted == 0 {
			errs = append(errs, fmt.Errorf("%s made no request", cl.Name))
		}
		if cl.Unexcused > 0 {
			errs = append(errs, fmt.Errorf("%s: %d requests failed outside a fault: %s", cl.Name, cl.Unexcused, strings.Join(cl.UnexcusedErrors, "; ")))
		}
	}
	if rep.WatchReopenMax > c.MaxWatchReopen {
		errs = append(errs, fmt.Errorf("the watch took %s to re-open (%s), want at most %s", rep.WatchReopenMax, rep.WatchReopenWhy, c.MaxWatchReopen))
	}
	if !rep.WatchOpenAtEnd {
		errs = append(errs, errors.New("the watch was not open at the end"))
	}
	if !c.AllowEmpty && rep.IPVSEmpty > 0 {
		errs = append(errs, fmt.Errorf("the VIP had no serving real server in %d samples (longest %s)", rep.IPVSEmpty, rep.IPVSLongestEmpty))
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
}

// CheckSettled asserts that nothing is stuck once every master is healthy
// again: the kernel has exactly the masters as real servers, all with
// weight 1, within timeout, and the watchdog reports them all up.
func (r *Real) CheckSettled(timeout time.Duration) {
	t := r.t
	t.Helper()
	want := map[netip.AddrPort]int{}
	for _, m := range r.Masters {
		want[m.Addr] = 1
	}
	WaitFor(t, timeout, "exactly the masters, weight 1", func(rs map[netip.AddrPort]int) bool {
		if len(rs) != len(want) {
			return false
		}
		for a, w := range want {
			if rs[a] != w {
				return false
			}
		}
		return true
	})
	st, err := CareStatus()
	must(t, err, "watchdog status")
	ms, _ := st["masters"].([]any)
	if len(ms) != len(r.Masters) {
		t.Errorf("watchdog /status lists %d masters, want %d: %v", len(ms), len(r.Masters), st)
		return
	}
	for _, x := range ms {
		m, _ := x.(map[string]any)
		if m["state"] != "up" {
			t.Errorf("watchdog: master %v is %v, want up", m["address"], m["state"])
		}
	}
}
