package realcp

import (
	"context"
	"io"
	"os"

	"github.com/vipctl/vipctl/e2e/vm"
)

// VMRun is one boot of the VM (the node) against the control plane.
type VMRun struct {
	Assets vm.Assets
	// Root is the module root: vipctl and the e2e/vmtests test binary are
	// built from it.
	Root string
	// TestArgs are the test binary's flags, e.g. -test.run=^TestReal.
	TestArgs []string
	// Env is the scenarios' environment; VIPCTL_E2E_REAL=1 is always set.
	Env     map[string]string
	Console io.Writer
	// Memory of the VM; default 1536M (kubectl, the watchdog, the
	// scenarios' client-go and 9p copies in tmpfs).
	Memory string
}

// RunVM builds the share (the binaries, kubectl, the lab PKI and spec),
// boots the VM with its NIC on the lab bridge and returns the exit code
// of the scenarios, as vm.Run does.
func (cp *ControlPlane) RunVM(ctx context.Context, r VMRun) (int, error) {
	share, err := os.MkdirTemp("", "vipctl-reallab-share-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(share)
	env := map[string]string{"VIPCTL_E2E_REAL": "1"}
	for k, v := range r.Env {
		env[k] = v
	}
	if err := vm.BuildShare(ctx, r.Root, share, r.TestArgs, env); err != nil {
		return -1, err
	}
	if err := cp.WriteShare(share); err != nil {
		return -1, err
	}
	mem := r.Memory
	if mem == "" {
		mem = "1536M"
	}
	return vm.Run(ctx, vm.Config{Assets: r.Assets, Share: share, Console: r.Console, Memory: mem, NetNS: LabNS, Tap: Tap})
}
