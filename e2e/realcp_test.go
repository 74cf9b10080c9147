package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipctl/vipctl/e2e/realcp"
)

// TestRealControlPlane runs the e2e/vmtests scenarios named TestReal*
// against a real control plane: three kube-apiservers (built from the Go
// module proxy by scripts/build-k8s.sh) sharing one etcd run on this host,
// each in its own network namespace, inside an isolated lab namespace that
// the VM joins through a tap device (see e2e/realcp and docs/lab.md).
// VIPCTL_E2E_RUN narrows the scenarios; VIPCTL_REAL_CYCLES sets the
// kill/restart cycles (default 10); VIPCTL_E2E_LOGDIR keeps the VM console
// and the apiservers' and etcd's logs.
func TestRealControlPlane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the real control plane e2e needs root (network namespaces, a tap device, apt-get); run `make test` as root")
	}
	if testing.Short() {
		t.Skip("-short: skipping the real control plane e2e")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun for the VM's tap device: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	assets, root := prepareVM(ctx, t)
	var build strings.Builder
	t0 := time.Now()
	bin, err := realcp.FindBinaries(ctx, root, &build)
	if err != nil {
		t.Fatalf("kube-apiserver, kubectl, etcd: %v\n%s", err, build.String())
	}
	t.Logf("binaries ready in %s: %s %s, etcd %s", time.Since(t0).Round(time.Millisecond), bin.Version, filepath.Dir(bin.APIServer), bin.Etcd)

	dir := t.TempDir()
	logDir := os.Getenv("VIPCTL_E2E_LOGDIR")
	if logDir != "" {
		dir = filepath.Join(logDir, "realcp")
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t1 := time.Now()
	// One master on standby: TestRealMastersFromTheAPI adds it to the
	// running cluster (host-side, it costs only its network namespace).
	cp, err := realcp.Start(ctx, realcp.Options{Dir: dir, Binaries: bin, Logf: t.Logf, Standby: 1})
	if err != nil {
		t.Fatalf("start the control plane: %v (logs in %s)", err, dir)
	}
	defer cp.Close()
	t.Logf("control plane ready in %s", time.Since(t1).Round(time.Millisecond))

	args := []string{"-test.run=^TestReal"}
	if p := os.Getenv("VIPCTL_E2E_RUN"); p != "" {
		args = []string{"-test.run=" + p}
	}
	env := map[string]string{}
	for _, k := range []string{"VIPCTL_REAL_CYCLES", "VIPCTL_REAL_SIGTERM_CYCLES", "VIPCTL_REAL_BLACKHOLE_CYCLES", "VIPCTL_REAL_FLUSH_CYCLES"} {
		if v := os.Getenv(k); v != "" {
			env[k] = v
		}
	}
	logPath := filepath.Join(t.TempDir(), "console.log")
	if logDir != "" {
		logPath = filepath.Join(logDir, "realcp-console.log")
	}
	res := bootScenarios(t, logPath, func(extra []string, console io.Writer) (int, error) {
		return cp.RunVM(ctx, realcp.VMRun{Assets: assets, Root: root, TestArgs: append(slices.Clone(args), extra...), Env: env, Console: console})
	})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, res.took.Round(time.Millisecond), res.code, res.logPath)
	reportScenarios(t, res,
		func(r scenario) string { return measures(r.Log) },
		func() string { return "apiserver logs: " + logsOf(cp) })
}

// measures keeps a scenario's summary: its MEASURE lines and its logged report.
func measures(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "MEASURE ") || strings.HasPrefix(strings.TrimSpace(l), "real_test.go") ||
			strings.HasPrefix(l, "        ") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func logsOf(cp *realcp.ControlPlane) string {
	var s []string
	for _, m := range cp.Masters {
		s = append(s, m.LogFile())
	}
	return fmt.Sprint(strings.Join(s, " "), " (kept with VIPCTL_E2E_LOGDIR)")
}
