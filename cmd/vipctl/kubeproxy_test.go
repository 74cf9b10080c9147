//go:build !watchdog

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
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

// fakeAPIServer serves one ConfigMap over the REST API like an apiserver:
// GET returns it, PUT replaces it when the resourceVersion matches (409
// otherwise) and bumps the version. conflicts makes that many PUTs fail
// with 409 first, as if another writer got there before.
type fakeAPIServer struct {
	mu        sync.Mutex
	cm        *corev1.ConfigMap
	puts      int
	conflicts int
	srv       *httptest.Server
}

func newFakeAPIServer(t *testing.T, cm *corev1.ConfigMap) *fakeAPIServer {
	f := &fakeAPIServer{cm: cm}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/api/v1/namespaces/kube-system/configmaps/kube-proxy" || f.cm == nil {
		http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodGet:
		json.NewEncoder(w).Encode(f.cm)
	case http.MethodPut:
		f.puts++
		var in corev1.ConfigMap
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if f.conflicts > 0 || in.ResourceVersion != f.cm.ResourceVersion {
			if f.conflicts > 0 {
				f.conflicts--
				f.cm.ResourceVersion += "1" // someone else wrote it
			}
			http.Error(w, `{"kind":"Status","reason":"Conflict"}`, http.StatusConflict)
			return
		}
		in.ResourceVersion = f.cm.ResourceVersion + "1"
		f.cm = &in
		json.NewEncoder(w).Encode(f.cm)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

func (f *fakeAPIServer) client(t *testing.T) configMaps {
	t.Helper()
	c, err := newConfigMapAPI(&rest.Config{Host: f.srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	require.NoError(t, err)
	return c
}

func (f *fakeAPIServer) state() (*corev1.ConfigMap, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cm.DeepCopy(), f.puts
}

func TestKubeProxyExcludeAddsTheVIP(t *testing.T) {
	f := newFakeAPIServer(t, proxyConfigMap(kubeadmProxyConf))
	vip := netip.MustParseAddr("10.103.97.2")
	conf, changed, err := excludeVIPInKubeProxy(context.Background(), f.client(t), vip, false)
	require.NoError(t, err)
	assert.True(t, changed)
	cm, puts := f.state()
	assert.Equal(t, 1, puts)
	got := cm.Data["config.conf"]
	assert.Equal(t, conf, got)
	assert.Regexp(t, `\n\s+- 192\.0\.2\.0/24\n\s+- 10\.103\.97\.2/32\n`, got, "appended to the existing list")
	for _, keep := range []string{"# set by the admin", "clusterCIDR: 10.244.0.0/16", "strictARP: true", "scheduler: rr", "bindAddress: 0.0.0.0"} {
		assert.Contains(t, got, keep, "every other field and comment is kept")
	}
	assert.Equal(t, "apiVersion: v1\nkind: Config\n", cm.Data["kubeconfig.conf"], "the other key is untouched")

	// Again: already there, nothing written.
	_, changed, err = excludeVIPInKubeProxy(context.Background(), f.client(t), vip, false)
	require.NoError(t, err)
	assert.False(t, changed)
	_, puts = f.state()
	assert.Equal(t, 1, puts, "no second update")
}

func TestKubeProxyExcludeDryRunWritesNothing(t *testing.T) {
	f := newFakeAPIServer(t, proxyConfigMap(kubeadmProxyConf))
	conf, changed, err := excludeVIPInKubeProxy(context.Background(), f.client(t), netip.MustParseAddr("10.103.97.2"), true)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Contains(t, conf, "10.103.97.2/32")
	_, puts := f.state()
	assert.Equal(t, 0, puts)
}

func TestKubeProxyExcludeRetriesOnConflict(t *testing.T) {
	f := newFakeAPIServer(t, proxyConfigMap(kubeadmProxyConf))
	f.conflicts = 1
	_, changed, err := excludeVIPInKubeProxy(context.Background(), f.client(t), netip.MustParseAddr("10.103.97.2"), false)
	require.NoError(t, err)
	assert.True(t, changed)
	cm, puts := f.state()
	assert.Equal(t, 2, puts, "read again and retried after the conflict")
	assert.Contains(t, cm.Data["config.conf"], "10.103.97.2/32")

	f.conflicts = 100
	cm.Data["config.conf"] = kubeadmProxyConf
	f.cm = cm
	_, _, err = excludeVIPInKubeProxy(context.Background(), f.client(t), netip.MustParseAddr("10.103.97.2"), false)
	assert.ErrorContains(t, err, "still conflicting", "gives up instead of looping forever")
}

func TestKubeProxyExcludeErrors(t *testing.T) {
	vip := netip.MustParseAddr("10.103.97.2")
	_, _, err := excludeVIPInKubeProxy(context.Background(), newFakeAPIServer(t, nil).client(t), vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "get ConfigMap kube-system/kube-proxy")
	assert.Contains(t, err.Error(), "HTTP 404")

	cm := proxyConfigMap("")
	delete(cm.Data, "config.conf")
	_, _, err = excludeVIPInKubeProxy(context.Background(), newFakeAPIServer(t, cm).client(t), vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no key config.conf")

	f := newFakeAPIServer(t, proxyConfigMap("apiVersion: v1\nkind: Pod\n"))
	_, _, err = excludeVIPInKubeProxy(context.Background(), f.client(t), vip, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "KubeProxyConfiguration")
	_, puts := f.state()
	assert.Equal(t, 0, puts)
}

func TestKubeProxyExcludeCmdBadInput(t *testing.T) {
	_, err := runAppCmd(t, newKubeProxyCmd, "exclude", "--vip", "nope", "--kubeconfig", "/nonexistent")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--vip "nope"`)
	_, err = runAppCmd(t, newKubeProxyCmd, "exclude", "--kubeconfig", "/nonexistent/kubeconfig")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--kubeconfig "/nonexistent/kubeconfig"`)
}
