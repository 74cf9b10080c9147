package vmtests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// cpuSnap is the guest's CPU time at an instant: the whole machine's busy
// ticks (/proc/stat) and each live process's own and reaped children's
// ticks, so that a short-lived kubectl counts in the test that ran it.
type cpuSnap struct {
	at         time.Time
	busy, idle uint64
	procs      map[int]procCPU
}

type procCPU struct {
	comm string
	cpu  time.Duration
}

func takeCPUSnap() cpuSnap {
	s := cpuSnap{at: time.Now(), procs: map[int]procCPU{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			if i == 4 || i == 5 { // idle, iowait
				s.idle += v
			} else if i <= 8 { // user nice system irq softirq steal
				s.busy += v
			}
		}
	}
	ents, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range ents {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if p, err := lab.ReadProcCPU(pid); err == nil {
			s.procs[pid] = procCPU{comm: p.Comm, cpu: p.Self + p.Children}
		}
	}
	return s
}

// guestCPU is what the guest's CPUs did between two snapshots.
type guestCPU struct {
	busyPct float64 // of every vCPU
	// byName is each process name's CPU (with its reaped children); top
	// the eight names that used the most, as "name 1.2s".
	byName map[string]time.Duration
	top    []string
}

// cpuSince compares now with s: the busy share of the vCPUs, and the
// processes (by name) that used the most CPU.
func cpuSince(s cpuSnap) guestCPU {
	now := takeCPUSnap()
	var g guestCPU
	if d := (now.busy - s.busy) + (now.idle - s.idle); d > 0 {
		g.busyPct = 100 * float64(now.busy-s.busy) / float64(d)
	}
	g.byName = map[string]time.Duration{}
	for pid, p := range now.procs {
		old, ok := s.procs[pid]
		if ok && old.comm == p.comm && old.cpu <= p.cpu {
			g.byName[p.comm] += p.cpu - old.cpu
		} else if !ok {
			g.byName[p.comm] += p.cpu
		}
	}
	names := make([]string, 0, len(g.byName))
	for n := range g.byName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return g.byName[names[i]] > g.byName[names[j]] })
	for i, n := range names {
		if i == 8 || g.byName[n] == 0 {
			break
		}
		g.top = append(g.top, fmt.Sprintf("%s %.1fs", n, g.byName[n].Seconds()))
	}
	return g
}

// pollProc is lab.Poll for a condition that starts a process (kubectl,
// ctr, vipctl status): once a second, not every 20 ms. Each start costs
// the emulated guest a second or more of CPU; polled every 20 ms they kept
// its vCPUs busy and starved the kubelet and the watchdog the test watches
// (docs/lab.md, "The worker's CPU").
func pollProc(timeout time.Duration, cond func() bool) error {
	return lab.PollEvery(timeout, time.Second, cond)
}

// TestCPUSinceCountsReapedChildren: a child that burns CPU and exits
// counts in the test's own process (cutime), and the machine shows busy
// time; the accounting the faults' guest_cpu figures rest on.
func TestCPUSinceCountsReapedChildren(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	before := takeCPUSnap()
	require.Contains(t, before.procs, os.Getpid(), "this process in the snapshot")
	cmd := exec.Command(sh, "-c", `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`)
	require.NoError(t, cmd.Run())
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	require.Greater(t, child, 50*time.Millisecond, "the child burned too little CPU to measure")
	g := cpuSince(before)
	self := filepath.Base(os.Args[0])
	if len(self) > 15 {
		self = self[:15] // the kernel's comm
	}
	assert.GreaterOrEqual(t, g.byName[self], child-20*time.Millisecond,
		"this process's CPU since the snapshot (top: %v) should include its reaped child's %v", g.top, child)
	assert.Positive(t, g.busyPct, "the machine was busy while the child ran")
}

// reportCPU prints what the guest's CPUs did since s as the figure
// <scenario>_<phase>_guest_cpu_busy_pct and logs the processes that used
// the most: where the emulated node's CPU went in a phase.
func (w *worker) reportCPU(phase string, s cpuSnap) {
	g := cpuSince(s)
	fmt.Printf("MEASURE %s_%s_guest_cpu_busy_pct=%.0f\n", w.scenario(), phase, g.busyPct)
	w.t.Logf("%s: the guest's vCPUs %.0f%% busy over %s; CPU by process (with reaped children): %s",
		phase, g.busyPct, time.Since(s.at).Round(time.Second), strings.Join(g.top, ", "))
}
