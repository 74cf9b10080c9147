// Command vmlab boots the vipctl VM lab on this machine (as root) and runs
// the demo, or a chosen set of e2e scenarios, printing the VM's console.
//
//	go run ./e2e/cmd/vmlab demo                # what `make demo` runs
//	go run ./e2e/cmd/vmlab run 'TestCare.*'    # some scenarios, verbose
//	go run ./e2e/cmd/vmlab bench [TRIALS]      # failover benchmarks -> docs/benchmarks.md
//	go run ./e2e/cmd/vmlab bench6 [TRIALS]     # kill, link cut, flush with IPv6 -> docs/benchmarks.md
//	go run ./e2e/cmd/vmlab bench-recovery [TRIALS] # recovery and flap damping -> docs/benchmarks.md
//	go run ./e2e/cmd/vmlab fleet [-n 250,500]  # apiserver cost of N nodes -> docs/benchmarks.md
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vipctl/vipctl/e2e/benchreport"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/e2e/realcp"
	"github.com/vipctl/vipctl/e2e/vm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vmlab:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) == 3 && os.Args[1] == "gobench" {
		return spliceGoBench(os.Args[2])
	}
	if len(os.Args) >= 2 && os.Args[1] == "fleet" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runFleet(ctx, os.Args[2:])
	}
	if len(os.Args) < 2 || !slices.Contains([]string{"demo", "run", "bench", "bench6", "bench-real", "bench-recovery"}, os.Args[1]) {
		return fmt.Errorf("usage: vmlab demo | vmlab run [TEST-PATTERN] | vmlab bench [TRIALS] | vmlab bench6 [TRIALS] | vmlab bench-real [TRIALS] | vmlab bench-recovery [TRIALS] | vmlab gobench FILE | vmlab fleet [-h]")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the VM lab needs root (it installs qemu and the kernel package with apt-get)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 40*time.Minute)
	defer cancel()

	fmt.Fprintln(os.Stderr, "vmlab: preparing the VM (packages, Debian kernel, initramfs; cached after the first run)")
	assets, err := vm.Prepare(ctx, os.Stderr)
	if err != nil {
		return err
	}
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	if err != nil {
		return err
	}
	if os.Args[1] == "bench-real" {
		return benchReal(ctx, root, assets, trialsArg())
	}
	if os.Args[1] == "bench-recovery" {
		return benchRecovery(ctx, root, assets, trialsArg())
	}
	share, err := os.MkdirTemp("", "vmlab-share-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	args, env := []string{"-test.run=^TestDemo"}, map[string]string{"VIPCTL_DEMO": "1"}
	var console io.Writer = demoFilter{os.Stdout}
	var bc *benchConsole
	switch os.Args[1] {
	case "run":
		env = nil
		args = nil
		if len(os.Args) > 2 {
			args = []string{"-test.run=" + os.Args[2]}
		}
		console = os.Stdout
	case "bench":
		if err := ensureNginx(ctx); err != nil {
			return err
		}
		args = []string{"-test.run=" + benchPattern("^TestBench")}
		env = map[string]string{"VIPCTL_BENCH": "1", "VIPCTL_BENCH_TRIALS": trialsArg(), "VIPCTL_BENCH_CARE_FLAGS": os.Getenv("VIPCTL_BENCH_CARE_FLAGS")}
		if bc, err = newBenchConsole("vmlab-bench-console.log"); err != nil {
			return err
		}
		defer bc.Close()
		console = bc.Writer()
	case "bench6":
		// The fake-apiserver failover benchmarks with IPv6 node, masters
		// and VIP; the other benchmarks do not depend on the family.
		args = []string{"-test.run=" + benchPattern("^TestBench(Kill|Blackhole|Flush)$")}
		env = map[string]string{"VIPCTL_BENCH": "1", "VIPCTL_BENCH_TRIALS": trialsArg(), "VIPCTL_BENCH_FAMILY": lab.IPv6.Name}
		if bc, err = newBenchConsole("vmlab-bench6-console.log"); err != nil {
			return err
		}
		defer bc.Close()
		console = bc.Writer()
	}
	fmt.Fprintln(os.Stderr, "vmlab: building vipctl and the in-VM scenarios")
	if err := vm.BuildShare(ctx, root, share, args, env); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vmlab: booting Debian's kernel %s in qemu (no network device to the outside)\n", assets.KVer)
	code, err := vm.Run(ctx, vm.Config{Assets: assets, Share: share, Console: console})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the VM's run ended with exit code %d", code)
	}
	if os.Args[1] == "bench6" {
		series, err := benchreport.Parse(bytes.NewReader(bc.captured.Bytes()))
		if err != nil {
			return err
		}
		if partialBench() || len(series) == 0 {
			fmt.Fprint(os.Stderr, benchreport.Table(series))
			return nil
		}
		return spliceBenchmarks(root, "vm-failover-ipv6", fmt.Sprintf("Run %s on kernel %s (qemu %s), vipctl at %s, %s trials:",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), assets.KVer, accelName(), gitRev(root), trialsArg()), series)
	}
	if os.Args[1] == "bench" && partialBench() {
		series, err := benchreport.Parse(bytes.NewReader(bc.captured.Bytes()))
		if err != nil {
			return err
		}
		fmt.Fprint(os.Stderr, benchreport.Table(append(series, benchreport.Derived(series)...)))
		return nil
	}
	if os.Args[1] == "bench" {
		if err := writeTimelines(root, bytes.NewReader(bc.captured.Bytes())); err != nil {
			return err
		}
		return writeBenchmarks(root, assets, bytes.NewReader(bc.captured.Bytes()))
	}
	return nil
}

// trialsArg is the TRIALS argument of bench and bench-real, 20 by default.
func trialsArg() string {
	if len(os.Args) > 2 {
		return os.Args[2]
	}
	return "20"
}

// partialBench tells whether VIPCTL_BENCH_RUN narrows the benchmarks: the
// results are then printed and docs are left alone.
func partialBench() bool { return os.Getenv("VIPCTL_BENCH_RUN") != "" }

// benchPattern is the -test.run pattern of a benchmark VM: def unless
// VIPCTL_BENCH_RUN narrows it.
func benchPattern(def string) string {
	if partialBench() {
		return os.Getenv("VIPCTL_BENCH_RUN")
	}
	return def
}

// benchConsole is where a benchmark VM's console goes: all of it to a log
// file in the temporary folder, the progress lines to stdout, and a copy
// kept for its MEASURE lines.
type benchConsole struct {
	file     *os.File
	captured bytes.Buffer
}

func newBenchConsole(name string) (*benchConsole, error) {
	f, err := os.Create(filepath.Join(os.TempDir(), name))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "vmlab: the VM's whole console goes to %s\n", f.Name())
	return &benchConsole{file: f}, nil
}

func (b *benchConsole) Writer() io.Writer {
	return io.MultiWriter(&b.captured, b.file, benchFilter{os.Stdout})
}

func (b *benchConsole) Close() { b.file.Close() }

// benchReal runs the failover benchmarks against the real control plane:
// three kube-apiservers and etcd on this host in network namespaces, the
// VM (the node) joined to them by a tap device, TRIALS kill/restart cycles,
// link cuts and flushes while kubectl and client-go clients run. The MEASURE
// lines go into docs/benchmarks.md's real-failover section.
func benchReal(ctx context.Context, root string, assets vm.Assets, trials string) error {
	if _, err := strconv.Atoi(trials); err != nil {
		return fmt.Errorf("trials %q: want a number", trials)
	}
	fmt.Fprintln(os.Stderr, "vmlab: kube-apiserver, kubectl and etcd (built from the Go module proxy; cached)")
	bin, err := realcp.FindBinaries(ctx, root, os.Stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vmlab-realcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "vmlab: starting three kube-apiservers and etcd in network namespaces")
	cp, err := realcp.Start(ctx, realcp.Options{Dir: dir, Binaries: bin})
	if err != nil {
		return fmt.Errorf("start the control plane (logs in %s): %w", dir, err)
	}
	defer cp.Close()
	bc, err := newBenchConsole("vmlab-bench-real-console.log")
	if err != nil {
		return err
	}
	defer bc.Close()
	env := map[string]string{"VIPCTL_REAL_CYCLES": trials, "VIPCTL_REAL_BLACKHOLE_CYCLES": trials, "VIPCTL_REAL_FLUSH_CYCLES": trials}
	code, err := cp.RunVM(ctx, realcp.VMRun{Assets: assets, Root: root, Env: env, Console: bc.Writer(),
		TestArgs: []string{"-test.run=" + benchPattern("^TestReal(KillRestart|Blackhole|IPVSFlush)$")}})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the VM's run ended with exit code %d (console: %s)", code, bc.file.Name())
	}
	series, err := benchreport.Parse(&bc.captured)
	if err != nil {
		return err
	}
	if len(series) == 0 {
		return fmt.Errorf("the VM printed no MEASURE line")
	}
	if partialBench() {
		fmt.Fprint(os.Stderr, benchreport.Table(series))
		return nil
	}
	return spliceBenchmarks(root, "real-failover", fmt.Sprintf("Run %s: kube-apiserver %s on this host (native), the node on kernel %s (qemu %s), vipctl at %s:",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), bin.Version, assets.KVer, accelName(), gitRev(root)), series)
}

// spliceBenchmarks writes heading and the table of series into section of
// docs/benchmarks.md.
func spliceBenchmarks(root, section, heading string, series []*benchreport.Series) error {
	body := heading + "\n\n" + benchreport.Table(series)
	path := filepath.Join(root, "docs", "benchmarks.md")
	doc, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.WriteFile(path, benchreport.Splice(doc, section, body), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vmlab: wrote %s\n%s", path, benchreport.Table(series))
	return nil
}

// writeBenchmarks splices the summary of the MEASURE lines into
// docs/benchmarks.md.
func writeBenchmarks(root string, assets vm.Assets, console io.Reader) error {
	series, err := benchreport.Parse(console)
	if err != nil {
		return err
	}
	if len(series) == 0 {
		return fmt.Errorf("the VM printed no MEASURE line")
	}
	// The same calibration workloads natively: how much emulation inflates
	// the VM's CPU figures.
	for _, name := range slices.Sorted(maps.Keys(lab.Calibrations)) {
		host := &benchreport.Series{Name: "calibration_" + name + "_host", Unit: "ms"}
		for range 5 {
			d, err := lab.Calibrations[name](100)
			if err != nil {
				return err
			}
			host.Values = append(host.Values, float64(d.Microseconds())/1000)
		}
		series = append(series, host)
	}
	series = append(series, benchreport.Derived(series)...)
	return spliceBenchmarks(root, "vm-failover", fmt.Sprintf("Run %s on kernel %s (qemu %s), vipctl at %s:",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), assets.KVer, accelName(), gitRev(root)), series)
}

// ensureNginx installs Debian's nginx with its stream module, which the
// data-path benchmark compares IPVS with, and keeps its service stopped:
// only the copy in the VM runs.
func ensureNginx(ctx context.Context) error {
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err == nil {
		return nil
	}
	fmt.Fprintln(os.Stderr, "vmlab: apt-get install nginx-light libnginx-mod-stream (for the data-path comparison)")
	cmd := exec.CommandContext(ctx, "sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-stream >/dev/null && (systemctl stop nginx 2>/dev/null; pkill -x nginx; true)")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("install nginx: %w", err)
	}
	return nil
}

// writeTimelines draws the TIMELINE lines into docs/failover-timeline.png.
func writeTimelines(root string, console io.Reader) error {
	tls, err := benchreport.ParseTimelines(console)
	if err != nil {
		return err
	}
	if len(tls) == 0 {
		return fmt.Errorf("the VM printed no TIMELINE line")
	}
	path := filepath.Join(root, "docs", "failover-timeline.png")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := benchreport.RenderPNG(f, tls); err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "vmlab: wrote %s\n", path)
	return f.Close()
}

// spliceGoBench puts the output of `go test -bench` (file) into
// docs/benchmarks.md.
func spliceGoBench(file string) error {
	out, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	if err != nil {
		return err
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") || strings.HasPrefix(line, "cpu:") {
			keep = append(keep, line)
		}
	}
	body := fmt.Sprintf("Run %s at %s with `go test -run '^$' -bench . -benchmem ./...` on the host:\n\n```\n%s\n```",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), gitRev(root), strings.Join(keep, "\n"))
	path := filepath.Join(root, "docs", "benchmarks.md")
	doc, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, benchreport.Splice(doc, "go-bench", body), 0o644)
}

func gitRev(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	// Only changes to the code make the figures another version's: the
	// benchmark itself rewrites docs/, and prose is not code.
	if err := exec.Command("git", "-C", root, "diff", "--quiet", "HEAD", "--", ".", ":(exclude)docs", ":(exclude)*.md").Run(); err != nil {
		rev += "-dirty"
	}
	return rev
}

func accelName() string {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return "TCG, software emulation"
	}
	return "KVM or TCG"
}

// benchFilter shows progress: the MEASURE lines and failures.
type benchFilter struct{ w io.Writer }

func (b benchFilter) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "MEASURE ") || strings.HasPrefix(line, "EVENT ") || strings.Contains(line, "FAIL") {
			io.WriteString(b.w, line)
		}
	}
	return len(p), nil
}

// demoFilter shows the demo's own lines (prefixed "demo| ") and failures.
type demoFilter struct{ w io.Writer }

func (d demoFilter) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		switch {
		case strings.HasPrefix(line, "demo| "):
			io.WriteString(d.w, strings.TrimPrefix(line, "demo| "))
		case strings.Contains(line, "FAIL"), strings.Contains(line, "Error"):
			io.WriteString(d.w, line)
		}
	}
	return len(p), nil
}
