package kubeadm

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	sigsyaml "sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func baseOptions() Options {
	return Options{VIP: "10.103.97.2", Masters: []string{"192.168.0.2", "192.168.0.3:6443", "192.168.0.4"}}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run go test ./kubeadm -update to create it")
	assert.Equal(t, string(want), string(got))
}

// docs decodes a YAML stream into one generic map per document, by kind.
func docs(t *testing.T, data []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		kind, _ := m["kind"].(string)
		require.NotContains(t, out, kind, "two %s documents", kind)
		out[kind] = m
	}
}

func at(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, item := range list {
		out = append(out, fmt.Sprint(item))
	}
	return out
}

// rawDocs splits a rendered stream into raw documents, by kind.
func rawDocs(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for kind, m := range docs(t, data) {
		b, err := yaml.Marshal(m)
		require.NoError(t, err)
		out[kind] = b
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*Options)
	}{
		{"v1beta4", func(*Options) {}},
		{"v1beta3", func(o *Options) {
			o.KubeadmAPI = V1Beta3
			o.PodSubnet = "100.64.0.0/10"
			o.ImageRepository = "registry.local:5000/k8s"
			o.AdvertiseAddress = "192.168.0.3"
			o.KubernetesVersion = "v1.33.8"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions()
			tc.opts(&o)
			out, err := Render(o)
			require.NoError(t, err)
			checkGolden(t, tc.name, out)
		})
	}
}

func TestRenderDecodesIntoTypes(t *testing.T) {
	o := baseOptions()
	o.VIP = "10.103.97.2:8443"
	o.PodSubnet = "100.64.0.0/10,fd00:10::/56"
	o.ServiceSubnet = "10.97.0.0/16,fd00:20::/108"
	o.ImageRepository = "registry.local/k8s"
	out, err := Render(o)
	require.NoError(t, err)
	raw := rawDocs(t, out)
	require.Len(t, raw, 3)

	var cluster ClusterConfiguration
	require.NoError(t, sigsyaml.UnmarshalStrict(raw[kindCluster], &cluster))
	assert.Equal(t, "kubeadm.k8s.io/v1beta4", cluster.APIVersion)
	assert.Equal(t, "apiserver.cluster.local:8443", cluster.ControlPlaneEndpoint)
	assert.Equal(t, DefaultKubernetesVersion, cluster.KubernetesVersion)
	assert.Equal(t, "registry.local/k8s", cluster.ImageRepository)
	assert.Equal(t, Networking{PodSubnet: o.PodSubnet, ServiceSubnet: o.ServiceSubnet}, cluster.Networking)
	assert.Equal(t, []string{"127.0.0.1", "apiserver.cluster.local", "10.103.97.2", "192.168.0.2", "192.168.0.3", "192.168.0.4"}, cluster.APIServer.CertSANs)

	var initc InitConfiguration
	require.NoError(t, sigsyaml.UnmarshalStrict(raw[kindInit], &initc))
	assert.Equal(t, "kubeadm.k8s.io/v1beta4", initc.APIVersion)
	assert.Equal(t, APIEndpoint{AdvertiseAddress: "192.168.0.2", BindPort: 6443}, initc.LocalAPIEndpoint)

	proxy := proxyConf(t, string(raw[kindProxy]))
	assert.Equal(t, "kubeproxy.config.k8s.io/v1alpha1", proxy["apiVersion"])
	assert.NotContains(t, proxy, "mode", "no mode unless asked: kube-proxy's default")
	assert.Equal(t, map[string]any{"excludeCIDRs": []any{"10.103.97.2/32"}}, proxy["ipvs"])
	// Nothing but what vipctl sets: kube-proxy's defaults apply to the rest.
	assert.ElementsMatch(t, []string{"apiVersion", "kind", "ipvs"}, keys(docs(t, out)[kindProxy]))
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestRenderAdvertiseAddressPicksBindPort(t *testing.T) {
	o := baseOptions()
	o.Masters = []string{"192.168.0.2:6443", "192.168.0.3:7443"}
	o.AdvertiseAddress = "192.168.0.3"
	out, err := Render(o)
	require.NoError(t, err)
	initc := docs(t, out)[kindInit]
	assert.Equal(t, "192.168.0.3", at(initc, "localAPIEndpoint", "advertiseAddress"))
	assert.Equal(t, 7443, at(initc, "localAPIEndpoint", "bindPort"))
}

func TestRenderIPv6(t *testing.T) {
	out, err := Render(Options{VIP: "[fd00::2]:6443", Masters: []string{"fd00::10", "[fd00::11]:6443", "[fd00::12]"}, ServiceSubnet: "fd00:96::/108"})
	require.NoError(t, err)
	d := docs(t, out)
	assert.Equal(t, []string{"::1", "apiserver.cluster.local", "fd00::2", "fd00::10", "fd00::11", "fd00::12"}, strs(at(d[kindCluster], "apiServer", "certSANs")),
		"the IPv6 loopback: a client on a single-stack IPv6 master reaches its apiserver at [::1]")
	assert.Equal(t, []string{"fd00::2/128"}, strs(at(d[kindProxy], "ipvs", "excludeCIDRs")))
	assert.Equal(t, "fd00::10", at(d[kindInit], "localAPIEndpoint", "advertiseAddress"))
	assert.Equal(t, "fd00:96::/108", at(d[kindCluster], "networking", "serviceSubnet"))
}

func TestRenderIPv6DefaultServiceSubnet(t *testing.T) {
	out, err := Render(Options{VIP: "fd00:103:97::2", Masters: []string{"fd00:10::11", "fd00:10::12"}})
	require.NoError(t, err)
	d := docs(t, out)
	assert.Equal(t, DefaultServiceSubnet6, at(d[kindCluster], "networking", "serviceSubnet"), "an IPv6 VIP gets an IPv6 service subnet")
	assert.Equal(t, "apiserver.cluster.local:6443", at(d[kindCluster], "controlPlaneEndpoint"))
}

func TestRenderRefusesMastersOfTheOtherFamily(t *testing.T) {
	for _, o := range []Options{
		{VIP: "fd00:103:97::2", Masters: []string{"fd00:10::11", "192.168.0.3"}},
		{VIP: "10.103.97.2", Masters: []string{"fd00:10::11"}},
	} {
		_, err := Render(o)
		require.Error(t, err, "%+v", o)
		assert.ErrorContains(t, err, "address family")
		assert.ErrorContains(t, err, "--master")
	}
}

// leaves flattens a document into path -> scalar value.
func leaves(prefix string, v any, out map[string]any) {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			leaves(prefix+"."+k, c, out)
		}
	case []any:
		for i, c := range t {
			leaves(fmt.Sprintf("%s[%d]", prefix, i), c, out)
		}
	default:
		out[prefix] = v
	}
}

func TestMergeKeepsEveryUserField(t *testing.T) {
	user := readTestdata(t, "user-v1beta4.yaml")
	out, warnings, err := Merge(baseOptions(), user)
	require.NoError(t, err)
	checkGolden(t, "merged-v1beta4", out)

	in, got := docs(t, user), docs(t, out)
	require.Len(t, got, 4, "the user's 4 documents, none added")
	owned := map[string]bool{ // fields vipctl replaces
		"ClusterConfiguration.controlPlaneEndpoint": true,
	}
	for kind, doc := range in {
		inLeaves, gotLeaves := map[string]any{}, map[string]any{}
		leaves(kind, doc, inLeaves)
		leaves(kind, got[kind], gotLeaves)
		for path, v := range inLeaves {
			if owned[path] {
				continue
			}
			assert.Contains(t, gotLeaves, path, "user field dropped")
			assert.Equal(t, v, gotLeaves[path], "user field %s changed", path)
		}
	}
	c, p := got[kindCluster], got[kindProxy]
	assert.Equal(t, "apiserver.cluster.local:6443", at(c, "controlPlaneEndpoint"))
	assert.Equal(t, "v1.34.2", at(c, "kubernetesVersion"), "the user's version is kept when --kubernetes-version is not given")
	assert.Equal(t, "100.64.0.0/10", at(c, "networking", "podSubnet"))
	assert.Equal(t, DefaultServiceSubnet, at(c, "networking", "serviceSubnet"), "missing service subnet gets vipctl's default")
	assert.Equal(t, []string{"api.example.com", "10.103.97.2", "127.0.0.1", "apiserver.cluster.local", "192.168.0.2", "192.168.0.3", "192.168.0.4"},
		strs(at(c, "apiServer", "certSANs")), "appended without duplicates")
	assert.Equal(t, "iptables", at(p, "mode"), "the user's kube-proxy mode is kept")
	assert.Equal(t, []string{"192.0.2.0/24", "10.103.97.2/32"}, strs(at(p, "ipvs", "excludeCIDRs")))
	assert.Equal(t, "192.168.0.2", at(got[kindInit], "localAPIEndpoint", "advertiseAddress"))
	assert.Contains(t, string(out), "clusterName: prod # our name", "comments are kept")
	assert.Contains(t, string(out), "# Cluster config kept in git by the user.")
	assert.Len(t, warnings, 1)
	assert.Contains(t, strings.Join(warnings, "\n"), `"old-lb.example.com:6443"`)

	// Document order: the user's first.
	var kinds []string
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		kinds = append(kinds, m["kind"].(string))
	}
	assert.Equal(t, []string{"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration", "KubeProxyConfiguration"}, kinds)
}

func TestMergeAddsMissingDocumentsInTheUsersVersion(t *testing.T) {
	user := readTestdata(t, "user-v1beta3-partial.yaml")
	o := baseOptions()
	o.KubernetesVersion = "v1.34.1"
	out, warnings, err := Merge(o, user)
	require.NoError(t, err)
	assert.Empty(t, warnings)
	checkGolden(t, "merged-v1beta3", out)
	d := docs(t, out)
	require.Len(t, d, 3)
	assert.Equal(t, "kubeadm.k8s.io/v1beta3", at(d[kindInit], "apiVersion"), "new documents follow the config's version")
	assert.Equal(t, "v1.34.1", at(d[kindCluster], "kubernetesVersion"), "the flag is set")
	assert.Equal(t, "10.200.0.0/16", at(d[kindCluster], "networking", "serviceSubnet"), "the user's subnet is kept")
	assert.Equal(t, "30", at(d[kindCluster], "apiServer", "extraArgs", "audit-log-maxage"))
}

func TestMergeFlagsOverrideTheConfig(t *testing.T) {
	user := readTestdata(t, "user-v1beta4.yaml")
	o := baseOptions()
	o.KubernetesVersion = "v1.34.4"
	o.PodSubnet = "10.244.0.0/16"
	o.ServiceSubnet = "10.98.0.0/16"
	o.ImageRepository = "registry.local/k8s"
	o.AdvertiseAddress = "192.168.0.4"
	out, _, err := Merge(o, user)
	require.NoError(t, err)
	c := docs(t, out)[kindCluster]
	assert.Equal(t, "v1.34.4", at(c, "kubernetesVersion"))
	assert.Equal(t, "10.244.0.0/16", at(c, "networking", "podSubnet"))
	assert.Equal(t, "10.98.0.0/16", at(c, "networking", "serviceSubnet"))
	assert.Equal(t, "registry.local/k8s", at(c, "imageRepository"))
	assert.Equal(t, "192.168.0.4", at(docs(t, out)[kindInit], "localAPIEndpoint", "advertiseAddress"))
}

// kubeadm 1.33+ points a master's kubelet at its own apiserver unless
// ControlPlaneKubeletLocalMode is off: vipctl turns it off so that the
// masters' kubelets go through the VIP, keeps a user's explicit choice
// (with a warning when it is on), and leaves kubeadm that does not know the
// gate (before 1.31) without it: kubeadm refuses an unknown gate.
func TestMergeTurnsKubeletLocalModeOff(t *testing.T) {
	gate := func(out []byte) any {
		g, _ := docs(t, out)[kindCluster]["featureGates"].(map[string]any)
		return g[KubeletLocalModeGate]
	}
	o := baseOptions()
	out, err := Render(o)
	require.NoError(t, err)
	assert.Equal(t, false, gate(out), "rendered")

	user := []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nfeatureGates:\n  EtcdLearnerMode: true\n")
	out, warnings, err := Merge(o, user)
	require.NoError(t, err)
	assert.Equal(t, false, gate(out), "merged into the user's gates")
	assert.Equal(t, true, docs(t, out)[kindCluster]["featureGates"].(map[string]any)["EtcdLearnerMode"], "the user's gate kept")
	assert.Empty(t, warnings)

	user = []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nfeatureGates:\n  ControlPlaneKubeletLocalMode: true\n")
	out, warnings, err = Merge(o, user)
	require.NoError(t, err)
	assert.Equal(t, true, gate(out), "the user's choice kept")
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "ControlPlaneKubeletLocalMode")

	o.KubernetesVersion = "v1.30.14"
	out, err = Render(o)
	require.NoError(t, err)
	assert.Nil(t, gate(out), "kubeadm 1.30 does not know the gate")
}

func TestMergeIsIdempotent(t *testing.T) {
	for _, name := range []string{"user-v1beta4.yaml", "user-v1beta3-partial.yaml"} {
		t.Run(name, func(t *testing.T) {
			once, _, err := Merge(baseOptions(), readTestdata(t, name))
			require.NoError(t, err)
			twice, warnings, err := Merge(baseOptions(), once)
			require.NoError(t, err)
			assert.Empty(t, warnings)
			assert.Equal(t, string(once), string(twice))
		})
	}
	fresh, err := Render(baseOptions())
	require.NoError(t, err)
	again, _, err := Merge(baseOptions(), fresh)
	require.NoError(t, err)
	assert.Equal(t, string(fresh), string(again))
}

func TestKubeProxyMode(t *testing.T) {
	withMode := func(m string) Options {
		o := baseOptions()
		o.KubeProxyMode = m
		return o
	}
	userProxy := func(mode string) []byte {
		s := "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
		if mode != "" {
			s += "mode: " + mode + "\n"
		}
		return []byte(s)
	}
	for _, tc := range []struct {
		name, flag, config string
		noConfig           bool
		want               any // the mode written, nil for none
		warn               bool
	}{
		{name: "default: none", noConfig: true, want: nil},
		{name: "flag", flag: "nftables", noConfig: true, want: "nftables"},
		{name: "flag fills a config without mode", flag: "ipvs", want: "ipvs"},
		{name: "config without mode, no flag", want: nil},
		{name: "config's mode kept", config: "iptables", want: "iptables"},
		{name: "config wins over the flag", flag: "nftables", config: "iptables", want: "iptables", warn: true},
		{name: "same in both", flag: "ipvs", config: "ipvs", want: "ipvs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var user []byte
			if !tc.noConfig {
				user = userProxy(tc.config)
			}
			out, warnings, err := Merge(withMode(tc.flag), user)
			require.NoError(t, err)
			p := docs(t, out)[kindProxy]
			assert.Equal(t, tc.want, p["mode"])
			assert.Equal(t, []string{"10.103.97.2/32"}, strs(at(p, "ipvs", "excludeCIDRs")), "the VIP is excluded in every mode")
			if tc.warn {
				require.Len(t, warnings, 1)
				assert.Contains(t, warnings[0], `--kube-proxy-mode "nftables"`)
			} else {
				assert.Empty(t, warnings)
			}
		})
	}
	_, _, err := Merge(withMode("userspace"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--kube-proxy-mode "userspace"`)
}

func TestMergeFillsNullAndEmptyFields(t *testing.T) {
	user := []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\nnetworking: {}\n---\n" +
		"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: []\n")
	out, _, err := Merge(baseOptions(), user)
	require.NoError(t, err)
	d := docs(t, out)
	assert.Len(t, strs(at(d[kindCluster], "apiServer", "certSANs")), 6)
	assert.Equal(t, []string{"10.103.97.2/32"}, strs(at(d[kindProxy], "ipvs", "excludeCIDRs")))
}

func TestValidationErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Options)
		config string
		want   []string
	}{
		{"vip in service subnet flag", func(o *Options) { o.ServiceSubnet = "10.96.0.0/12" }, "",
			[]string{"--vip 10.103.97.2", "--service-subnet \"10.96.0.0/12\""}},
		{"vip in pod subnet flag", func(o *Options) { o.PodSubnet = "10.0.0.0/8" }, "",
			[]string{"--vip 10.103.97.2", "--pod-subnet \"10.0.0.0/8\""}},
		{"vip in dual-stack subnet", func(o *Options) {
			o.VIP = "fd00::5"
			o.Masters = []string{"fd00:1::1"}
			o.ServiceSubnet = "10.97.0.0/16,fd00::/64"
		}, "",
			[]string{"--vip fd00::5", "--service-subnet"}},
		{"vip in default service subnet", func(o *Options) { o.VIP = "10.96.0.10" }, "",
			[]string{"--vip 10.96.0.10", "default --service-subnet \"10.96.0.0/16\""}},
		{"vip in config's service subnet", nil,
			"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  serviceSubnet: 10.96.0.0/12\n",
			[]string{"--vip 10.103.97.2", "networking.serviceSubnet \"10.96.0.0/12\" in --config"}},
		{"bad service subnet", func(o *Options) { o.ServiceSubnet = "10.96.0.0" }, "", []string{"--service-subnet", `"10.96.0.0"`}},
		{"bad pod subnet", func(o *Options) { o.PodSubnet = "a/b" }, "", []string{"--pod-subnet", `"a/b"`}},
		{"no vip", func(o *Options) { o.VIP = "" }, "", []string{"--vip", `""`}},
		{"vip hostname", func(o *Options) { o.VIP = "vip.example.com" }, "", []string{"--vip", "vip.example.com"}},
		{"loopback vip", func(o *Options) { o.VIP = "127.0.0.5" }, "", []string{"--vip", "127.0.0.5"}},
		{"no masters", func(o *Options) { o.Masters = nil }, "", []string{"--master"}},
		{"bad master", func(o *Options) { o.Masters = []string{"master1:6443"} }, "", []string{"--master", "master1:6443"}},
		{"master is vip", func(o *Options) { o.Masters = []string{"10.103.97.2:6443"} }, "", []string{"--master", "10.103.97.2:6443", "--vip"}},
		{"master twice", func(o *Options) { o.Masters = []string{"192.168.0.2", "192.168.0.2:6443"} }, "", []string{"--master", "twice"}},
		{"advertise", func(o *Options) { o.AdvertiseAddress = "node1" }, "", []string{"--advertise-address", "node1"}},
		{"api version", func(o *Options) { o.KubeadmAPI = "v1beta2" }, "", []string{"--kubeadm-api", "v1beta2"}},
		{"kubernetes version", func(o *Options) { o.KubernetesVersion = "1.34.4" }, "", []string{"--kubernetes-version", "1.34.4"}},
		{"api version mismatch", func(o *Options) { o.KubeadmAPI = V1Beta4 },
			"apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n",
			[]string{"--kubeadm-api v1beta4", "v1beta3"}},
		{"old config version", nil, "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n", []string{"--config", "v1beta2"}},
		{"two cluster documents", nil,
			"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n",
			[]string{"--config", "two ClusterConfiguration"}},
		{"certSANs not a list", nil,
			"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  certSANs: api.example.com\n",
			[]string{"--config", "apiServer.certSANs", "api.example.com"}},
		{"ipvs not a mapping", nil,
			"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nipvs: [a]\n",
			[]string{"--config", "ipvs"}},
		{"bad advertise in config", nil,
			"apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAddress: node1\n",
			[]string{"--config", "advertiseAddress", "node1"}},
		{"broken yaml", nil, "kind: [", []string{"--config", "document 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions()
			if tc.change != nil {
				tc.change(&o)
			}
			var existing []byte
			if tc.config != "" {
				existing = []byte(tc.config)
			}
			out, warnings, err := Merge(o, existing)
			require.Error(t, err)
			assert.Nil(t, out)
			assert.Nil(t, warnings)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
