package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// A master by `vipctl join --control-plane` (TestClusterMasterJoin): the
// host's kind-style masters make the cluster (real kubeadm init and join,
// as for the worker), and the lab VM, whose kernel has IPVS, joins it as a
// third master with `vipctl join --control-plane` driving the real
// `kubeadm join --control-plane`. The host's two etcd members keep the
// quorum on fast machines; the VM's etcd is the learner that joins them.

// Names of the joining master VM: its share folder, its tap and its node
// name. Its address is WorkerIP (the VM scenarios never run together: each
// takes the lab lock and uses the cluster lab's fixed names).
const (
	MasterJoinDir  = "cpjoin"
	MasterJoinTap  = "tapj"
	MasterJoinName = "master3"
	// MasterJoinSpecFile is the spec's name in MasterJoinDir.
	MasterJoinSpecFile = "spec.json"
)

// MasterJoinSpec describes the joining master to the VM (e2e/vmtests
// TestClusterMasterJoin). Paths are relative to the share's MasterJoinDir.
type MasterJoinSpec struct {
	// Node is the machine and the join's inputs, as the worker has them:
	// Node.Masters are the host masters, Node.TokenFile the bootstrap
	// token (0600), Node.CACertHash the CA's discovery hash,
	// Node.FaultMaster the master the host's kill fault hits.
	Node WorkerSpec `json:"node"`
	// CertKeyFile holds the certificate key the host masters uploaded the
	// control-plane certificates under (0600): --certificate-key-file.
	CertKeyFile string `json:"certKeyFile"`
	// JoinConfig is the harness's part of the JoinConfiguration
	// (MasterJoinBaseConfig), given to vipctl join --config.
	JoinConfig string `json:"joinConfig"`
	// CareFlags are vipctl join's --care-flag (MasterJoinCareFlags).
	CareFlags []string `json:"careFlags,omitempty"`
}

// WriteMasterJoinSpec writes s into dir/MasterJoinSpecFile.
func WriteMasterJoinSpec(dir string, s MasterJoinSpec) error {
	return writeSpec(filepath.Join(dir, MasterJoinSpecFile), s)
}

// ReadMasterJoinSpec reads dir/MasterJoinSpecFile.
func ReadMasterJoinSpec(dir string) (MasterJoinSpec, error) {
	var s MasterJoinSpec
	return s, readSpec(filepath.Join(dir, MasterJoinSpecFile), "master join spec", &s)
}

// MasterJoinCareFlags are the watchdog flags the VM master joins with
// (vipctl join --care-flag). The first master's (InitCareFlags, a 4 s
// probe timeout) were not enough here: the joining master's own apiserver,
// under emulation beside its etcd catching up with the host members,
// answered /readyz in more than 4 s for minutes on end (the first run:
// 25 probes in a row timed out, the host masters' answered in under
// 200 ms), and the watchdog kept it out. A user on a slow machine raises
// the bound, and the interval with it.
var MasterJoinCareFlags = []string{"--interval=10s", "--timeout=9s"}

// MasterJoinBaseConfig is the harness's part of the joining master's
// JoinConfiguration, which vipctl join completes (the endpoint, the
// secrets from their files, the CA hash, the controlPlane section): the
// node's name, the CRI socket, imagePullPolicy Never (every image is
// imported beforehand and nothing may be pulled) and the longer wait for
// the control plane's components (InitControlPlaneTimeout: under
// emulation a kube-apiserver takes minutes to be healthy), and the longer
// wait for etcd (etcdAPICall, default 2m, which also bounds kubeadm's wait
// for its new member to start before promoting it: in the second run, on
// a loaded host, the VM's etcd had not started within 2m and kubeadm
// failed with "the etcd member ... is not started"). The kubelet's
// settings come from the cluster (its KubeletConfiguration: cgroupfs, no
// swap check), as for any node that joins.
func MasterJoinBaseConfig(name string) string {
	return fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  name: %s
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: Never
timeouts:
  controlPlaneComponentHealthCheck: %[2]s
  etcdAPICall: %[2]s
`, name, InitControlPlaneTimeout)
}

// RunMasterJoinVM installs the joining master on its disk (the node's
// programs and init system: writeMachine), builds its share (every
// control-plane image, the offline bundle, the join's secrets in 0600
// files, the spec) and boots the VM on the lab bridge, under the lab lock.
// v.FaultMaster is the master the host's kill fault hits;
// VIPCTL_E2E_CLUSTER_CPJOIN=1 is always in the VM's environment, and the
// VM gets 6G unless v.Memory says otherwise (containerd's images and the
// page cache of the disk etcd writes). It returns the in-VM scenario's
// exit code, as vm.Run does.
func (l *Lab) RunMasterJoinVM(ctx context.Context, v WorkerVM) (int, error) {
	return l.bootVM(ctx, vmBoot{Assets: v.Assets, Root: v.Root, Dir: MasterJoinDir, TestArgs: v.TestArgs,
		Env: withEnv("VIPCTL_E2E_CLUSTER_CPJOIN", v.Env), Console: v.Console, Memory: orDefault(v.Memory, "6G"), Tap: MasterJoinTap},
		func(dir, machine string) error { return l.writeMasterJoinShare(ctx, dir, machine, v) })
}

// writeMasterJoinShare fills dir with what the joining master needs (see
// MasterJoinSpec), and installs the node in machine, the disk's future /
// (writeMachine).
func (l *Lab) writeMasterJoinShare(ctx context.Context, dir, machine string, v WorkerVM) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	s := MasterJoinSpec{Node: vmNodeSpec(MasterJoinName), CertKeyFile: "certificate-key", JoinConfig: "join-base.yaml", CareFlags: MasterJoinCareFlags}
	if err := writeJoinInputs(dir, &s.Node, v.First, v.Masters, v.FaultMaster, v.Secrets); err != nil {
		return err
	}
	key, err := os.ReadFile(v.Secrets.CertKeyFile)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, s.CertKeyFile), key, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, s.JoinConfig), []byte(MasterJoinBaseConfig(MasterJoinName)), 0o600); err != nil {
		return err
	}
	if err := l.writeVMNode(ctx, dir, vmNode{Assets: v.Assets, Root: v.Root, Cache: v.Cache, Log: v.Log, Modules: l.vmModules(),
		PodCIDR: PodCIDR(50), Image: l.controlPlaneImage, Machine: machine}, &s.Node); err != nil {
		return err
	}
	return WriteMasterJoinSpec(dir, s)
}
