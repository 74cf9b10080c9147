package rbac

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vipctl/vipctl/manifests"
)

func ops(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Kind+" "+c.Op)
	}
	return out
}

func TestApplyIsIdempotentAndRepairs(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	got, err := Apply(ctx, cs.RbacV1())
	require.NoError(t, err)
	assert.Equal(t, []string{"Role created", "RoleBinding created"}, ops(got))
	got, err = Apply(ctx, cs.RbacV1())
	require.NoError(t, err)
	assert.Equal(t, []string{"Role unchanged", "RoleBinding unchanged"}, ops(got))

	// Someone widened the role and rebound it: put back.
	role, err := cs.RbacV1().Roles(manifests.RBACNamespace).Get(ctx, manifests.RBACName, metav1.GetOptions{})
	require.NoError(t, err)
	role.Rules[0].ResourceNames = nil
	_, err = cs.RbacV1().Roles(manifests.RBACNamespace).Update(ctx, role, metav1.UpdateOptions{})
	require.NoError(t, err)
	b, err := cs.RbacV1().RoleBindings(manifests.RBACNamespace).Get(ctx, manifests.RBACName, metav1.GetOptions{})
	require.NoError(t, err)
	b.Subjects = append(b.Subjects, rbacv1.Subject{Kind: "Group", Name: "system:authenticated"})
	_, err = cs.RbacV1().RoleBindings(manifests.RBACNamespace).Update(ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)
	got, err = Apply(ctx, cs.RbacV1())
	require.NoError(t, err)
	assert.Equal(t, []string{"Role updated", "RoleBinding updated"}, ops(got))
	want, wantB := manifests.DiscoveryRBAC()
	role, _ = cs.RbacV1().Roles(manifests.RBACNamespace).Get(ctx, manifests.RBACName, metav1.GetOptions{})
	assert.Equal(t, want.Rules, role.Rules)
	b, _ = cs.RbacV1().RoleBindings(manifests.RBACNamespace).Get(ctx, manifests.RBACName, metav1.GetOptions{})
	assert.Equal(t, wantB.Subjects, b.Subjects)
}
