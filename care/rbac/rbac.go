// Package rbac applies the watchdog's grant (manifests.DiscoveryRBAC) to a
// cluster: create, or update what differs, so applying it again changes
// nothing.
package rbac

import (
	"context"
	"fmt"
	"reflect"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"

	"github.com/vipctl/vipctl/manifests"
)

// Change is what Apply did to one object: "created", "updated" or
// "unchanged".
type Change struct {
	Kind, Namespace, Name, Op string
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s/%s %s", c.Kind, c.Namespace, c.Name, c.Op)
}

// Apply creates or updates the Role and RoleBinding that let the nodes
// discover the masters.
func Apply(ctx context.Context, c rbacclient.RbacV1Interface) ([]Change, error) {
	role, binding := manifests.DiscoveryRBAC()
	var out []Change
	roles := c.Roles(role.Namespace)
	cur, err := roles.Get(ctx, role.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := roles.Create(ctx, role, metav1.CreateOptions{}); err != nil {
			return out, fmt.Errorf("create Role %s/%s: %w", role.Namespace, role.Name, err)
		}
		out = append(out, Change{"Role", role.Namespace, role.Name, "created"})
	case err != nil:
		return out, fmt.Errorf("get Role %s/%s: %w", role.Namespace, role.Name, err)
	case reflect.DeepEqual(cur.Rules, role.Rules) && labelsHave(cur.Labels, role.Labels):
		out = append(out, Change{"Role", role.Namespace, role.Name, "unchanged"})
	default:
		cur.Rules = role.Rules
		cur.Labels = merge(cur.Labels, role.Labels)
		if _, err := roles.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return out, fmt.Errorf("update Role %s/%s: %w", role.Namespace, role.Name, err)
		}
		out = append(out, Change{"Role", role.Namespace, role.Name, "updated"})
	}
	bindings := c.RoleBindings(binding.Namespace)
	cb, err := bindings.Get(ctx, binding.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := bindings.Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return out, fmt.Errorf("create RoleBinding %s/%s: %w", binding.Namespace, binding.Name, err)
		}
		out = append(out, Change{"RoleBinding", binding.Namespace, binding.Name, "created"})
	case err != nil:
		return out, fmt.Errorf("get RoleBinding %s/%s: %w", binding.Namespace, binding.Name, err)
	case cb.RoleRef != binding.RoleRef:
		// The role a binding refers to cannot change: replace it.
		if err := bindings.Delete(ctx, binding.Name, metav1.DeleteOptions{}); err != nil {
			return out, fmt.Errorf("replace RoleBinding %s/%s: %w", binding.Namespace, binding.Name, err)
		}
		if _, err := bindings.Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return out, fmt.Errorf("replace RoleBinding %s/%s: %w", binding.Namespace, binding.Name, err)
		}
		out = append(out, Change{"RoleBinding", binding.Namespace, binding.Name, "updated"})
	case reflect.DeepEqual(cb.Subjects, binding.Subjects) && labelsHave(cb.Labels, binding.Labels):
		out = append(out, Change{"RoleBinding", binding.Namespace, binding.Name, "unchanged"})
	default:
		cb.Subjects = binding.Subjects
		cb.Labels = merge(cb.Labels, binding.Labels)
		if _, err := bindings.Update(ctx, cb, metav1.UpdateOptions{}); err != nil {
			return out, fmt.Errorf("update RoleBinding %s/%s: %w", binding.Namespace, binding.Name, err)
		}
		out = append(out, Change{"RoleBinding", binding.Namespace, binding.Name, "updated"})
	}
	return out, nil
}

func labelsHave(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func merge(have, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}
