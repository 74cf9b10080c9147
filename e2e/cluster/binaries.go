package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/vipctl/vipctl/e2e/lab"
)

// Binaries are the programs a cluster node runs or the harness calls.
type Binaries struct {
	Kubeadm, Kubelet, Kubectl               string
	APIServer, ControllerManager, Scheduler string
	KubeProxy, Etcd, Pause, Vipctl          string
}

// components are the Kubernetes programs scripts/build-k8s.sh builds, in the
// order FindBinaries asks for them.
var components = []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}

// FindBinaries builds (or finds cached) every program of Binaries:
// Kubernetes by scripts/build-k8s.sh, etcd by scripts/build-etcd.sh (both
// from the Go module proxy, cached in ~/.cache/vipctl), and pause and vipctl
// from this module into dir. root is the module root; log receives the
// scripts' progress.
func FindBinaries(ctx context.Context, root, dir string, log io.Writer) (Binaries, error) {
	var b Binaries
	out, err := lab.RunScript(ctx, root, log, "build-k8s.sh", components...)
	if err != nil {
		return b, err
	}
	if len(out) != len(components) {
		return b, fmt.Errorf("scripts/build-k8s.sh printed %q, want %d paths", out, len(components))
	}
	b.Kubeadm, b.Kubelet, b.Kubectl = out[0], out[1], out[2]
	b.APIServer, b.ControllerManager, b.Scheduler, b.KubeProxy = out[3], out[4], out[5], out[6]
	out, err = lab.RunScript(ctx, root, log, "build-etcd.sh")
	if err != nil {
		return b, err
	}
	if len(out) != 1 {
		return b, fmt.Errorf("scripts/build-etcd.sh printed %q, want one path", out)
	}
	b.Etcd = out[0]
	b.Pause = filepath.Join(dir, "pause")
	b.Vipctl = filepath.Join(dir, "vipctl")
	for pkg, dst := range map[string]string{"./e2e/cluster/pause": b.Pause, "./cmd/vipctl": b.Vipctl} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dst, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", pkg, err, o)
		}
	}
	return b, nil
}
