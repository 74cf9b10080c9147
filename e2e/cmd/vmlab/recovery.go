package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vipctl/vipctl/e2e/benchreport"
	"github.com/vipctl/vipctl/e2e/vm"
)

// benchRecovery runs the recovery benchmark (e2e/vmtests/recovery_test.go)
// in the VM: masters killed, cut off and answering 500 in turn, each
// repaired once the watchdog took it out, then a master flapping at 2 and
// 4 Hz. trials is the number of kills (half as many cuts and 500s). With
// VIPCTL_BENCH_OLD=REV it also runs a watchdog built from git revision REV
// in the same VM (figures old_*), to compare damping with. The MEASURE
// lines go into docs/benchmarks.md's recovery section.
func benchRecovery(ctx context.Context, root string, assets vm.Assets, trials string) error {
	if n, err := strconv.Atoi(trials); err != nil || n < 1 {
		return fmt.Errorf("trials %q: want a positive number", trials)
	}
	share, err := os.MkdirTemp("", "vmlab-share-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	env := map[string]string{"VIPCTL_BENCH": "1", "VIPCTL_BENCH_TRIALS": trials, "VIPCTL_BENCH_CARE_FLAGS": os.Getenv("VIPCTL_BENCH_CARE_FLAGS")}
	old := os.Getenv("VIPCTL_BENCH_OLD")
	if old != "" {
		fmt.Fprintf(os.Stderr, "vmlab: building the watchdog of %s to compare with\n", old)
		if err := buildOldWatchdog(ctx, root, old, filepath.Join(share, "vipctl-watchdog-old")); err != nil {
			return err
		}
		env["VIPCTL_BENCH_OLD_CARE_BIN"] = "/mnt/share/vipctl-watchdog-old"
	}
	fmt.Fprintln(os.Stderr, "vmlab: building vipctl and the in-VM scenarios")
	if err := vm.BuildShare(ctx, root, share, []string{"-test.run=" + benchPattern("^TestRecoveryBench$")}, env); err != nil {
		return err
	}
	bc, err := newBenchConsole("vmlab-bench-recovery-console.log")
	if err != nil {
		return err
	}
	defer bc.Close()
	fmt.Fprintf(os.Stderr, "vmlab: booting Debian's kernel %s in qemu (no network device to the outside)\n", assets.KVer)
	code, err := vm.Run(ctx, vm.Config{Assets: assets, Share: share, Console: bc.Writer()})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the VM's run ended with exit code %d (console: %s)", code, bc.file.Name())
	}
	series, err := benchreport.Parse(bytes.NewReader(bc.captured.Bytes()))
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
	heading := fmt.Sprintf("Run %s on kernel %s (qemu %s), vipctl at %s", time.Now().UTC().Format("2006-01-02 15:04 MST"), assets.KVer, accelName(), gitRev(root))
	if old != "" {
		heading += fmt.Sprintf("; old_* figures: the watchdog of %s in the same VM", old)
	}
	return spliceBenchmarks(root, "recovery", heading+":", series)
}

// buildOldWatchdog builds the watchdog (static, -tags watchdog) of git
// revision rev into out, from a copy of that revision's tree.
func buildOldWatchdog(ctx context.Context, root, rev, out string) error {
	src, err := os.MkdirTemp("", "vmlab-old-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, src)
	if b, err := archive.CombinedOutput(); err != nil {
		return fmt.Errorf("extract revision %s: %w\n%s", rev, err, b)
	}
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "watchdog", "-o", out, "./cmd/vipctl")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the watchdog of %s: %w\n%s", rev, err, b)
	}
	return nil
}
