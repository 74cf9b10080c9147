package kubeadm

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// kubeadm's own API types live in k8s.io/kubernetes/cmd/kubeadm/app/apis,
// which cannot be imported from another module (k8s.io/kubernetes is not
// meant to be a library and its go.mod replaces every staging module). These
// are minimal typed copies of the fields vipctl emits; their JSON names and
// shapes are the same in kubeadm.k8s.io/v1beta3 and v1beta4. The test
// against the real `kubeadm config validate` (see scripts/build-kubeadm.sh)
// keeps them honest.

// Group is the kubeadm configuration API group.
const Group = "kubeadm.k8s.io"

// Supported kubeadm API versions.
const (
	V1Beta4 = "v1beta4"
	V1Beta3 = "v1beta3"
)

// ClusterConfiguration holds the cluster-wide fields vipctl sets.
type ClusterConfiguration struct {
	metav1.TypeMeta      `json:",inline"`
	KubernetesVersion    string     `json:"kubernetesVersion,omitempty"`
	ControlPlaneEndpoint string     `json:"controlPlaneEndpoint,omitempty"`
	ImageRepository      string     `json:"imageRepository,omitempty"`
	Networking           Networking `json:"networking,omitzero"`
	APIServer            APIServer  `json:"apiServer,omitzero"`
	// FeatureGates are kubeadm's feature gates; vipctl sets only
	// ControlPlaneKubeletLocalMode (see Merge).
	FeatureGates map[string]bool `json:"featureGates,omitempty"`
}

// Networking holds the cluster's subnets; each may be a comma-separated
// dual-stack list.
type Networking struct {
	PodSubnet     string `json:"podSubnet,omitempty"`
	ServiceSubnet string `json:"serviceSubnet,omitempty"`
}

// APIServer holds the kube-apiserver fields vipctl sets.
type APIServer struct {
	CertSANs []string `json:"certSANs,omitempty"`
}

// InitConfiguration holds the node-local fields of `kubeadm init`.
type InitConfiguration struct {
	metav1.TypeMeta  `json:",inline"`
	LocalAPIEndpoint APIEndpoint `json:"localAPIEndpoint,omitzero"`
}

// APIEndpoint is where this node's kube-apiserver listens.
type APIEndpoint struct {
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
	BindPort         int32  `json:"bindPort,omitempty"`
}
