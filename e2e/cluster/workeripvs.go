package cluster

// kubeProxyIPVSModules are the modules kube-proxy's ipvs mode needs beyond
// those of its nftables mode (kubeProxyModules): IPVS and its schedulers,
// the ipset types it keeps its sets in, and the x_tables matches and
// targets of its iptables rules, which Debian's iptables (the nft backend)
// runs through nft_compat. Installed on the worker's disk like the others
// (vmModules), where the kernel and kube-proxy's modprobe load them.
var kubeProxyIPVSModules = []string{"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh",
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport", "ip_set_hash_ipportip", "ip_set_hash_ipportnet",
	"ip_set_hash_net", "ip_set_bitmap_port", "xt_set", "nft_compat", "xt_comment", "xt_mark",
	"xt_conntrack", "xt_addrtype", "xt_MASQUERADE", "xt_nat", "xt_multiport", "xt_tcpudp",
	"ipt_REJECT", "ip6t_REJECT"}

// KubeProxyOffMasters is the patch that keeps kube-proxy's DaemonSet off
// the control-plane nodes: the host masters' kernel has no IPVS, so its
// ipvs mode runs on the VM worker only.
const KubeProxyOffMasters = `{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":` +
	`{"nodeSelectorTerms":[{"matchExpressions":[{"key":"node-role.kubernetes.io/control-plane","operator":"DoesNotExist"}]}]}}}}}}}`
