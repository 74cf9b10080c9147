//go:build !watchdog

package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/kubeadm"
)

// runInitFlags runs `vipctl init ARGS` on a node whose addresses are local,
// and returns the options init would get; init itself does not run.
func runInitFlags(t *testing.T, local []string, args ...string) (kubeadm.InitOptions, string, string, error) {
	t.Helper()
	var got kubeadm.InitOptions
	var gotHosts string
	ran := false
	isLocal := func(_ context.Context, a netip.Addr) (bool, error) {
		for _, l := range local {
			if netip.MustParseAddr(l) == a {
				return true, nil
			}
		}
		return false, nil
	}
	cmd := newInitCmdWith(isLocal, func(_ *cobra.Command, o kubeadm.InitOptions, hostsFile string) error {
		got, gotHosts, ran = o, hostsFile, true
		return nil
	})
	var stderr bytes.Buffer
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	if err == nil {
		require.True(t, ran)
	} else {
		require.False(t, ran, "nothing runs after a flag error")
	}
	return got, gotHosts, stderr.String(), err
}

func TestInitCmdOptions(t *testing.T) {
	o, hostsFile, _, err := runInitFlags(t, []string{"192.0.2.12"},
		"--master", "192.0.2.11", "--master", "192.0.2.12", "--master", "192.0.2.13:7443", "--vip", "10.103.97.9",
		"--kube-proxy-mode", "nftables", "--hosts-file", "/tmp/h", "--kubeadm", "/opt/kubeadm", "--secrets-dir", "/tmp/s",
		"--", "--v=5")
	require.NoError(t, err)
	assert.Equal(t, "/tmp/h", hostsFile)
	assert.Equal(t, netip.MustParseAddr("192.0.2.12"), o.NodeIP, "this node is the --master that is local")
	assert.Equal(t, netip.MustParseAddrPort("10.103.97.9:6443"), o.VIP)
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.12:6443"),
		netip.MustParseAddrPort("192.0.2.13:7443")}, o.Masters)
	assert.Equal(t, "/opt/kubeadm", o.Kubeadm)
	assert.Equal(t, []string{"--v=5"}, o.KubeadmArgs)
	assert.Equal(t, "/tmp/s", o.SecretsDir)
	// The configuration is the renderer's, for this master.
	want, err := kubeadm.Render(kubeadm.Options{VIP: "10.103.97.9", Masters: []string{"192.0.2.11", "192.0.2.12", "192.0.2.13:7443"},
		AdvertiseAddress: "192.0.2.12", KubeadmAPI: kubeadm.DefaultAPIVersion, KubernetesVersion: kubeadm.DefaultKubernetesVersion,
		ServiceSubnet: kubeadm.DefaultServiceSubnet, KubeProxyMode: "nftables"})
	require.NoError(t, err)
	assert.Equal(t, string(want), string(o.Config))
	assert.NoError(t, o.Validate())
}

func TestInitCmdMergesTheUsersConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "kubeadm.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: prod\n"+
		"controlPlaneEndpoint: lb:6443\n---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n"), 0o600))
	o, _, stderr, err := runInitFlags(t, nil, "--master", "192.0.2.11", "--node-ip", "192.0.2.11", "--config", cfg, "--kube-proxy-mode", "ipvs")
	require.NoError(t, err)
	assert.Contains(t, string(o.Config), "clusterName: prod")
	assert.Contains(t, string(o.Config), "mode: iptables", "the config's kube-proxy mode wins")
	assert.Contains(t, string(o.Config), "controlPlaneEndpoint: apiserver.cluster.local:6443")
	assert.Contains(t, stderr, `controlPlaneEndpoint "lb:6443" replaced`)
	assert.Contains(t, stderr, `--kube-proxy-mode "ipvs" is ignored`)
}

// The watchdog's own flags reach the manifest init writes, as join's do: on
// a slow master (the lab VM under emulation, where a probe of the local
// apiserver takes more than the default 800 ms) the user raises the probe
// timeout and interval.
func TestInitCmdCareFlags(t *testing.T) {
	o, _, _, err := runInitFlags(t, nil, "--master", "192.0.2.11", "--node-ip", "192.0.2.11",
		"--care-flag=--interval=5s", "--care-flag=--timeout=4s")
	require.NoError(t, err)
	m := string(o.Manifest)
	assert.Contains(t, m, "--interval=5s")
	assert.Contains(t, m, "--timeout=4s")
	assert.Contains(t, m, "--master=192.0.2.11:6443")
	assert.Contains(t, m, "--scheduler=wrr", "a master's watchdog keeps the local preference")
}

func TestInitCmdBadInput(t *testing.T) {
	two := []string{"--master", "192.0.2.11", "--master", "192.0.2.12"}
	for _, tc := range []struct {
		local []string
		args  []string
		want  string
	}{
		{nil, []string{"--node-ip", "192.0.2.11"}, `required flag(s) "master" not set`},
		{nil, append(two, "--node-ip", "x"), `--node-ip "x": not an IP address`},
		{nil, append(two, "--node-ip", "192.0.2.99"), "--node-ip 192.0.2.99: not among the --master"},
		{nil, two, "--node-ip: no --master is an address of this node"},
		{[]string{"192.0.2.11", "192.0.2.12"}, two, "--node-ip: several --master are addresses of this node (192.0.2.11, 192.0.2.12)"},
		{nil, []string{"--master", "nope", "--node-ip", "192.0.2.11"}, `--master "nope"`},
		{nil, append(two, "--vip", "192.0.2.11", "--node-ip", "192.0.2.11"), `--master "192.0.2.11": equal to the --vip`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--kube-proxy-mode", "userspace"), `--kube-proxy-mode "userspace"`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--service-subnet", "10.103.0.0/16"), `--vip 10.103.97.2 is inside --service-subnet "10.103.0.0/16"`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--config", "/nonexistent/kubeadm.yaml"), "--config: open /nonexistent/kubeadm.yaml"},
		{nil, append(two, "--node-ip", "192.0.2.11", "--kubeadm", ""), "--kubeadm: empty"},
		{nil, append(two, "--node-ip", "192.0.2.11", "--", "--pod-network-cidr=10.244.0.0/16"), "kubeadm argument --pod-network-cidr"},
		{nil, append(two, "--node-ip", "192.0.2.11", "--", "--certificate-key", "abc"), "kubeadm argument --certificate-key"},
		{nil, append(two, "--node-ip", "192.0.2.11", "--v=5"), "kubeadm's own flags go after --"},
		{nil, append(two, "--node-ip", "192.0.2.11", "abcdef.0123456789abcdef"), `unexpected argument "<redacted>"`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--care-flag=--timeout=2s"), `--timeout 2s: must be shorter than --interval 1s`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--care-flag=--nope=1"), `--care-flag "--nope=1": --nope is not a flag of the watchdog`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--care-flag=--vip=10.103.97.9:6443"), `--care-flag "--vip=10.103.97.9:6443": --vip is given as a flag already`},
		{nil, append(two, "--node-ip", "192.0.2.11", "--care-flag=--scheduler=rr"), `--care-flag "--scheduler=rr": a master's watchdog uses wrr`},
	} {
		_, _, _, err := runInitFlags(t, tc.local, tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
		assert.NotContains(t, err.Error(), "0123456789abcdef", "no token in errors")
	}
}
