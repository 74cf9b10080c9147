package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// InitSkipPhases are the kubeadm init phases the harness skips, and why:
// addon/coredns, because no CoreDNS image is built (nothing in the scenario
// resolves cluster names); addon/kube-proxy unless Options.KubeProxyMode
// asks for it (then kube-proxy runs on every node, the masters included,
// in that mode: nftables works in the masters' namespaces, ipvs only in the
// VM, this host kernel having no IPVS).
var InitSkipPhases = []string{"addon/coredns", "addon/kube-proxy"}

// skipPhases are the phases Init skips for this lab.
func (l *Lab) skipPhases() []string {
	if l.KubeProxyMode == "" {
		return InitSkipPhases
	}
	var out []string
	for _, p := range InitSkipPhases {
		if p != "addon/kube-proxy" {
			out = append(out, p)
		}
	}
	return out
}

// kubeProxyConfig is the harness's KubeProxyConfiguration part, merged by
// `vipctl kubeadm config` with vipctl's (ipvs.excludeCIDRs): the mode, and
// conntrack settings left as the kernel has them (maxPerCore 0, timeouts
// 0), as kind does: nf_conntrack_max is host-wide and only writable from
// the host's namespace, which the masters are not.
func kubeProxyConfig(mode string) string {
	if mode == "" {
		return ""
	}
	return fmt.Sprintf(`---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %s
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, mode)
}

// baseConfig is the harness's part of the kubeadm config, merged by
// `vipctl kubeadm config --config`: the node's name and address, the CRI
// socket, and the kubelet settings this machine needs (cgroup v1 with the
// cgroupfs driver, a cgroupRoot per node so that several kubelets do not
// clean up each other's pods, given as a kubeadm patch because joining
// nodes download the cluster-wide KubeletConfiguration; no swap check). imagePullPolicy Never: every
// image is imported beforehand and nothing may be pulled.
func (n *Node) baseConfig(initExtra string) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
%[4]spatches:
  directory: %[3]s
nodeRegistration:
  name: %[1]s
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: Never
  kubeletExtraArgs:
    - name: node-ip
      value: %[2]s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
`, n.Name, n.IP, n.patchDir(), initExtra)
}

// InitResult is what Init measured.
type InitResult struct {
	// Config is the kubeadm config file kubeadm init was given.
	Config string
	// Output is kubeadm init's output.
	Output string
	// Took is kubeadm init's wall time.
	Took time.Duration
}

// Init makes n the first master with the real kubeadm: the config is what
// `vipctl kubeadm config` renders for it (merged with baseConfig), and
// kubeadm init runs in the node while SuperviseKubelet plays systemd. With
// s, init also creates s's token and uploads the certificates under its key
// (--upload-certs) for JoinControlPlane.
//
// Seam for `vipctl init` (issue 12): once it exists, it replaces the
// `vipctl kubeadm config` + `kubeadm init` pair below, run in the node the
// same way (n.Command), with the same base config.
func (l *Lab) Init(ctx context.Context, n *Node, s *Secrets) (InitResult, error) {
	var r InitResult
	extra, args := "", []string{}
	if s != nil {
		var err error
		if extra, err = s.initConfig(); err != nil {
			return r, err
		}
		// As vipctl init: the token and the key are in the config (0600),
		// and kubeadm is told not to print them, so that they reach no log.
		args = append(args, "--upload-certs", "--skip-token-print", "--skip-certificate-key-print")
	}
	if err := n.writePatches(); err != nil {
		return r, err
	}
	base := filepath.Join(n.Dir, "kubeadm-base.yaml")
	if err := os.WriteFile(base, []byte(n.baseConfig(extra)+kubeProxyConfig(l.KubeProxyMode)), 0o600); err != nil {
		return r, err
	}
	r.Config = filepath.Join(n.Dir, "kubeadm.yaml")
	out, err := exec.CommandContext(ctx, l.Bin.Vipctl, "kubeadm", "config", "--config", base,
		"--master", n.IP.String(), "--output-file", r.Config).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("vipctl kubeadm config: %w: %s", err, out)
	}
	n.SuperviseKubelet()
	t0 := time.Now()
	args = append([]string{"init", "--config", r.Config, "--skip-phases=" + strings.Join(l.skipPhases(), ",")}, args...)
	out, err = n.Command(ctx, "/usr/local/bin/kubeadm", args...).CombinedOutput()
	r.Took, r.Output = time.Since(t0), string(out)
	if err != nil {
		return r, fmt.Errorf("%s: kubeadm init: %w (kubelet log %s)\n%s", n.Name, err, filepath.Join(n.Dir, "kubelet.log"), out)
	}
	return r, nil
}

// Kubectl runs the real kubectl in n with the admin kubeconfig kubeadm wrote.
func (l *Lab) Kubectl(ctx context.Context, n *Node, args ...string) ([]byte, error) {
	return n.Run(ctx, "/usr/local/bin/kubectl", append([]string{"--kubeconfig", "/etc/kubernetes/admin.conf"}, args...)...)
}

// patchDir holds the node's kubeadm patches (kubeadm's --patches).
func (n *Node) patchDir() string { return filepath.Join(n.Dir, "patches") }

// writePatches writes the node's own kubelet settings as a kubeadm patch:
// its cgroupRoot. A setting in the cluster-wide KubeletConfiguration would
// reach every node that joins, and two kubelets sharing a cgroupRoot kill
// each other's pods as orphans (runc then fails with "can't get final
// child's PID from pipe" or "error during container init").
func (n *Node) writePatches() error {
	if err := os.MkdirAll(n.patchDir(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.patchDir(), "kubeletconfiguration+merge.yaml"),
		[]byte("cgroupRoot: "+n.CgroupRoot()+"\n"), 0o644)
}
