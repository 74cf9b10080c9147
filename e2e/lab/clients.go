package lab

import (
	"net/http"
	"testing"
	"time"
)

// Clients is a Real with only what StartTraffic uses: kubectl and a
// kubeconfig whose server is https://apiserver.cluster.local:6443 (the
// VIP). It serves scenarios whose control plane is not the real lab's, the
// cluster worker's (e2e/vmtests TestClusterWorker), so that they run the
// same clients and split their failures the same way.
//
// It is lighter than the lab's, for the guest's CPU is the node's own
// (docs/lab.md, "The worker's CPU"): its kubectl loop pauses
// ClusterKubectlPause after each run, like an operator's `watch kubectl`
// (back to back, kubectl's start-up under emulation kept one of the
// worker's two vCPUs busy, and the node's kubelet and watchdog starved),
// and its IPVS sampler runs every 50 ms (the scenarios watch IPVS every
// 20 ms themselves).
func Clients(t testing.TB, kubectl, kubeconfig string) *Real {
	return &Real{t: t, Kubectl: kubectl, Kubeconfig: kubeconfig, ctl: &http.Client{Timeout: 5 * time.Minute},
		KubectlPause: ClusterKubectlPause, IPVSSampleEvery: 50 * time.Millisecond}
}

// ClusterKubectlPause is the pause after each kubectl run of Clients.
const ClusterKubectlPause = 2 * time.Second
