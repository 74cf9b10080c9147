package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/vipctl/vipctl/e2e/vm"
	"os"
	"path/filepath"
	"strings"
)

// WorkerSpecFile is the name, in the VM's share folder WorkerDir, of the file
// that tells the in-VM worker scenario (e2e/vmtests TestClusterWorker) what
// the host built for it.
const (
	WorkerDir      = "worker"
	WorkerSpecFile = "spec.json"
)

// WorkerSpec describes the cluster and the worker's files to the VM. Paths
// are relative to the share's WorkerDir.
type WorkerSpec struct {
	Name    string   `json:"name"`    // the worker's hostname and node name
	NodeIP  string   `json:"nodeIP"`  // its address on the lab bridge, CIDR form
	Gateway string   `json:"gateway"` // the lab bridge's address (no way out)
	Masters []string `json:"masters"` // the masters' apiservers, IP:PORT
	// ServiceSubnet is the cluster's (what `vipctl kubeadm config` gave
	// kubeadm): vipctl join checks the VIP is outside it.
	ServiceSubnet string `json:"serviceSubnet"`
	// TokenFile holds the bootstrap token (mode 0600); CACertHash is the
	// discovery hash of the cluster CA.
	TokenFile  string `json:"tokenFile"`
	CACertHash string `json:"caCertHash"`
	// AdminConf is master1's admin kubeconfig (its server is
	// apiserver.cluster.local, which the worker maps to the VIP).
	AdminConf string `json:"adminConf"`
	// Images are the image archives imported into the worker's
	// containerd: pause, and kube-proxy when it runs; PauseRef is pause's
	// reference (containerd's sandbox image).
	Images   []string `json:"images"`
	PauseRef string   `json:"pauseRef"`
	// KubeProxyMode is the mode kube-proxy's DaemonSet runs in; empty when
	// kubeadm did not install it.
	KubeProxyMode string `json:"kubeProxyMode,omitempty"`
	// Bundle is the offline bundle (tar.gz) whose install.sh the worker runs.
	Bundle string `json:"bundle"`
	// CNIConfig is the worker's CNI configuration (bridge, host-local, loopback).
	CNIConfig string `json:"cniConfig"`
	// FaultMaster, when set (more than one master), is the master (IP:PORT)
	// the host's faults hit: its kube-apiserver killed, its machine cut off
	// (FaultDriver). The VM asks for each with a console line and reads the
	// host's answer in the cluster; the worker must stay Ready through them.
	FaultMaster string `json:"faultMaster,omitempty"`
}

// WriteWorkerSpec writes s into dir/WorkerSpecFile.
func WriteWorkerSpec(dir string, s WorkerSpec) error {
	return writeSpec(filepath.Join(dir, WorkerSpecFile), s)
}

// ReadWorkerSpec reads dir/WorkerSpecFile.
func ReadWorkerSpec(dir string) (WorkerSpec, error) {
	var s WorkerSpec
	return s, readSpec(filepath.Join(dir, WorkerSpecFile), "worker spec", &s)
}

// writeSpec writes a VM scenario's spec s, as JSON, into the file p of
// the share (no secret is in a spec: they are files of their own).
func writeSpec(p string, s any) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// readSpec reads the spec in the file p into s; errors say what, the
// spec's kind.
func readSpec(p, what string, s any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal(b, s); err != nil {
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	return nil
}

// WorkerContainerdConfig is a VM node's containerd configuration: the
// masters' (see containerdConfig). The node's root is its disk, so runc
// pivot_roots into each container as on any machine. (While the VM ran
// from its initramfs, whose rootfs cannot be pivot_root'ed away, runc
// needed NoPivotRoot: "error jailing process inside rootfs: pivot_root .:
// invalid argument".)
func WorkerContainerdConfig(pause string) string {
	return containerdConfig(pause)
}

// CNIConfig is a node's CNI configuration: a bridge (cni0) with host-local
// addresses from podCIDR. containerd sets up each pod's lo with the loopback
// plugin itself. The plugins are Debian's containernetworking-plugins in
// /usr/lib/cni.
func CNIConfig(podCIDR string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "vipctl-lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, podCIDR)
}

// CNIPlugins are the plugins of Debian's containernetworking-plugins a node
// needs: bridge and host-local for CNIConfig, loopback for each pod's lo
// (containerd runs it itself).
var CNIPlugins = []string{"bridge", "host-local", "loopback"}

// InstallCNI gives node n the CNI plugins (from debRoot, the unpacked
// WorkerDebs) in /usr/lib/cni and CNIConfig(podCIDR) in /etc/cni/net.d,
// where its containerd looks (it watches the folder): the kubelet then
// reports the node's network ready.
func (n *Node) InstallCNI(debRoot, podCIDR string) error {
	if err := os.MkdirAll(n.Path("/usr/lib/cni"), 0o755); err != nil {
		return err
	}
	for _, p := range CNIPlugins {
		if err := vm.CopyFile(filepath.Join(debRoot, "usr/lib/cni", p), n.Path("/usr/lib/cni/"+p)); err != nil {
			return fmt.Errorf("%s: CNI plugin %s: %w", n.Name, p, err)
		}
	}
	if err := os.MkdirAll(n.Path("/etc/cni/net.d"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(n.Path("/etc/cni/net.d/10-vipctl-lab.conflist"), []byte(CNIConfig(podCIDR)), 0o644)
}

// KillAPIServer SIGKILLs the kube-apiserver container of master n (its
// kubelet restarts it, as after a crash): the fault the worker must ride
// through.
func (l *Lab) KillAPIServer(ctx context.Context, n *Node) error {
	out, err := n.Run(ctx, "ctr", "-n", "k8s.io", "containers", "ls")
	if err != nil {
		return err
	}
	killed := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(f[1], "/kube-apiserver:") {
			continue
		}
		// Only the running task can be killed; an exited one's fails.
		if _, err := n.Run(ctx, "ctr", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", f[0]); err == nil {
			killed++
		}
	}
	if killed == 0 {
		return fmt.Errorf("%s: no running kube-apiserver container to kill:\n%s", n.Name, out)
	}
	return nil
}
