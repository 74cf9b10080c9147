package kubeadm

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sigsyaml "sigs.k8s.io/yaml"
)

// A config.conf as kubeadm writes it into the kube-proxy ConfigMap.
const kubeadmProxyConf = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 100.64.0.0/10
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
kind: KubeProxyConfiguration
mode: ipvs # set by the installer
nodePortAddresses: null
`

func TestExcludeVIP(t *testing.T) {
	vip := netip.MustParseAddr("10.103.97.2")
	out, changed, err := ExcludeVIP(kubeadmProxyConf, vip)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Contains(t, out, "mode: ipvs # set by the installer")

	before, after := proxyConf(t, kubeadmProxyConf), proxyConf(t, out)
	assert.Equal(t, []any{"10.103.97.2/32"}, after["ipvs"].(map[string]any)["excludeCIDRs"])
	after["ipvs"].(map[string]any)["excludeCIDRs"] = nil
	assert.Equal(t, before, after, "every other field is kept")

	// Leaves the generic shape alone too: same keys as before.
	var mb, ma map[string]any
	require.NoError(t, sigsyaml.Unmarshal([]byte(kubeadmProxyConf), &mb))
	require.NoError(t, sigsyaml.Unmarshal([]byte(out), &ma))
	assert.ElementsMatch(t, keys(mb), keys(ma))

	again, changed, err := ExcludeVIP(out, vip)
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, out, again)

	other, changed, err := ExcludeVIP(out, netip.MustParseAddr("10.103.97.3"))
	require.NoError(t, err)
	assert.True(t, changed)
	o := proxyConf(t, other)
	assert.Equal(t, []any{"10.103.97.2/32", "10.103.97.3/32"}, o["ipvs"].(map[string]any)["excludeCIDRs"])
}

func TestExcludeVIPAddsIPVSSection(t *testing.T) {
	conf := "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
	out, changed, err := ExcludeVIP(conf, netip.MustParseAddr("fd00::2"))
	require.NoError(t, err)
	assert.True(t, changed)
	c := proxyConf(t, out)
	assert.Equal(t, []any{"fd00::2/128"}, c["ipvs"].(map[string]any)["excludeCIDRs"])
	assert.Equal(t, "ipvs", c["mode"])
}

func TestExcludeVIPMatchesEqualPrefix(t *testing.T) {
	conf := "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: [10.103.97.2/32]\n"
	out, changed, err := ExcludeVIP(conf, netip.MustParseAddr("10.103.97.2"))
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, conf, out)
}

func TestExcludeVIPErrors(t *testing.T) {
	vip := netip.MustParseAddr("10.103.97.2")
	for name, conf := range map[string]string{
		"wrong kind":        "apiVersion: v1\nkind: ConfigMap\n",
		"two documents":     "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
		"empty":             "",
		"not yaml":          "ipvs: [",
		"excludeCIDRs text": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: 10.0.0.0/8\n",
	} {
		t.Run(name, func(t *testing.T) {
			out, changed, err := ExcludeVIP(conf, vip)
			require.Error(t, err)
			assert.Empty(t, out)
			assert.False(t, changed)
		})
	}
	_, _, err := ExcludeVIP("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n", netip.Addr{})
	require.Error(t, err)
}

// proxyConf decodes a KubeProxyConfiguration generically: every field, as
// written.
func proxyConf(t *testing.T, y string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, sigsyaml.UnmarshalStrict([]byte(y), &m))
	require.Equal(t, "KubeProxyConfiguration", m["kind"])
	return m
}
