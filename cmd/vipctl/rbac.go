//go:build !watchdog

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vipctl/vipctl/care/rbac"
	"github.com/vipctl/vipctl/manifests"
)

func newRBACCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rbac",
		Short: "Grant the nodes' watchdogs what master discovery needs",
	}
	cmd.AddCommand(newRBACApplyCmd(a))
	return cmd
}

func newRBACApplyCmd(a *app) *cobra.Command {
	var (
		kubeconfig string
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply [--kubeconfig FILE]",
		Short: "Create or update the Role and RoleBinding " + manifests.RBACName + " in namespace " + manifests.RBACNamespace,
		Long: `The watchdog on every node discovers the masters from the kubernetes Service's
EndpointSlice (default/kubernetes) with the kubelet's identity (group
system:nodes), which Kubernetes does not let read it. apply grants exactly
that: get, list and watch on the EndpointSlice named kubernetes in namespace
default, for group system:nodes (Role and RoleBinding ` + manifests.RBACName + `).
It creates them, or puts back what differs; run again, it changes nothing.
'vipctl init' runs it on a new cluster; run it once on an existing one.`,
		Example: `  vipctl rbac apply --kubeconfig /etc/kubernetes/admin.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			if kubeconfig == "" {
				return errors.New("--kubeconfig: empty (or set KUBECONFIG)")
			}
			return applyRBAC(cmd.Context(), a, cmd.OutOrStdout(), kubeconfig, timeout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&kubeconfig, "kubeconfig", kubeconfigDefault(), "kubeconfig with the right to manage Roles in namespace "+manifests.RBACNamespace+" (kubeadm's admin.conf)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "bound of the whole operation")
	return cmd
}

// applyRBAC applies the nodes' discovery grant with kubeconfig, printing
// each object's fate to out.
func applyRBAC(ctx context.Context, a *app, out io.Writer, kubeconfig string, timeout time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
	}
	cfg.Timeout = timeout
	c, err := rbacclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	changes, err := rbac.Apply(ctx, c)
	for _, ch := range changes {
		a.log.Info("rbac", zap.String("kind", ch.Kind), zap.String("object", ch.Namespace+"/"+ch.Name), zap.String("op", ch.Op))
		fmt.Fprintln(out, ch)
	}
	return err
}
