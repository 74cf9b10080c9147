package cluster

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterWorkerIPVSMode is the shorter run of TestClusterWorker with
// kube-proxy in ipvs mode: the VM worker joined as there, kube-proxy's
// DaemonSet kept off the host masters (no IPVS in this host's kernel), and
// the VM checks that kube-proxy's ipvs mode works beside the VIP and that
// its clean-up, which deletes every virtual server it did not make, leaves
// the VIP's alone (`ipvs.excludeCIDRs`, which `vipctl kubeadm config`
// writes into its configuration).
func TestClusterWorkerIPVSMode(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	assets := prepareVM(ctx, t)

	t.Setenv("VIPCTL_CLUSTER_MASTERS", "1")
	lab, names, sec := startMasters(ctx, t, true, "ipvs")
	m1 := lab.Nodes[0]
	out, err := lab.Kubectl(ctx, m1, "-n", "kube-system", "patch", "daemonset", "kube-proxy", "--type=merge", "-p", KubeProxyOffMasters)
	require.NoError(t, err, "%s", out)
	checkControlPlane(ctx, t, lab, m1, names)

	console, consolePath := consoleFile(t, "cluster-worker-ipvs-console.log")
	var build bytes.Buffer
	t0 := time.Now()
	code, runErr := lab.RunWorkerVM(ctx, WorkerVM{
		Assets: assets, Root: moduleRoot(t), Cache: cacheDir(), First: m1, Masters: lab.Nodes, Secrets: *sec,
		TestArgs: []string{"-test.run=^TestClusterWorker$"}, Console: io.MultiWriter(console, prefixed(t)), Log: &build,
	})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(t0).Round(time.Second), code, consolePath)
	if runErr != nil || code != 0 {
		logTail(t, filepath.Join(m1.Dir, "kubelet.log"))
		t.Logf("builds:\n%s", build.String())
	}
	require.NoError(t, runErr)
	require.Equal(t, 0, code, "the in-VM scenario failed (console log %s)", consolePath)
}
