package kubeadm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// kubeadmBinary returns the kubeadm built by scripts/build-kubeadm.sh, named
// by VIPCTL_KUBEADM, or skips the test.
func kubeadmBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("VIPCTL_KUBEADM")
	if bin == "" {
		t.Skip("VIPCTL_KUBEADM is not set: build kubeadm with scripts/build-kubeadm.sh, then run VIPCTL_KUBEADM=$(scripts/build-kubeadm.sh) go test ./kubeadm/")
	}
	st, err := os.Stat(bin)
	require.NoError(t, err, "VIPCTL_KUBEADM=%s", bin)
	require.False(t, st.IsDir(), "VIPCTL_KUBEADM=%s is a folder", bin)
	return bin
}

// runKubeadm runs kubeadm with args; in a new, empty network namespace when
// unshare allows it, so that it cannot reach anything (every config here has
// a kubernetesVersion, so kubeadm has no reason to go online anyway).
func runKubeadm(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if path, err := exec.LookPath("unshare"); err == nil && exec.CommandContext(ctx, path, "-n", "true").Run() == nil {
		cmd = exec.CommandContext(ctx, path, append([]string{"-n", bin}, args...)...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func TestKubeadmConfigValidate(t *testing.T) {
	bin := kubeadmBinary(t)

	// The binary must reject a broken config, or an "ok" below proves nothing.
	bad := writeTemp(t, "bad.yaml", []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.4\nnetworking:\n  serviceSubnet: bogus\n"))
	out, err := runKubeadm(t, bin, "config", "validate", "--config", bad)
	require.Error(t, err, "kubeadm accepted a broken config:\n%s", out)

	v1beta3 := baseOptions()
	v1beta3.KubeadmAPI = V1Beta3
	v1beta3.PodSubnet = "100.64.0.0/10"
	merged, _, err := Merge(baseOptions(), readTestdata(t, "user-v1beta4.yaml"))
	require.NoError(t, err)
	mergedV1beta3, _, err := Merge(baseOptions(), readTestdata(t, "user-v1beta3-partial.yaml"))
	require.NoError(t, err)
	fresh := func(o Options) []byte {
		b, err := Render(o)
		require.NoError(t, err)
		return b
	}
	mode := func(m string) Options {
		o := baseOptions()
		o.KubeProxyMode = m
		return o
	}
	dual := baseOptions()
	dual.PodSubnet = "100.64.0.0/10,fd00:10::/56"
	dual.ServiceSubnet = "10.97.0.0/16,fd00:20::/108"
	// Single-stack IPv6 with vipctl's default IPv6 VIP and service subnet.
	ipv6 := Options{VIP: "fd00:103:97::2", Masters: []string{"fd00:10::11", "[fd00:10::12]:6443", "fd00:10::13"}, PodSubnet: "fd00:10:244::/56"}
	ipv6SANs := []string{"::1", "apiserver.cluster.local", "fd00:103:97::2", "fd00:10::11", "fd00:10::12", "fd00:10::13"}
	v4SANs := []string{"127.0.0.1", "apiserver.cluster.local", "10.103.97.2", "192.168.0.2", "192.168.0.3", "192.168.0.4"}

	for _, tc := range []struct {
		name   string
		config []byte
		// what kubeadm must have read, from `kubeadm config migrate`
		cluster   map[string]any
		sans      []string
		advertise string
	}{
		{"v1beta4", fresh(baseOptions()), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"v1beta3", fresh(v1beta3), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"kube-proxy-iptables", fresh(mode("iptables")), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"kube-proxy-ipvs", fresh(mode("ipvs")), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"kube-proxy-nftables", fresh(mode("nftables")), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"dual-stack", fresh(dual), map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
		{"ipv6", fresh(ipv6), map[string]any{"kubernetesVersion": DefaultKubernetesVersion,
			"networking": map[string]any{"serviceSubnet": DefaultServiceSubnet6, "podSubnet": "fd00:10:244::/56", "dnsDomain": "cluster.local"}}, ipv6SANs, "fd00:10::11"},
		{"merged-v1beta4", merged, map[string]any{"kubernetesVersion": "v1.34.2", "clusterName": "prod"}, v4SANs, "192.168.0.2"},
		{"merged-v1beta3", mergedV1beta3, map[string]any{"kubernetesVersion": DefaultKubernetesVersion}, v4SANs, "192.168.0.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeTemp(t, "kubeadm.yaml", tc.config)
			out, err := runKubeadm(t, bin, "config", "validate", "--config", f)
			require.NoError(t, err, "kubeadm config validate:\n%s\nconfig:\n%s", out, tc.config)

			// Read back what kubeadm understood (migrate loads, defaults and
			// prints the kubeadm documents as v1beta4).
			migrated := filepath.Join(t.TempDir(), "migrated.yaml")
			out, err = runKubeadm(t, bin, "config", "migrate", "--old-config", f, "--new-config", migrated)
			require.NoError(t, err, "kubeadm config migrate:\n%s", out)
			data, err := os.ReadFile(migrated)
			require.NoError(t, err)
			var cluster, initc map[string]any
			for _, doc := range strings.Split(string(data), "\n---\n") {
				var m map[string]any
				require.NoError(t, yaml.Unmarshal([]byte(doc), &m))
				switch m["kind"] {
				case kindCluster:
					cluster = m
				case kindInit:
					initc = m
				}
			}
			require.NotNil(t, cluster, "migrated:\n%s", data)
			require.NotNil(t, initc, "migrated:\n%s", data)
			assert.Equal(t, "apiserver.cluster.local:6443", at(cluster, "controlPlaneEndpoint"))
			sans := strs(at(cluster, "apiServer", "certSANs"))
			for _, want := range tc.sans {
				assert.Contains(t, sans, want)
			}
			assert.Equal(t, tc.advertise, at(initc, "localAPIEndpoint", "advertiseAddress"))
			for k, v := range tc.cluster {
				assert.Equal(t, v, cluster[k], k)
			}
		})
	}
}

// TestKubeadmValidatesInitAndJoinConfigs runs the real `kubeadm config
// validate` on what vipctl init and vipctl join hand kubeadm: the init
// configuration with its secrets, in each kube-proxy mode, and the
// JoinConfigurations of a worker and a master, rendered from flags and
// merged into a user's.
func TestKubeadmValidatesInitAndJoinConfigs(t *testing.T) {
	bin := kubeadmBinary(t)
	// kubeadm must check JoinConfigurations, or an "ok" below proves nothing.
	bad := writeTemp(t, "bad.yaml", []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: apiserver.cluster.local:6443\n    token: "+testToken+"\n"))
	out, err := runKubeadm(t, bin, "config", "validate", "--config", bad)
	require.Error(t, err, "kubeadm accepted a JoinConfiguration without caCertHashes:\n%s", out)
	configs := map[string][]byte{}
	for _, mode := range append([]string{""}, KubeProxyModes...) {
		o := baseOptions()
		o.KubeProxyMode = mode
		merged, err := Render(o)
		require.NoError(t, err)
		withSecrets, _, err := addInitSecrets(merged)
		require.NoError(t, err)
		configs["init-"+mode] = withSecrets
	}
	userInit, _, err := Merge(baseOptions(), readTestdata(t, "user-v1beta4.yaml"))
	require.NoError(t, err)
	if configs["init-user"], _, err = addInitSecrets(userInit); err != nil {
		t.Fatal(err)
	}
	join := func(in JoinConfigInput) []byte {
		in.Endpoint = "apiserver.cluster.local:6443"
		b, _, _, err := RenderJoinConfiguration(in)
		require.NoError(t, err)
		return b
	}
	hash := []string{"--discovery-token-ca-cert-hash", testHash}
	configs["join-worker"] = join(JoinConfigInput{Token: testToken, Args: append(hash, "--node-name=w1", "--ignore-preflight-errors=Swap")})
	configs["join-master"] = join(JoinConfigInput{Token: testToken, CertificateKey: testCertKey, ControlPlane: true,
		Args: append(hash, "--apiserver-advertise-address", "192.168.0.3", "--apiserver-bind-port", "6443", "--control-plane")})
	configs["join-user-v1beta3"] = join(JoinConfigInput{Token: testToken, Config: []byte("apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\n" +
		"discovery:\n  bootstrapToken:\n    apiServerEndpoint: 192.168.0.2:6443\n    caCertHashes: [" + testHash + "]\nnodeRegistration:\n  name: w2\n")})
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			f := writeTemp(t, "kubeadm.yaml", cfg)
			out, err := runKubeadm(t, bin, "config", "validate", "--config", f)
			require.NoError(t, err, "kubeadm config validate:\n%s\nconfig:\n%s", out, cfg)
		})
	}
}
