package cluster

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterWorker joins the VM (Debian's kernel, with IPVS) to the real
// cluster as a worker, the way a user does: the offline bundle's install.sh,
// then `vipctl join` with the real kubeadm through the VIP; the in-VM part
// is e2e/vmtests TestClusterWorker. The masters stay on this host (no IPVS
// here), made as TestCluster makes them: three unless
// VIPCTL_CLUSTER_MASTERS says otherwise, so that a master's machine can be
// cut off (its link down) while etcd keeps its quorum. The VM then runs the faults (docs/lab.md), asking the
// host for those of a master (FaultDriver); the last is a real reboot: the
// VM boots on a disk where the host installed the node with its init
// system (systemd, from the first boot on), and again on it after the
// reboot, where TestClusterWorkerAfterReboot checks the node's boot and
// tears the worker down.
func TestClusterWorker(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	assets := prepareVM(ctx, t)

	// Three masters by default, as issue 13's cluster: the faults need a
	// master to fail over to (with one, a master's fault leaves the VIP
	// nothing to serve, and the scenario skips them), and with two the
	// cut-off cannot take a master's link down without stopping etcd's
	// quorum (FaultDriver.CutLink), so it blackholes the worker's packets.
	if os.Getenv("VIPCTL_CLUSTER_MASTERS") == "" {
		t.Setenv("VIPCTL_CLUSTER_MASTERS", "3")
	}
	lab, names, sec := startMasters(ctx, t, true, "nftables")
	m1 := lab.Nodes[0]
	checkControlPlane(ctx, t, lab, m1, names)

	console, consolePath := consoleFile(t, "cluster-worker-console.log")
	var build bytes.Buffer
	// The host's faults (more than one master): the VM asks for them on
	// its console, the driver applies them to master2 and answers in the
	// cluster (FaultDriver).
	var faults *FaultDriver
	var fm *Node
	var drivers []io.Writer
	if len(lab.Nodes) > 1 {
		fm = lab.Nodes[1]
		faults = &FaultDriver{Ctx: ctx, Lab: lab, First: m1, Target: fm, Veth: "n2", CutLink: len(lab.Nodes) > 2, Logf: t.Logf}
		drivers = append(drivers, faults)
	}
	t0 := time.Now()
	code, runErr := lab.RunWorkerVM(ctx, WorkerVM{
		Assets: assets, Root: moduleRoot(t), Cache: cacheDir(), First: m1, Masters: lab.Nodes, Secrets: *sec, FaultMaster: fm,
		TestArgs: []string{"-test.run=^TestClusterWorker$"}, AfterReboot: []string{"-test.run=^TestClusterWorkerAfterReboot$"}, Console: io.MultiWriter(append([]io.Writer{console, prefixed(t)}, drivers...)...), Log: &build,
	})
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(t0).Round(time.Second), code, consolePath)
	if runErr != nil || code != 0 {
		logTail(t, filepath.Join(m1.Dir, "kubelet.log"))
		t.Logf("builds:\n%s", build.String())
	}
	require.NoError(t, runErr)
	require.Equal(t, 0, code, "the in-VM scenario failed (console log %s)", consolePath)
	if faults != nil {
		done, errs := faults.Wait()
		require.Empty(t, errs, "the host's faults")
		require.ElementsMatch(t, []string{FaultKillAPIServer, FaultCutOff}, done, "the host's faults applied")
	}

	// The worker's Node object, seen from a master.
	out, err := lab.Kubectl(ctx, m1, "get", "nodes", "-o", "wide")
	require.NoError(t, err)
	t.Logf("kubectl get nodes on master1 after the VM:\n%s", out)
	require.Contains(t, string(out), "worker1 ")
}

// prefixed is a writer that logs the VM's lines worth seeing in the test's
// output: the scenario's own (MEASURE, its t.Log lines, failures). vm.Run
// writes one line per Write.
func prefixed(t *testing.T) io.Writer { return lineLogger{t} }

type lineLogger struct{ t *testing.T }

func (w lineLogger) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		// The VM's test output (indented under its === RUN) and the
		// lab's markers; not the kernel's and the services' lines.
		if strings.HasPrefix(l, "MEASURE ") || strings.HasPrefix(l, "LAB") || strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "    ") ||
			strings.Contains(l, "worker_test.go") || strings.Contains(l, "worker_faults_test.go") || strings.Contains(l, "worker_teardown_test.go") || strings.Contains(l, "worker_reboot_test.go") ||
			strings.Contains(l, "worker_ipvs_test.go") || strings.Contains(l, "initmaster_test.go") || strings.Contains(l, "masterjoin_test.go") {
			w.t.Log("VM: " + l)
		}
	}
	return len(b), nil
}
