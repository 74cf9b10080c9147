package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/vm"
)

// prepareVM skips t without /dev/net/tun (the VM's tap device) and returns
// the VM's kernel, initramfs and modules (vm.Prepare, cached).
func prepareVM(ctx context.Context, t *testing.T) vm.Assets {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun for the VM's tap device: %v", err)
	}
	var prep bytes.Buffer
	assets, err := vm.Prepare(ctx, &prep)
	require.NoError(t, err, prep.String())
	return assets
}

// consoleFile creates the file that keeps the VM's whole console, named
// name, in VIPCTL_E2E_LOGDIR (kept after the test) or a temporary folder;
// it is closed when t ends.
func consoleFile(t *testing.T, name string) (*os.File, string) {
	t.Helper()
	dir := os.Getenv("VIPCTL_E2E_LOGDIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f, path
}
