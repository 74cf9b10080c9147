// Package cluster is the harness of the real-cluster e2e (issue 13, see
// docs/lab.md): Kubernetes nodes kind-style on this host, each a network +
// mount + UTS namespace with its own containerd (Debian's, with runc) and a
// real kubelet, made masters by the real kubeadm.
//
//	netns vipctl-cl:  br0 10.31.0.1/24, no way out
//	  └─ nI ── node I: netns vipctl-cl-<name>, eth0 10.31.0.(10+I)/24;
//	           /etc /var /usr /opt overlaid (what kubeadm, the kubelet and
//	           etcd write stays in the node's folder), /run a tmpfs,
//	           /var/lib/containerd its own; kubelet cgroupRoot /vipctl-cl-<name>
//
// The harness builds what it needs (FindBinaries, FetchDebs, KubeadmImages,
// WriteImages), imports the images into each node's containerd, renders the
// kubeadm config with `vipctl kubeadm config` and runs `kubeadm init` and
// `kubeadm join --control-plane` in the nodes (Lab.Init,
// Lab.JoinControlPlane: the seams where `vipctl init` and `vipctl join`
// go). It plays one part itself: systemd's kubelet service
// (Node.SuperviseKubelet). Lab.Close removes every process, namespace and
// cgroup and puts back the host sysctls the kubelet rewrites.
//
// Everything needs root, iproute2, util-linux (nsenter, unshare),
// containerd, ctr and runc. The tests are opt-in: VIPCTL_CLUSTER=1.
package cluster
