// Command vmlab boots the vipctl VM lab on this machine (as root) and runs
// the demo, or a chosen set of e2e scenarios, printing the VM's console.
//
//	go run ./e2e/cmd/vmlab demo                # what `make demo` runs
//	go run ./e2e/cmd/vmlab run 'TestCare.*'    # some scenarios, verbose
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vipctl/vipctl/e2e/vm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vmlab:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) < 2 || (os.Args[1] != "demo" && os.Args[1] != "run") {
		return fmt.Errorf("usage: vmlab demo | vmlab run [TEST-PATTERN]")
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
	share, err := os.MkdirTemp("", "vmlab-share-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(share)
	args, env := []string{"-test.run=^TestDemo$"}, map[string]string{"VIPCTL_DEMO": "1"}
	var console io.Writer = demoFilter{os.Stdout}
	if os.Args[1] == "run" {
		env = nil
		args = nil
		if len(os.Args) > 2 {
			args = []string{"-test.run=" + os.Args[2]}
		}
		console = os.Stdout
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
	return nil
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
