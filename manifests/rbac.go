package manifests

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RBAC names: the grant that lets every node's watchdog discover the
// masters (package care/discovery) with the kubelet's identity.
const (
	// RBACName names the Role and its RoleBinding.
	RBACName = "vipctl:endpointslice-reader"
	// RBACNamespace is where the kubernetes Service's EndpointSlice is.
	RBACNamespace = "default"
	// NodesGroup is the group of every kubelet's client certificate.
	NodesGroup = "system:nodes"
)

// DiscoveryRBAC returns the narrowest grant discovery needs: get, list and
// watch on the one EndpointSlice named kubernetes in namespace default, for
// group system:nodes. A Role in that namespace, not a ClusterRole: a
// ClusterRole with resourceNames [kubernetes] would also grant any slice of
// that name in every other namespace. The Node authorizer and the
// system:node role give nodes no EndpointSlice access (checked against a
// real kube-apiserver in e2e/realcp); list and watch with resourceNames are
// authorized only with the field selector metadata.name=kubernetes, which
// discovery uses.
func DiscoveryRBAC() (*rbacv1.Role, *rbacv1.RoleBinding) {
	labels := map[string]string{"app.kubernetes.io/part-of": "vipctl", "app.kubernetes.io/component": "care"}
	meta := metav1.ObjectMeta{Name: RBACName, Namespace: RBACNamespace, Labels: labels}
	role := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: meta,
		Rules: []rbacv1.PolicyRule{{
			APIGroups:     []string{"discovery.k8s.io"},
			Resources:     []string{"endpointslices"},
			ResourceNames: []string{"kubernetes"},
			Verbs:         []string{"get", "list", "watch"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: RBACName},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: NodesGroup}},
	}
	return role, binding
}
