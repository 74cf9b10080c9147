package main

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// kubeadmProxyConf is the config.conf kubeadm writes (shortened), with a
// comment and fields vipctl must keep.
const kubeadmProxyConf = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
clusterCIDR: 10.244.0.0/16
# set by the admin
mode: ipvs
ipvs:
  excludeCIDRs:
  - 192.0.2.0/24
  scheduler: rr
  strictARP: true
`

func proxyConfigMap(conf string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy", Namespace: "kube-system", ResourceVersion: "7"},
		Data:       map[string]string{"config.conf": conf, "kubeconfig.conf": "apiVersion: v1\nkind: Config\n"},
	}
}

func updates(c *fake.Clientset) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == "update" {
			n++
		}
	}
	return n
}

func TestKubeProxyExcludeAddsTheVIP(t *testing.T) {
	c := fake.NewClientset(proxyConfigMap(kubeadmProxyConf))
	vip := netip.MustParseAddr("10.103.97.2")
	conf, changed, err := excludeVIPInKubeProxy(context.Background(), c, vip, false)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 1, updates(c))

	cm, err := c.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "kube-proxy", metav1.GetOptions{})
	require.NoError(t, err)
	got := cm.Data["config.conf"]
	assert.Equal(t, conf, got)
	assert.Regexp(t, `\n\s+- 192\.0\.2\.0/24\n\s+- 10\.103\.97\.2/32\n`, got, "appended to the existing list")
	for _, keep := range []string{"# set by the admin", "clusterCIDR: 10.244.0.0/16", "strictARP: true", "scheduler: rr", "bindAddress: 0.0.0.0"} {
		assert.Contains(t, got, keep, "every other field and comment is kept")
	}
	assert.Equal(t, "apiVersion: v1\nkind: Config\n", cm.Data["kubeconfig.conf"], "the other key is untouched")

	// Again: already there, nothing written.
	_, changed, err = excludeVIPInKubeProxy(context.Background(), c, vip, false)
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, 1, updates(c), "no second update")
}

func TestKubeProxyExcludeDryRunWritesNothing(t *testing.T) {
	c := fake.NewClientset(proxyConfigMap(kubeadmProxyConf))
	conf, changed, err := excludeVIPInKubeProxy(context.Background(), c, netip.MustParseAddr("10.103.97.2"), true)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Contains(t, conf, "10.103.97.2/32")
	assert.Equal(t, 0, updates(c))
}

func TestKubeProxyExcludeRetriesOnConflict(t *testing.T) {
	c := fake.NewClientset(proxyConfigMap(kubeadmProxyConf))
	conflicts := 1
	c.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "kube-proxy", assert.AnError)
		}
		return false, nil, nil
	})
	_, changed, err := excludeVIPInKubeProxy(context.Background(), c, netip.MustParseAddr("10.103.97.2"), false)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 2, updates(c), "read again and retried after the conflict")
	cm, err := c.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "kube-proxy", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, cm.Data["config.conf"], "10.103.97.2/32")
}

func TestKubeProxyExcludeErrors(t *testing.T) {
	vip := netip.MustParseAddr("10.103.97.2")
	_, _, err := excludeVIPInKubeProxy(context.Background(), fake.NewClientset(), vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "get ConfigMap kube-system/kube-proxy")

	cm := proxyConfigMap("")
	delete(cm.Data, "config.conf")
	_, _, err = excludeVIPInKubeProxy(context.Background(), fake.NewClientset(cm), vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no key config.conf")

	c := fake.NewClientset(proxyConfigMap("apiVersion: v1\nkind: Pod\n"))
	_, _, err = excludeVIPInKubeProxy(context.Background(), c, vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "KubeProxyConfiguration")
	assert.Equal(t, 0, updates(c))
}

func TestKubeProxyExcludeCmdBadInput(t *testing.T) {
	_, err := runAppCmd(t, newKubeProxyCmd, "exclude", "--vip", "nope", "--kubeconfig", "/nonexistent")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--vip "nope"`)
	_, err = runAppCmd(t, newKubeProxyCmd, "exclude", "--kubeconfig", "/nonexistent/kubeconfig")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--kubeconfig "/nonexistent/kubeconfig"`)
}
