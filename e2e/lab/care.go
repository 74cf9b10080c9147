package lab

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
)

// MetricsAddr is where the lab's watchdog serves /metrics, /readyz, /status.
const MetricsAddr = "127.0.0.1:9282"

// Care is a running `vipctl care` process.
type Care struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
	Args   []string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CareArgs are the watchdog's arguments for this lab: every master, the lab
// CA, JSON logs, plus extra.
func (l *Lab) CareArgs(extra ...string) []string {
	addrs := make([]netip.AddrPort, len(l.Masters))
	for i, m := range l.Masters {
		addrs[i] = m.Addr
	}
	return careArgs(l.VIPPort(), l.CAFile, addrs, extra)
}

// careArgs is a `vipctl care` command line for vip and masters, verified
// against caFile, with JSON logs and the lab's metrics address, plus extra.
func careArgs(vip netip.AddrPort, caFile string, masters []netip.AddrPort, extra []string) []string {
	args := []string{"care", "--vip", vip.String(), "--ca-file", caFile, "--log-format", "json", "--metrics-addr", MetricsAddr}
	for _, m := range masters {
		args = append(args, "--master", m.String())
	}
	return append(args, extra...)
}

// StartCare starts `vipctl care` with CareArgs(extra...) and waits until it
// is ready (/readyz answers 200). It is stopped when the test ends.
func (l *Lab) StartCare(extra ...string) *Care {
	l.t.Helper()
	return l.StartCareArgs(l.CareArgs(extra...)...)
}

// StartCareArgs starts vipctl with exactly args and waits for /readyz.
func (l *Lab) StartCareArgs(args ...string) *Care {
	l.t.Helper()
	return startCare(l.t, careBin(l.Vipctl), args)
}

// StartCareBin is StartCare with the watchdog binary bin, e.g. one built
// from another revision to compare with.
func (l *Lab) StartCareBin(bin string, extra ...string) *Care {
	l.t.Helper()
	return startCare(l.t, bin, l.CareArgs(extra...))
}

// careBin is the binary the watchdog runs from: the watchdog build the
// image carries (VIPCTL_CARE_BIN) when there is one, else vipctl itself.
func careBin(vipctl string) string {
	if b := os.Getenv("VIPCTL_CARE_BIN"); b != "" {
		return b
	}
	return vipctl
}

// StartCareWith is StartCareArgs with process attributes, e.g. to run the
// watchdog with fewer privileges.
func (l *Lab) StartCareWith(attr *syscall.SysProcAttr, args ...string) *Care {
	l.t.Helper()
	return startCareAttr(l.t, careBin(l.Vipctl), args, attr)
}

// startCare starts the vipctl binary with args (a `care` command line),
// waits until its /readyz answers 200 and stops it when the test ends.
func startCare(t testing.TB, vipctl string, args []string) *Care {
	t.Helper()
	return startCareAttr(t, vipctl, args, nil)
}

func startCareAttr(t testing.TB, vipctl string, args []string, attr *syscall.SysProcAttr) *Care {
	t.Helper()
	c := &Care{t: t, log: &syncBuffer{}, exited: make(chan struct{}), Args: args}
	c.cmd = exec.Command(vipctl, args...)
	c.cmd.SysProcAttr = attr
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	must(t, c.cmd.Start(), "start vipctl care")
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("vipctl care log:\n%s", c.Log())
		}
	})
	err := Poll(20*time.Second, func() bool {
		select {
		case <-c.exited:
			return true
		default:
		}
		resp, err := http.Get("http://" + MetricsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-c.exited:
		t.Fatalf("vipctl care exited at start: %v\n%s", c.cmd.ProcessState, c.Log())
	default:
	}
	must(t, err, "vipctl care ready")
	return c
}

// Log is everything the watchdog printed so far.
func (c *Care) Log() string { return c.log.String() }

// Stop sends SIGTERM and waits for the process to exit.
func (c *Care) Stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// Exited reports whether the process has ended.
func (c *Care) Exited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// Pid is the watchdog's process id.
func (c *Care) Pid() int { return c.cmd.Process.Pid }

// RSS is the watchdog's resident set size in bytes.
func (c *Care) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// CPUTime is the user+system CPU time the watchdog used so far.
func (c *Care) CPUTime() (time.Duration, error) {
	p, err := ReadProcCPU(c.Pid())
	return p.Self, err
}

// RealServers reads the IPv4 VIP's real servers and weights from the
// kernel; nil when the service does not exist.
func RealServers(t testing.TB) map[netip.AddrPort]int {
	t.Helper()
	return IPv4.RealServers(t)
}

// RealServers is RealServers for the family's VIP.
func (f Family) RealServers(t testing.TB) map[netip.AddrPort]int {
	t.Helper()
	r, err := f.NewIPVSReader()
	must(t, err, "ipvs handle")
	defer r.Close()
	return r.RealServers()
}

// Serving reports whether the kernel sends new connections to m: it is a
// real server of the VIP with a weight above 0.
func Serving(rs map[netip.AddrPort]int, m *Master) bool { return rs[m.Addr] > 0 }

// WaitFor polls the kernel every 2 ms until cond holds for the IPv4 VIP's
// real servers and returns how long that took.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(map[netip.AddrPort]int) bool) time.Duration {
	t.Helper()
	return IPv4.WaitFor(t, timeout, what, cond)
}

// WaitFor is WaitFor for the family's VIP.
func (f Family) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(map[netip.AddrPort]int) bool) time.Duration {
	t.Helper()
	r, err := f.NewIPVSReader()
	must(t, err, "ipvs handle")
	defer r.Close()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		rs := r.RealServers()
		if cond(rs) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; real servers now %v", what, timeout, rs)
		}
		time.Sleep(2 * time.Millisecond) // polling interval of the kernel state, not a synchronisation stand-in
	}
}

// Record prints a duration measurement on the console in the form the
// host's benchmark runner collects: "MEASURE name value ms". Tests never
// assert on it.
func Record(t testing.TB, name string, d time.Duration) {
	t.Helper()
	RecordValue(t, name, float64(d.Microseconds())/1000, "ms")
}

// RecordValue prints any measurement: "MEASURE name value unit".
func RecordValue(t testing.TB, name string, v float64, unit string) {
	t.Helper()
	fmt.Printf("MEASURE %s %.3f %s\n", name, v, unit)
	t.Logf("%s: %.3f %s", name, v, unit)
}

// IPVSReader reads the VIP's real servers with one netlink handle, for
// samplers that poll the kernel often.
type IPVSReader struct {
	h   *mobyipvs.Handle
	svc *mobyipvs.Service
}

// NewIPVSReader opens the handle for the IPv4 VIP; Close it.
func NewIPVSReader() (*IPVSReader, error) { return IPv4.NewIPVSReader() }

// NewIPVSReader opens the handle for the family's VIP; Close it.
func (f Family) NewIPVSReader() (*IPVSReader, error) {
	h, err := mobyipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("ipvs handle: %w", err)
	}
	return &IPVSReader{h: h, svc: f.service("")}, nil
}

// service is the family's VIP service as moby/ipvs names it.
func (f Family) service(sched string) *mobyipvs.Service {
	s := &mobyipvs.Service{Address: f.VIP.AsSlice(), Port: 6443, Protocol: syscall.IPPROTO_TCP, AddressFamily: syscall.AF_INET, Netmask: 0xffffffff, SchedName: sched}
	if f.VIP.Is6() {
		s.AddressFamily, s.Netmask = syscall.AF_INET6, 128
	}
	return s
}

// RealServers returns the VIP's real servers and weights; nil when the
// service does not exist or cannot be read.
func (r *IPVSReader) RealServers() map[netip.AddrPort]int {
	svc, err := r.h.GetService(r.svc)
	if err != nil {
		return nil
	}
	dests, err := r.h.GetDestinations(svc)
	if err != nil {
		return nil
	}
	out := map[netip.AddrPort]int{}
	for _, d := range dests {
		out[netip.AddrPortFrom(addr(d.Address), d.Port)] = d.Weight
	}
	return out
}

// Close releases the handle.
func (r *IPVSReader) Close() { r.h.Close() }
