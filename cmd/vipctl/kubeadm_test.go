//go:build !watchdog

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/kubeadm"
)

func kubeadmClusterDoc(t *testing.T, out string) map[string]any {
	t.Helper()
	var cluster map[string]any
	for _, doc := range splitKubeadmYAML(out) {
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(doc), &m))
		if m["kind"] == "ClusterConfiguration" {
			require.Nil(t, cluster, "two ClusterConfiguration documents")
			cluster = m
		}
	}
	require.NotNil(t, cluster, out)
	return cluster
}

func splitKubeadmYAML(s string) []string {
	var docs []string
	for _, d := range regexp.MustCompile(`(?m)^---\n`).Split(s, -1) {
		if d != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestKubeadmConfigCmdPrints(t *testing.T) {
	out, err := runAppCmd(t, newKubeadmCmd, "config", "--master", "192.168.0.2", "--master", "192.168.0.3",
		"--pod-subnet", "100.64.0.0/10", "--image-repository", "registry.local/k8s", "--kubeadm-api", "v1beta3")
	require.NoError(t, err)
	want, err := kubeadm.Render(kubeadm.Options{VIP: "10.103.97.2:6443", Masters: []string{"192.168.0.2", "192.168.0.3"},
		KubeadmAPI: "v1beta3", KubernetesVersion: kubeadm.DefaultKubernetesVersion, ServiceSubnet: kubeadm.DefaultServiceSubnet,
		PodSubnet: "100.64.0.0/10", ImageRepository: "registry.local/k8s"})
	require.NoError(t, err)
	assert.Equal(t, string(want), out)
	c := kubeadmClusterDoc(t, out)
	assert.Equal(t, "kubeadm.k8s.io/v1beta3", c["apiVersion"])
	assert.Equal(t, "registry.local/k8s", c["imageRepository"])
}

func TestKubeadmConfigCmdMergeKeepsConfigValues(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kubeadm.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"+
		"kubernetesVersion: v1.33.2\nnetworking:\n  serviceSubnet: 10.200.0.0/16\n"), 0o600))

	// Defaults of unset flags do not override the file.
	out, err := runAppCmd(t, newKubeadmCmd, "config", "--config", cfg, "--master", "192.168.0.2")
	require.NoError(t, err)
	c := kubeadmClusterDoc(t, out)
	assert.Equal(t, "kubeadm.k8s.io/v1beta3", c["apiVersion"])
	assert.Equal(t, "v1.33.2", c["kubernetesVersion"])
	assert.Equal(t, "10.200.0.0/16", c["networking"].(map[string]any)["serviceSubnet"])

	// Given flags do, and --output-file writes in place.
	out, err = runAppCmd(t, newKubeadmCmd, "config", "--config", cfg, "--output-file", cfg, "--master", "192.168.0.2",
		"--kubernetes-version", "v1.34.4", "--service-subnet", "10.201.0.0/16")
	require.NoError(t, err)
	assert.Empty(t, out)
	data, err := os.ReadFile(cfg)
	require.NoError(t, err)
	c = kubeadmClusterDoc(t, string(data))
	assert.Equal(t, "v1.34.4", c["kubernetesVersion"])
	assert.Equal(t, "10.201.0.0/16", c["networking"].(map[string]any)["serviceSubnet"])
	assert.Equal(t, "apiserver.cluster.local:6443", c["controlPlaneEndpoint"])

	// An explicit API version that differs from the file's is an error.
	_, err = runAppCmd(t, newKubeadmCmd, "config", "--config", cfg, "--master", "192.168.0.2", "--kubeadm-api", "v1beta4")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--kubeadm-api v1beta4")
}

func TestKubeadmConfigCmdErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config"}, "master"},
		{[]string{"config", "--master", "192.168.0.2", "--service-subnet", "10.96.0.0/12"}, `--vip 10.103.97.2 is inside --service-subnet "10.96.0.0/12"`},
		{[]string{"config", "--master", "192.168.0.2", "--config", "/nonexistent/kubeadm.yaml"}, "--config"},
		{[]string{"config", "--master", "192.168.0.2", "--kubeadm-api", "v1"}, `--kubeadm-api "v1"`},
	} {
		_, err := runAppCmd(t, newKubeadmCmd, tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestKubeadmConfigCmdKubeProxyMode(t *testing.T) {
	proxyDoc := func(out string) map[string]any {
		for _, doc := range splitKubeadmYAML(out) {
			var m map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(doc), &m))
			if m["kind"] == "KubeProxyConfiguration" {
				return m
			}
		}
		t.Fatalf("no KubeProxyConfiguration in\n%s", out)
		return nil
	}
	out, err := runAppCmd(t, newKubeadmCmd, "config", "--master", "192.168.0.2")
	require.NoError(t, err)
	assert.NotContains(t, proxyDoc(out), "mode", "kube-proxy's own default unless asked")
	out, err = runAppCmd(t, newKubeadmCmd, "config", "--master", "192.168.0.2", "--kube-proxy-mode", "nftables")
	require.NoError(t, err)
	p := proxyDoc(out)
	assert.Equal(t, "nftables", p["mode"])
	assert.Equal(t, map[string]any{"excludeCIDRs": []any{"10.103.97.2/32"}}, p["ipvs"], "the VIP is excluded in every mode")
	_, err = runAppCmd(t, newKubeadmCmd, "config", "--master", "192.168.0.2", "--kube-proxy-mode", "userspace")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--kube-proxy-mode "userspace"`)
}

func TestKubeadmConfigCmdIPv6Defaults(t *testing.T) {
	out, err := runAppCmd(t, newKubeadmCmd, "config", "--master", "fd00:10::11", "--master", "fd00:10::12")
	require.NoError(t, err)
	want, err := kubeadm.Render(kubeadm.Options{VIP: "[" + DefaultVIP6 + "]:6443", Masters: []string{"fd00:10::11", "fd00:10::12"},
		KubeadmAPI: kubeadm.DefaultAPIVersion, KubernetesVersion: kubeadm.DefaultKubernetesVersion})
	require.NoError(t, err)
	assert.Equal(t, string(want), out)
	c := kubeadmClusterDoc(t, out)
	assert.Equal(t, kubeadm.DefaultServiceSubnet6, c["networking"].(map[string]any)["serviceSubnet"])
	assert.Contains(t, c["apiServer"].(map[string]any)["certSANs"], DefaultVIP6)
	assert.Contains(t, out, DefaultVIP6+"/128", "the VIP is in kube-proxy's excludeCIDRs")
}
