package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// initVIP is vipctl init's --vip in TestClusterInit: vipctl's default VIP,
// the one the VM tests use.
var initVIP = netip.MustParseAddrPort("10.103.97.2:6443")

// TestClusterInit makes the VM (Debian's kernel, with IPVS) the first master
// of a new cluster, the way a user does: Debian's containerd and runc, the
// offline bundle's install.sh, then `vipctl init` with the real kubeadm
// init; the in-VM part is e2e/vmtests TestClusterInit. No host master runs:
// the VM is alone on the cluster lab's bridge.
func TestClusterInit(t *testing.T) {
	requireLab(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	assets := prepareVM(ctx, t)

	root := moduleRoot(t)
	before := hostSnapshot(t)
	bin, imgs, cniRoot := labInputs(ctx, t, root)
	lab, err := New(ctx, Options{Dir: t.TempDir(), Bin: bin, Images: imgs, Logf: t.Logf})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, lab.Close())
		require.Equal(t, before, hostSnapshot(t), "the host after the lab")
	})

	console, consolePath := consoleFile(t, "cluster-init-console.log")
	var build bytes.Buffer
	v := InitVM{
		Assets: assets, Root: root, Cache: cacheDir(), VIP: initVIP,
		TestArgs: []string{"-test.run=^TestClusterInit$"}, Console: io.MultiWriter(console, prefixed(t)), Log: &build,
	}
	// With VIPCTL_CLUSTER_INIT_JOIN=1, a host master joins the VM's
	// cluster once the VM's node is Ready (the harness maps the name to
	// the VM master in its /etc/hosts: no IPVS here for vipctl).
	vmCtx, vmCancel := context.WithCancel(ctx)
	defer vmCancel()
	joined := make(chan error, 1)
	var m2 *Node
	if os.Getenv("VIPCTL_CLUSTER_INIT_JOIN") == "1" {
		m2, err = lab.AddNode(ctx, 2, "master2")
		require.NoError(t, err)
		require.NoError(t, m2.InstallCNI(cniRoot, PodCIDR(2)))
		sec, err := lab.NewSecrets(ctx, m2)
		require.NoError(t, err)
		v.Join, v.Secrets = m2, &sec
		go func() {
			took, err := lab.JoinVMCluster(vmCtx, m2, sec)
			if err != nil {
				t.Logf("master2's join failed: %v", err)
				vmCancel() // the VM would wait for master2 in vain
			} else {
				fmt.Printf("MEASURE cluster_init_host_master_join_s=%.1f\n", took.Seconds())
				t.Logf("kubeadm join --control-plane of master2 (host) took %s", took.Round(time.Millisecond))
			}
			joined <- err
		}()
	}
	t0 := time.Now()
	code, runErr := lab.RunInitVM(vmCtx, v)
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(t0).Round(time.Second), code, consolePath)
	if runErr != nil || code != 0 {
		vmCancel() // and master2's join, if it still waits
		t.Logf("builds:\n%s", build.String())
	}
	require.NoError(t, runErr)
	require.Equal(t, 0, code, "the in-VM scenario failed (console log %s)", consolePath)
	if m2 != nil {
		jerr := <-joined
		if jerr != nil {
			logTail(t, filepath.Join(m2.Dir, "kubelet.log"))
		}
		require.NoError(t, jerr, "master2's join")
		out, err := lab.Kubectl(ctx, m2, "get", "nodes", "-o", "wide")
		require.NoError(t, err, string(out))
		t.Logf("kubectl get nodes on master2:\n%s", out)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average at the end: %s", bytes.TrimSpace(b))
	}
	fmt.Printf("MEASURE cluster_init_scenario_s=%.1f\n", time.Since(start).Seconds())
}
