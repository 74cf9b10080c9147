package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/vipctl/vipctl/e2e/vm"
	"github.com/vipctl/vipctl/kubeadm"
)

// The first master by `vipctl init` (TestClusterInit): the lab VM, whose
// kernel has IPVS, becomes the first master of a new cluster with the real
// kubeadm init driven by `vipctl init`. This host's kernel has no IPVS, so
// the host's kind-style masters cannot run vipctl init; the VM can.

// Names of the first-master VM: its share folder, its tap and its address
// on the lab bridge (the worker's, the two never run together: both take
// the lab lock and use the cluster lab's fixed names).
const (
	InitDir      = "init"
	InitSpecFile = "spec.json"
	InitTap      = "tapi"
	// InitNodeName is the VM master's hostname and node name.
	InitNodeName = "master1"
)

// InitIP is the VM master's address on the lab bridge.
var InitIP = WorkerIP

// InitSpec describes the first master to the VM (e2e/vmtests
// TestClusterInit). Paths are relative to the share's InitDir.
type InitSpec struct {
	// Node is the machine: name, address, programs, images, modules,
	// kernel config, bundle and CNI config, as the worker has them.
	// Node.Masters is this master alone (its apiserver, IP:6443).
	Node WorkerSpec `json:"node"`
	// VIP is vipctl init's --vip, IP:PORT.
	VIP string `json:"vip"`
	// KubeadmConfig is the harness's part of the kubeadm configuration,
	// given to vipctl init --config (InitBaseConfig).
	KubeadmConfig string `json:"kubeadmConfig"`
	// SkipPhases are the kubeadm init phases skipped (InitSkipPhases),
	// given after -- as --skip-phases.
	SkipPhases []string `json:"skipPhases"`
	// CareFlags are vipctl init's --care-flag (InitCareFlags).
	CareFlags []string `json:"careFlags,omitempty"`
	// JoinName and JoinMaster, when set, are a host master (its node name
	// and apiserver, IP:PORT) that joins the cluster with the real kubeadm
	// join --control-plane once this master is Ready: the VM then waits
	// for it and checks that its watchdog discovers it from the API.
	JoinName   string `json:"joinName,omitempty"`
	JoinMaster string `json:"joinMaster,omitempty"`
}

// InitCareFlags are the watchdog flags the VM master is initialised with
// (vipctl init --care-flag): under emulation a probe of the local
// apiserver (a new TLS connection, /readyz) takes more than the default
// 800 ms timeout, and the watchdog would see its own apiserver down for
// good (kept in service only by its fail-open); a user on a slow machine
// raises the timeout, and the interval with it.
var InitCareFlags = []string{"--interval=5s", "--timeout=4s"}

// WriteInitSpec writes s into dir/InitSpecFile.
func WriteInitSpec(dir string, s InitSpec) error {
	return writeSpec(filepath.Join(dir, InitSpecFile), s)
}

// ReadInitSpec reads dir/InitSpecFile.
func ReadInitSpec(dir string) (InitSpec, error) {
	var s InitSpec
	return s, readSpec(filepath.Join(dir, InitSpecFile), "init spec", &s)
}

// InitControlPlaneTimeout is kubeadm's wait for the control plane's
// components to be healthy (InitConfiguration timeouts.
// controlPlaneComponentHealthCheck, default 4m) on the VM master: under
// emulation a kube-apiserver alone takes ~47 s to be ready after etcd and
// the kubelet started, and the host's load stretches that; a user on a slow
// machine raises it the same way.
const InitControlPlaneTimeout = "10m0s"

// InitBaseConfig is the harness's part of the VM master's kubeadm
// configuration, which vipctl init merges with its own
// (controlPlaneEndpoint, certSANs, advertiseAddress...): the node's name
// and address, the CRI socket, imagePullPolicy Never (every image is
// imported beforehand and nothing may be pulled), the longer wait for the
// control plane, and the kubelet settings of a machine without systemd
// (cgroupfs; no swap check).
//
// initExtra is more of the InitConfiguration (Secrets.initConfig: a token
// and a certificate key made by the harness, which vipctl init keeps).
// failCgroupV1 false is for a host master joining later (this host has
// cgroup v1); the VM has cgroup v2.
func InitBaseConfig(name string, nodeIP netip.Addr, initExtra string) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
%[4]snodeRegistration:
  name: %[1]s
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: Never
  kubeletExtraArgs:
    - name: node-ip
      value: %[2]s
timeouts:
  controlPlaneComponentHealthCheck: %[3]s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
`, name, nodeIP, InitControlPlaneTimeout, initExtra)
}

// InitVM is one boot of the VM as the cluster's first master.
type InitVM struct {
	Assets vm.Assets
	// Root is the module root; Cache the project's cache folder.
	Root, Cache string
	// VIP is vipctl init's --vip.
	VIP netip.AddrPort
	// TestArgs are the in-VM test binary's flags; Env its environment
	// (VIPCTL_E2E_CLUSTER_INIT=1 is always set).
	TestArgs []string
	Env      map[string]string
	Console  io.Writer
	// Memory of the VM; default 6G (etcd, the control plane, containerd's
	// images and the programs all live in the VM's RAM).
	Memory string
	Log    io.Writer
	// Join, when set, is the host master that joins the VM's cluster
	// (JoinVMCluster) with Secrets, which kubeadm init is given.
	Join    *Node
	Secrets *Secrets
}

// RunInitVM installs the first master on its disk (the node's programs
// and init system: writeMachine), builds its share (the images, kubeadm's
// control-plane images included, the offline bundle, the spec) and boots
// the VM on the lab bridge, under the lab lock. It returns the in-VM
// scenario's exit code, as vm.Run does.
func (l *Lab) RunInitVM(ctx context.Context, v InitVM) (int, error) {
	return l.bootVM(ctx, vmBoot{Assets: v.Assets, Root: v.Root, Dir: InitDir, TestArgs: v.TestArgs, Env: withEnv("VIPCTL_E2E_CLUSTER_INIT", v.Env),
		Console: v.Console, Memory: orDefault(v.Memory, "6G"), Tap: InitTap}, func(dir, machine string) error { return l.writeInitShare(ctx, dir, machine, v) })
}

// writeInitShare fills dir with what the first master needs (see InitSpec)
// and installs the node in machine, the disk's future / (writeMachine).
func (l *Lab) writeInitShare(ctx context.Context, dir, machine string, v InitVM) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	s := InitSpec{Node: vmNodeSpec(InitNodeName), VIP: v.VIP.String(), KubeadmConfig: "kubeadm-base.yaml",
		SkipPhases: l.skipPhases(), CareFlags: InitCareFlags}
	s.Node.Masters = []string{netip.AddrPortFrom(InitIP, 6443).String()}
	extra := ""
	if v.Join != nil {
		s.JoinName, s.JoinMaster = v.Join.Name, netip.AddrPortFrom(v.Join.IP, 6443).String()
		var err error
		if extra, err = v.Secrets.initConfig(); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, s.KubeadmConfig), []byte(InitBaseConfig(InitNodeName, InitIP, extra)), 0o600); err != nil {
		return err
	}
	if err := l.writeVMNode(ctx, dir, vmNode{Assets: v.Assets, Root: v.Root, Cache: v.Cache, Log: v.Log, Modules: l.vmModules(),
		PodCIDR: PodCIDR(50), Image: l.controlPlaneImage, Machine: machine}, &s.Node); err != nil {
		return err
	}
	s.Node.KubeProxyMode = l.KubeProxyMode
	return WriteInitSpec(dir, s)
}

// controlPlaneImage reports whether a VM master gets the lab's image ref:
// every control-plane image; kube-proxy's only when its phase runs.
func (l *Lab) controlPlaneImage(ref string) bool {
	return !strings.Contains(ref, "/kube-proxy:") || l.KubeProxyMode != ""
}

// InitCheckedLabel is the label the VM puts on its node (value "true") when
// its checks are done and the host master may join (the bootstrap token
// may read nodes, and the host has no other way to hear from the VM).
const InitCheckedLabel = "e2e.vipctl.io/init-checked"

// JoinVMCluster makes n a master of the VM master's cluster with the real
// `kubeadm join --control-plane` once the VM's checks are done (its node
// has InitCheckedLabel). n cannot run
// vipctl (this host has no IPVS), so the harness plays vipctl's part: n's
// /etc/hosts maps the name to the VM master's address, not to a VIP. The
// CA's discovery hash is the one of cluster-info's CA (what kubeadm init
// printed in the VM), read anonymously as kubeadm's discovery reads it; the
// bootstrap token of s reads the VM's node.
func (l *Lab) JoinVMCluster(ctx context.Context, n *Node, s Secrets) (time.Duration, error) {
	// The bootstrap token's kubeconfig: it may read the nodes.
	kc := filepath.Join(n.Dir, "bootstrap.conf")
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: vm
  cluster:
    server: https://%s
    insecure-skip-tls-verify: true
users:
- name: bootstrap
  user:
    token: %s
contexts:
- name: vm
  context: {cluster: vm, user: bootstrap}
current-context: vm
`, netip.AddrPortFrom(InitIP, 6443), s.Token)
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return 0, err
	}
	if err := os.WriteFile(kc, []byte(conf), 0o600); err != nil {
		return 0, err
	}
	kubectl := func(conf string, args ...string) (string, error) {
		out, err := n.Run(ctx, "/usr/local/bin/kubectl", append([]string{"--kubeconfig", conf, "--request-timeout", "10s"}, args...)...)
		return string(out), err
	}
	tk := time.NewTicker(3 * time.Second)
	defer tk.Stop()
	for {
		out, err := kubectl(kc, "get", "node", InitNodeName, "-o", "jsonpath={.metadata.labels."+strings.ReplaceAll(InitCheckedLabel, ".", `\.`)+"}")
		if err == nil && strings.TrimSpace(out) == "true" {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s: waiting for the VM master %s's checks (label %s): %w", n.Name, InitNodeName, InitCheckedLabel, ctx.Err())
		case <-tk.C:
		}
	}
	// cluster-info is readable anonymously (not by the token's user); kubectl
	// without credentials asks for a user name, curl does not.
	raw, err := n.Run(ctx, "curl", "-sfk", "--max-time", "10", "https://"+netip.AddrPortFrom(InitIP, 6443).String()+"/api/v1/namespaces/kube-public/configmaps/cluster-info")
	if err != nil {
		return 0, fmt.Errorf("cluster-info: %w", err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(raw, &cm); err != nil {
		return 0, fmt.Errorf("cluster-info: %w", err)
	}
	out := cm.Data["kubeconfig"]
	ci, err := clientcmd.Load([]byte(out))
	if err != nil {
		return 0, fmt.Errorf("cluster-info's kubeconfig: %w", err)
	}
	var hash string
	for _, c := range ci.Clusters {
		if hash, err = kubeadm.CAHash(c.CertificateAuthorityData); err != nil {
			return 0, fmt.Errorf("cluster-info's CA: %w", err)
		}
	}
	if hash == "" {
		return 0, errors.New("cluster-info: no cluster")
	}
	l.logf("cluster: the VM master's checks are done; %s joins with CA hash %s", n.Name, hash)
	return l.JoinControlPlaneAt(ctx, n, InitIP, hash, s)
}
