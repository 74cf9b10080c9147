package realcp

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vipctl/vipctl/e2e/lab"
)

// Binaries are the real control plane's programs.
type Binaries struct {
	APIServer, Kubectl, Etcd string
	Version                  string // of kube-apiserver and kubectl
}

// DefaultVersion is the Kubernetes version the lab builds.
const DefaultVersion = "v1.34.4"

// FindBinaries returns kube-apiserver and kubectl from VIPCTL_K8S_DIR when
// it is set, else from scripts/build-k8s.sh (which builds them from the Go
// module proxy once and caches them), and etcd from scripts/fetch-etcd.sh
// (Debian's etcd-server, cached). root is the module root; log receives the
// scripts' progress.
func FindBinaries(ctx context.Context, root string, log io.Writer) (Binaries, error) {
	b := Binaries{Version: DefaultVersion}
	if v := os.Getenv("K8S_VERSION"); v != "" {
		b.Version = v
	}
	if dir := os.Getenv("VIPCTL_K8S_DIR"); dir != "" {
		b.APIServer, b.Kubectl = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "kubectl")
	} else {
		out, err := lab.RunScript(ctx, root, log, "build-k8s.sh", "kube-apiserver", "kubectl")
		if err != nil {
			return b, err
		}
		if len(out) != 2 {
			return b, fmt.Errorf("scripts/build-k8s.sh printed %q, want two paths", out)
		}
		b.APIServer, b.Kubectl = out[0], out[1]
	}
	out, err := lab.RunScript(ctx, root, log, "fetch-etcd.sh")
	if err != nil {
		return b, err
	}
	if len(out) != 1 {
		return b, fmt.Errorf("scripts/fetch-etcd.sh printed %q, want one path", out)
	}
	b.Etcd = out[0]
	return b, b.check()
}

func (b Binaries) check() error {
	for name, p := range map[string]string{"kube-apiserver": b.APIServer, "kubectl": b.Kubectl, "etcd": b.Etcd} {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s binary: %w", name, err)
		}
		if st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s binary %s: not executable", name, p)
		}
	}
	return nil
}
