package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/vipctl/vipctl/kubeadm"
)

// The kube-proxy ConfigMap kubeadm writes.
const (
	kubeProxyNamespace = "kube-system"
	kubeProxyConfigMap = "kube-proxy"
	kubeProxyConfigKey = "config.conf"
	// defaultKubeconfig is kubeadm's admin kubeconfig on a master.
	defaultKubeconfig = "/etc/kubernetes/admin.conf"
)

func newKubeProxyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kube-proxy",
		Short: "Keep kube-proxy (IPVS mode) away from vipctl's virtual server in an existing cluster",
	}
	cmd.AddCommand(newKubeProxyExcludeCmd(a))
	return cmd
}

func newKubeProxyExcludeCmd(a *app) *cobra.Command {
	var (
		vip, kubeconfig string
		dryRun          bool
		timeout         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "exclude --vip IP [--kubeconfig FILE]",
		Short: "Add VIP/32 to ipvs.excludeCIDRs of the kube-system/kube-proxy ConfigMap",
		Long: `Add VIP/32 (/128 for IPv6) to ipvs.excludeCIDRs in the config.conf key of the
kube-system/kube-proxy ConfigMap, keeping every other field and comment. In
IPVS mode kube-proxy deletes every virtual server it did not create, except
those in excludeCIDRs: without this it deletes vipctl's (the watchdog puts it
back, but connections through the VIP break meanwhile). Nothing is written when
the VIP is already excluded.

Then restart kube-proxy so that it reads the change:
"kubectl -n kube-system rollout restart daemonset kube-proxy". Clusters set up
with "vipctl kubeadm config" have the VIP excluded from the start.`,
		Example: `  vipctl kube-proxy exclude --vip 10.103.97.2 --kubeconfig /etc/kubernetes/admin.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := parseVIP(vip)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			if kubeconfig == "" {
				return errors.New("--kubeconfig: empty (or set KUBECONFIG)")
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
			}
			cfg.Timeout = timeout
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			conf, changed, err := excludeVIPInKubeProxy(ctx, client, v.Addr(), dryRun)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			where := kubeProxyNamespace + "/" + kubeProxyConfigMap
			switch {
			case !changed:
				_, err = fmt.Fprintf(out, "%s already excludes %s: not changed\n", where, v.Addr())
			case dryRun:
				_, err = fmt.Fprintf(out, "would update %s key %s to:\n%s", where, kubeProxyConfigKey, conf)
			default:
				a.log.Info("kube-proxy configuration updated", zap.String("configMap", where), zap.Stringer("vip", v.Addr()))
				_, err = fmt.Fprintf(out, "added %s to ipvs.excludeCIDRs of %s; restart kube-proxy to apply it: kubectl -n %s rollout restart daemonset kube-proxy\n",
					hostCIDR(v.Addr()), where, kubeProxyNamespace)
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&vip, "vip", DefaultVIP, "the VIP, IP[:PORT] (the port is ignored)")
	fs.StringVar(&kubeconfig, "kubeconfig", kubeconfigDefault(), "kubeconfig with the right to update ConfigMaps in kube-system")
	fs.BoolVar(&dryRun, "dry-run", false, "print the new configuration, and change nothing")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "bound of the whole operation")
	return cmd
}

func kubeconfigDefault() string {
	if v := os.Getenv("KUBECONFIG"); v != "" {
		return v
	}
	return defaultKubeconfig
}

func hostCIDR(a netip.Addr) string {
	return netip.PrefixFrom(a, a.BitLen()).String()
}

// excludeVIPInKubeProxy adds vip/32 to ipvs.excludeCIDRs of the kube-proxy
// ConfigMap with kubeadm.ExcludeVIP, retrying on a conflicting update. It
// returns the new config.conf and whether it differs; with dryRun nothing is
// written.
func excludeVIPInKubeProxy(ctx context.Context, client kubernetes.Interface, vip netip.Addr, dryRun bool) (conf string, changed bool, err error) {
	cms := client.CoreV1().ConfigMaps(kubeProxyNamespace)
	where := kubeProxyNamespace + "/" + kubeProxyConfigMap
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, kubeProxyConfigMap, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get ConfigMap %s: %w", where, err)
		}
		old, ok := cm.Data[kubeProxyConfigKey]
		if !ok {
			return fmt.Errorf("ConfigMap %s: no key %s (is kube-proxy deployed by kubeadm?)", where, kubeProxyConfigKey)
		}
		conf, changed, err = kubeadm.ExcludeVIP(old, vip)
		if err != nil {
			return fmt.Errorf("ConfigMap %s key %s: %w", where, kubeProxyConfigKey, err)
		}
		if !changed || dryRun {
			return nil
		}
		cm = cm.DeepCopy()
		cm.Data[kubeProxyConfigKey] = conf
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: "vipctl"}); err != nil {
			return fmt.Errorf("update ConfigMap %s: %w", where, err)
		}
		return nil
	})
	return conf, changed, err
}
