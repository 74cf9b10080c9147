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
func Clients(t testing.TB, kubectl, kubeconfig string) *Real {
	return &Real{t: t, Kubectl: kubectl, Kubeconfig: kubeconfig, ctl: &http.Client{Timeout: 5 * time.Minute}}
}
