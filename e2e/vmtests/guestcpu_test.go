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

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times (100
// on every Linux this runs on; there is no sysconf without cgo).
const clockTicks = 100

// cpuSnap is the guest's CPU time at an instant: the whole machine's busy
// ticks (/proc/stat) and each live process's own and reaped children's
// ticks, so that a short-lived kubectl counts in the test that ran it.
type cpuSnap struct {
	at         time.Time
	busy, idle uint64
	procs      map[int]procCPU
}

type procCPU struct {
	comm  string
	ticks uint64
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
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range ents {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		st := string(b)
		open, close := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(st[close+1:])
		if len(f) < 15 {
			continue
		}
		var ticks uint64
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			v, _ := strconv.ParseUint(f[i], 10, 64)
			ticks += v
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		s.procs[pid] = procCPU{comm: st[open+1 : close], ticks: ticks}
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
	by := map[string]uint64{}
	for pid, p := range now.procs {
		old, ok := s.procs[pid]
		if ok && old.comm == p.comm && old.ticks <= p.ticks {
			by[p.comm] += p.ticks - old.ticks
		} else if !ok {
			by[p.comm] += p.ticks
		}
	}
	g.byName = map[string]time.Duration{}
	names := make([]string, 0, len(by))
	for n, ticks := range by {
		names = append(names, n)
		g.byName[n] = time.Duration(ticks) * time.Second / clockTicks
	}
	sort.Slice(names, func(i, j int) bool { return by[names[i]] > by[names[j]] })
	for i, n := range names {
		if i == 8 || by[n] == 0 {
			break
		}
		g.top = append(g.top, fmt.Sprintf("%s %.1fs", n, float64(by[n])/clockTicks))
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
