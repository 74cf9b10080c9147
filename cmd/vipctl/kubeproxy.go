//go:build !watchdog

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

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
		Use:     "kube-proxy",
		Short:   "Keep kube-proxy (IPVS mode) away from vipctl's virtual server in an existing cluster",
		Example: `  vipctl kube-proxy exclude --vip 10.103.97.2 --kubeconfig /etc/kubernetes/admin.conf`,
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
			client, err := newConfigMapAPI(cfg)
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

// configMaps reads and updates one ConfigMap. The watchdog shares this
// binary: a typed clientset would link every Kubernetes API group into it
// and double its size and resident memory, for two REST calls.
type configMaps interface {
	Get(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	// Update writes cm; an error wrapping errConflict means cm's
	// resourceVersion is stale.
	Update(ctx context.Context, cm *corev1.ConfigMap) error
}

var errConflict = errors.New("conflict: the object was modified meanwhile")

// configMapAPI is configMaps over the apiserver's REST API, with the
// transport (TLS, credentials) client-go builds from a kubeconfig.
type configMapAPI struct {
	host string
	hc   *http.Client
}

func newConfigMapAPI(cfg *rest.Config) (*configMapAPI, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &configMapAPI{host: strings.TrimRight(cfg.Host, "/"), hc: hc}, nil
}

func (c *configMapAPI) url(namespace, name string) string {
	return fmt.Sprintf("%s/api/v1/namespaces/%s/configmaps/%s", c.host, namespace, name)
}

func (c *configMapAPI) do(ctx context.Context, method, url string, in any, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%s %s: %w", method, url, errConflict)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Get implements configMaps.
func (c *configMapAPI) Get(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	var cm corev1.ConfigMap
	if err := c.do(ctx, http.MethodGet, c.url(namespace, name), nil, &cm); err != nil {
		return nil, err
	}
	return &cm, nil
}

// Update implements configMaps.
func (c *configMapAPI) Update(ctx context.Context, cm *corev1.ConfigMap) error {
	cm.APIVersion, cm.Kind = "v1", "ConfigMap"
	return c.do(ctx, http.MethodPut, c.url(cm.Namespace, cm.Name)+"?fieldManager=vipctl", cm, nil)
}

// excludeVIPInKubeProxy adds vip/32 to ipvs.excludeCIDRs of the kube-proxy
// ConfigMap with kubeadm.ExcludeVIP, reading again and retrying when the
// update conflicts with another writer. It returns the new config.conf and
// whether it differs; with dryRun nothing is written.
func excludeVIPInKubeProxy(ctx context.Context, client configMaps, vip netip.Addr, dryRun bool) (conf string, changed bool, err error) {
	where := kubeProxyNamespace + "/" + kubeProxyConfigMap
	const attempts = 5
	for range attempts {
		cm, err := client.Get(ctx, kubeProxyNamespace, kubeProxyConfigMap)
		if err != nil {
			return "", false, fmt.Errorf("get ConfigMap %s: %w", where, err)
		}
		old, ok := cm.Data[kubeProxyConfigKey]
		if !ok {
			return "", false, fmt.Errorf("ConfigMap %s: no key %s (is kube-proxy deployed by kubeadm?)", where, kubeProxyConfigKey)
		}
		conf, changed, err = kubeadm.ExcludeVIP(old, vip)
		if err != nil {
			return "", false, fmt.Errorf("ConfigMap %s key %s: %w", where, kubeProxyConfigKey, err)
		}
		if !changed || dryRun {
			return conf, changed, nil
		}
		cm.Data[kubeProxyConfigKey] = conf
		err = client.Update(ctx, cm)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("update ConfigMap %s: %w", where, err)
		}
		return conf, true, nil
	}
	return "", false, fmt.Errorf("update ConfigMap %s: still conflicting after %d attempts", where, attempts)
}
