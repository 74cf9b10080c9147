package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vipctl/vipctl/e2e/vm"
)

// prepareVM installs what the VM needs (cached) and returns its kernel and
// initramfs with the module root the binaries are built from.
func prepareVM(ctx context.Context, t *testing.T) (vm.Assets, string) {
	t.Helper()
	var prep bytes.Buffer
	assets, err := vm.Prepare(ctx, &prep)
	if err != nil {
		t.Fatalf("prepare the VM: %v\n%s", err, prep.String())
	}
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	return assets, root
}

// TestVM boots the lab VM once and runs every scenario of e2e/vmtests in
// it. VIPCTL_E2E_RUN narrows the scenarios (a -test.run pattern).
func TestVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the VM e2e needs root (apt-get for qemu, the kernel package); run `make test` as root")
	}
	if testing.Short() {
		t.Skip("-short: skipping the VM e2e")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	assets, root := prepareVM(ctx, t)
	share := t.TempDir()
	var args []string
	if p := os.Getenv("VIPCTL_E2E_RUN"); p != "" {
		args = append(args, "-test.run="+p)
	}
	if err := vm.BuildShare(ctx, root, share, args, nil); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "console.log")
	if dir := os.Getenv("VIPCTL_E2E_LOGDIR"); dir != "" {
		logPath = filepath.Join(dir, "vm-console.log")
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := time.Now()
	code, runErr := vm.Run(ctx, vm.Config{Assets: assets, Share: share, Console: logf})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(start).Round(time.Millisecond), code, logPath)
	reportScenarios(t, logPath, code, runErr, nil, nil)
}

// reportScenarios turns the VM's console (logPath) into one subtest per
// in-VM scenario, with the scenario's log when it fails; onPass and onFail,
// when set, add to what a passing or failing scenario reports.
func reportScenarios(t *testing.T, logPath string, code int, runErr error, onPass func(scenario) string, onFail func() string) {
	t.Helper()
	console, _ := os.ReadFile(logPath)
	results := parseGoTestV(console)
	if len(results) == 0 {
		t.Fatalf("the VM ran no scenario (err %v); console:\n%s", runErr, tail(console, 80))
	}
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			switch r.Result {
			case "PASS":
				extra := ""
				if onPass != nil {
					extra = ":\n" + onPass(r)
				}
				t.Logf("passed in the VM in %s%s", r.Elapsed, extra)
			case "SKIP":
				t.Skipf("skipped in the VM:\n%s", r.Log)
			case "FAIL":
				extra := ""
				if onFail != nil {
					extra = "\n" + onFail()
				}
				t.Errorf("failed in the VM:\n%s%s", r.Log, extra)
			default:
				t.Errorf("did not finish in the VM:\n%s", r.Log)
			}
		})
	}
	if runErr != nil || code != 0 {
		t.Errorf("VM run: exit %d, %v; last console lines:\n%s", code, runErr, tail(console, 40))
	}
}

// scenario is one top-level test the VM ran.
type scenario struct {
	Name, Result, Elapsed, Log string
}

var (
	runLine  = regexp.MustCompile(`^=== RUN\s+(\S+)$`)
	doneLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(([^)]*)\)`)
)

// parseGoTestV splits `go test -v` output into top-level tests with their
// output. A test that started but never reported is returned without result.
func parseGoTestV(out []byte) []scenario {
	var list []*scenario
	byName := map[string]*scenario{}
	var cur *scenario
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if m := runLine.FindStringSubmatch(line); m != nil && !strings.Contains(m[1], "/") {
			cur = &scenario{Name: m[1]}
			byName[m[1]] = cur
			list = append(list, cur)
		}
		if m := doneLine.FindStringSubmatch(line); m != nil {
			if s := byName[m[2]]; s != nil {
				s.Result, s.Elapsed = m[1], m[3]
			}
		}
		if cur != nil {
			cur.Log += line + "\n"
		}
	}
	res := make([]scenario, len(list))
	for i, s := range list {
		res[i] = *s
	}
	return res
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
