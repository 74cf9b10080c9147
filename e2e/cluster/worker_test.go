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
	"github.com/vipctl/vipctl/e2e/vm"
)

// TestClusterWorker joins the VM (Debian's kernel, with IPVS) to the real
// cluster as a worker, the way a user does: the offline bundle's install.sh,
// then `vipctl join` with the real kubeadm through the VIP; the in-VM part
// is e2e/vmtests TestClusterWorker. The masters stay on this host (no IPVS
// here), made as TestCluster makes them.
func TestClusterWorker(t *testing.T) {
	requireLab(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun for the VM's tap device: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	var prep bytes.Buffer
	assets, err := vm.Prepare(ctx, &prep)
	require.NoError(t, err, prep.String())

	lab, names, sec := startMasters(ctx, t, true, "nftables")
	m1 := lab.Nodes[0]
	checkControlPlane(ctx, t, lab, m1, names)

	logDir := os.Getenv("VIPCTL_E2E_LOGDIR")
	if logDir == "" {
		logDir = t.TempDir()
	}
	consolePath := filepath.Join(logDir, "cluster-worker-console.log")
	console, err := os.Create(consolePath)
	require.NoError(t, err)
	defer console.Close()
	var build bytes.Buffer
	// The fault, with more than one master: master2's kube-apiserver is
	// killed once kube-proxy runs on the worker (the VM then watches the
	// worker stay Ready while the watchdog takes master2 out and back).
	var killed *Node
	kill := make(chan error, 1)
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	if len(lab.Nodes) > 1 {
		killed = lab.Nodes[1]
		go func() {
			for fctx.Err() == nil {
				out, err := lab.Kubectl(fctx, m1, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy",
					"--field-selector", "spec.nodeName=worker1", "-o", "jsonpath={.items[*].status.containerStatuses[*].ready}")
				if err == nil && strings.TrimSpace(string(out)) == "true" {
					kill <- lab.KillAPIServer(fctx, killed)
					return
				}
				select {
				case <-fctx.Done():
				case <-time.After(2 * time.Second):
				}
			}
			kill <- fctx.Err()
		}()
	}
	t0 := time.Now()
	code, runErr := lab.RunWorkerVM(ctx, WorkerVM{
		Assets: assets, Root: moduleRoot(t), Cache: cacheDir(), First: m1, Masters: lab.Nodes, Secrets: *sec, Killed: killed,
		TestArgs: []string{"-test.run=^TestClusterWorker$"}, Console: io.MultiWriter(console, prefixed(t)), Log: &build,
	})
	fcancel()
	t.Logf("VM (kernel %s) ran for %s, run.sh exit %d; console log %s", assets.KVer, time.Since(t0).Round(time.Second), code, consolePath)
	if runErr != nil || code != 0 {
		logTail(t, filepath.Join(m1.Dir, "kubelet.log"))
		t.Logf("builds:\n%s", build.String())
	}
	require.NoError(t, runErr)
	require.Equal(t, 0, code, "the in-VM scenario failed (console log %s)", consolePath)
	if killed != nil {
		require.NoError(t, <-kill, "killing %s's kube-apiserver", killed.Name)
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
		if strings.HasPrefix(l, "MEASURE ") || strings.HasPrefix(l, "LAB") || strings.HasPrefix(l, "--- ") ||
			strings.Contains(l, "worker_test.go") || strings.Contains(l, "initmaster_test.go") {
			w.t.Log("VM: " + l)
		}
	}
	return len(b), nil
}
