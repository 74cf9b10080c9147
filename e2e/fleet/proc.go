package fleet

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vipctl/vipctl/e2e/lab"
)

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(pid int) (float64, error) {
	p, err := lab.ReadProcCPU(pid)
	return p.Self.Seconds(), err
}

// rssMB is process pid's resident set in MB (10^6 bytes).
func rssMB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS %q: %w", pid, v, err)
			}
			return kb * 1024 / 1e6, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// established counts the established TCP connections of this network
// namespace whose local port is port: the server's side of its clients'
// connections.
func established(port uint16) (int, error) {
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return 0, err
		}
		c, err := countEstablished(bufio.NewScanner(f), port)
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", file, err)
		}
		n += c
	}
	return n, nil
}

func countEstablished(sc *bufio.Scanner, port uint16) (int, error) {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ...; st 01 is ESTABLISHED.
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		if strings.HasSuffix(f[1], want) {
			n++
		}
	}
	return n, sc.Err()
}
