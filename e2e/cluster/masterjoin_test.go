package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterMasterJoin joins the VM (Debian's kernel, with IPVS) to the real
// cluster as a third master, the way a user does: the offline bundle's
// install.sh, then `vipctl join --control-plane` with the real kubeadm join
// (stacked etcd, the certificate key and the token from files); the in-VM
// part is e2e/vmtests TestClusterMasterJoin. The first two masters are the
// host's kind-style ones (no IPVS here for vipctl), made as for
// TestClusterWorker: their etcd members keep the quorum on this host's fast
// machines, and the VM's etcd joins them as the learner. With
// VIPCTL_CLUSTER_CPJOIN_FAULT set the VM then asks for one fault (master2's
// kube-apiserver killed) on its console.
func TestClusterMasterJoin(t *testing.T) {
	requireLab(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	assets := prepareVM(ctx, t)

	t.Setenv("VIPCTL_CLUSTER_MASTERS", "2")
	lab, names, sec := startMasters(ctx, t, true, "")
	m1, m2 := lab.Nodes[0], lab.Nodes[1]
	checkControlPlane(ctx, t, lab, m1, names)
	// The certificates again under the key, as before a master's late join.
	require.NoError(t, lab.UploadCerts(ctx, m1))

	// The kill fault after the checks is opt-in: under emulation on two
	// cores the joined master's own control plane cannot carry a fault's
	// clients (docs/lab.md: its etcd checks fail, every probe times out,
	// the watchdog fails open). TestClusterWorker runs the faults.
	var faultMaster *Node
	var wantFaults []string
	if os.Getenv("VIPCTL_CLUSTER_CPJOIN_FAULT") != "" {
		faultMaster, wantFaults = m2, []string{FaultKillAPIServer}
	}
	console, consolePath := consoleFile(t, "cluster-cpjoin-console.log")
	var build bytes.Buffer
	faults := &FaultDriver{Ctx: ctx, Lab: lab, First: m1, Target: m2, Veth: "n2", Logf: t.Logf}
	t0 := time.Now()
	code, runErr := lab.RunMasterJoinVM(ctx, WorkerVM{
		Assets: assets, Root: moduleRoot(t), Cache: cacheDir(), First: m1, Masters: lab.Nodes, Secrets: *sec, FaultMaster: faultMaster,
		TestArgs: []string{"-test.run=^TestClusterMasterJoin$"}, Console: io.MultiWriter(console, prefixed(t), faults), Log: &build,
	})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(t0).Round(time.Second), code, consolePath)
	if runErr != nil || code != 0 {
		for _, n := range lab.Nodes {
			logTail(t, filepath.Join(n.Dir, "kubelet.log"))
		}
		t.Logf("builds:\n%s", build.String())
	}
	require.NoError(t, runErr)
	require.Equal(t, 0, code, "the in-VM scenario failed (console log %s)", consolePath)
	done, errs := faults.Wait()
	require.Empty(t, errs, "the host's faults")
	require.Equal(t, wantFaults, done, "the host's faults applied")

	// The third master, seen from the first.
	out, err := lab.Kubectl(ctx, m1, "get", "nodes", "-o", "wide")
	require.NoError(t, err, string(out))
	t.Logf("kubectl get nodes on master1 after the VM:\n%s", out)
	require.Contains(t, string(out), MasterJoinName+" ")
	out, err = lab.Kubectl(ctx, m1, "get", "pods", "-n", "kube-system", "-o", "wide")
	require.NoError(t, err, string(out))
	t.Logf("kubectl get pods -n kube-system on master1:\n%s", out)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("load average at the end: %s", bytes.TrimSpace(b))
	}
	fmt.Printf("MEASURE cluster_cpjoin_scenario_s=%.1f\n", time.Since(start).Seconds())
}
