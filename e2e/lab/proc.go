package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times; Linux
// fixes it at 100 on every architecture Go supports.
const clockTicks = 100

// ProcCPU is a process's CPU time from /proc/PID/stat.
type ProcCPU struct {
	// Comm is its command name (at most 15 bytes, the kernel's).
	Comm string
	// Self is its own user and system time; Children that of its
	// children it has reaped (cutime and cstime).
	Self, Children time.Duration
}

// ReadProcCPU reads process pid's CPU time.
func ReadProcCPU(pid int) (ProcCPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcCPU{}, err
	}
	// The command name, field 2, may hold spaces and ')': it ends at the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return ProcCPU{}, fmt.Errorf("/proc/%d/stat: no (comm) in %q", pid, s)
	}
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
	if len(f) < 15 {
		return ProcCPU{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var v [4]time.Duration
	for i := range v {
		n, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return ProcCPU{}, fmt.Errorf("/proc/%d/stat: field %d %q: %w", pid, 14+i, f[11+i], err)
		}
		v[i] = time.Duration(n) * time.Second / clockTicks
	}
	return ProcCPU{Comm: s[open+1 : end], Self: v[0] + v[1], Children: v[2] + v[3]}, nil
}
