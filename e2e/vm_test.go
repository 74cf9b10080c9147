package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	var args []string
	if p := os.Getenv("VIPCTL_E2E_RUN"); p != "" {
		args = append(args, "-test.run="+p)
	}
	logPath := filepath.Join(t.TempDir(), "console.log")
	if dir := os.Getenv("VIPCTL_E2E_LOGDIR"); dir != "" {
		logPath = filepath.Join(dir, "vm-console.log")
	}
	res := bootScenarios(t, logPath, func(extra []string, console io.Writer) (int, error) {
		share := t.TempDir()
		if err := vm.BuildShare(ctx, root, share, append(slices.Clone(args), extra...), nil); err != nil {
			return -1, err
		}
		return vm.Run(ctx, vm.Config{Assets: assets, Share: share, Console: console})
	})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, res.took.Round(time.Millisecond), res.code, res.logPath)
	reportScenarios(t, res, nil, nil)
}

// booted is what the VM boots of one scenario run printed and returned.
type booted struct {
	results []scenario
	code    int
	err     error
	logPath string // the last boot's console
	console []byte // the last boot's console
	took    time.Duration
}

// bootScenarios runs boot (one VM boot running the in-VM scenarios, with
// extra test flags, its console to the writer) with its console in
// logPath. When the VM's kernel locked up (vm.KernelLockup: the kernel then
// panics and the VM ends at once), it boots a fresh VM once for the
// scenarios that had not finished, and logs the lockup with its trace: an
// emulated kernel that hangs is the lab's failure, and the scenario it
// interrupted still runs to its end. A second lockup is reported as a
// failure by reportScenarios (the interrupted scenario did not finish).
func bootScenarios(t *testing.T, logPath string, boot func(extra []string, console io.Writer) (int, error)) booted {
	t.Helper()
	start := time.Now()
	run := func(path string, extra []string) booted {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		code, runErr := boot(extra, f)
		console, _ := os.ReadFile(path)
		return booted{results: parseGoTestV(console), code: code, err: runErr, logPath: path, console: console}
	}
	first := run(logPath, nil)
	lockup := vm.KernelLockup(first.console)
	if lockup == "" {
		first.took = time.Since(start)
		return first
	}
	var done, cut []string
	var kept []scenario
	for _, r := range first.results {
		if r.Result == "" {
			cut = append(cut, r.Name)
			continue
		}
		done = append(done, regexp.QuoteMeta(r.Name))
		kept = append(kept, r)
	}
	t.Logf("THE VM'S KERNEL LOCKED UP during %v (console %s):\n%s\nbooting a fresh VM for the scenarios that had not finished", cut, logPath, lockup)
	var extra []string
	if len(done) > 0 {
		extra = []string{"-test.skip=^(" + strings.Join(done, "|") + ")$"}
	}
	second := run(strings.TrimSuffix(logPath, ".log")+"-retry.log", extra)
	second.results = append(kept, second.results...)
	second.took = time.Since(start)
	return second
}

// reportScenarios turns the scenarios the VM boots ran into one subtest
// per in-VM scenario, with the scenario's log when it fails; onPass and
// onFail, when set, add to what a passing or failing scenario reports.
func reportScenarios(t *testing.T, b booted, onPass func(scenario) string, onFail func() string) {
	t.Helper()
	if len(b.results) == 0 {
		t.Fatalf("the VM ran no scenario (err %v); console:\n%s", b.err, tail(b.console, 80))
	}
	for _, r := range b.results {
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
	if b.err != nil || b.code != 0 {
		t.Errorf("VM run: exit %d, %v; last console lines:\n%s", b.code, b.err, tail(b.console, 40))
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
