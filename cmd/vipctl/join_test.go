//go:build !watchdog

package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/kubeadm"
)

// runJoinFlags runs `vipctl join ARGS` and returns the options the join
// would get; the join itself does not run.
func runJoinFlags(t *testing.T, args ...string) (kubeadm.JoinOptions, string, error) {
	t.Helper()
	var got kubeadm.JoinOptions
	var gotHosts string
	ran := false
	cmd := newJoinCmdWith(func(_ *cobra.Command, o kubeadm.JoinOptions, hostsFile string) error {
		got, gotHosts, ran = o, hostsFile, true
		return nil
	})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	if err == nil {
		require.True(t, ran)
	} else {
		require.False(t, ran, "nothing runs after a flag error")
	}
	return got, gotHosts, err
}

const testJoinToken = "abcdef.0123456789abcdef"

func TestJoinCmdWorkerOptions(t *testing.T) {
	o, hostsFile, err := runJoinFlags(t,
		"--master", "192.0.2.11", "--master", "192.0.2.12:6443", "--node-ip", "192.0.2.20", "--mode", "route",
		"--service-subnet", "10.96.0.0/16,fd00:96::/108", "--pod-subnet", "10.244.0.0/16",
		"--image", "registry.local/vipctl:v1", "--ca-file", "/srv/ca.crt", "--care-flag=--hold-down=10s",
		"--hosts-file", "/tmp/h", "--manifest-dir", "/tmp/m", "--modules-file", "/tmp/mod.conf", "--kubeadm", "/opt/kubeadm",
		"--", "--token", testJoinToken, "--discovery-token-ca-cert-hash", "sha256:abc")
	require.NoError(t, err)
	assert.Equal(t, "/tmp/h", hostsFile)
	assert.False(t, o.ControlPlane)
	assert.Equal(t, []string{"--token", testJoinToken, "--discovery-token-ca-cert-hash", "sha256:abc"}, o.KubeadmArgs)
	assert.Equal(t, "/opt/kubeadm", o.Kubeadm)
	assert.Equal(t, netip.MustParseAddrPort("10.103.97.2:6443"), o.Service.Service.VIP)
	require.Len(t, o.Service.RealServers, 2)
	assert.Equal(t, netip.MustParseAddrPort("192.0.2.11:6443"), o.Service.RealServers[0].Addr)
	assert.Equal(t, ipvs.VIPConfig{Mode: ipvs.ModeRoute, Interface: "vipctl0", VIP: netip.MustParseAddr("10.103.97.2"), NodeIP: netip.MustParseAddr("192.0.2.20")}, o.VIP)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/108")}, o.ServiceSubnets)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, o.PodSubnets)
	assert.Equal(t, "/tmp/m/vipctl-care.yaml", o.ManifestPath)
	assert.Equal(t, "/tmp/mod.conf", o.ModulesFile)
	assert.NoError(t, o.Validate())

	// The watchdog's flags come from the join's.
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(o.Manifest, &pod))
	c := pod.Spec.Containers[0]
	assert.Equal(t, "registry.local/vipctl:v1", c.Image)
	assert.Equal(t, []string{"/vipctl", "care", "--vip=10.103.97.2:6443", "--master=192.0.2.11:6443", "--master=192.0.2.12:6443",
		"--mode=route", "--node-ip=192.0.2.20", "--ca-file=/srv/ca.crt",
		"--metrics-addr=127.0.0.1:9282", "--hold-down=10s", "--log-format=json"}, c.Command)
}

func TestJoinCmdWatchdogTuning(t *testing.T) {
	o, _, err := runJoinFlags(t, "--master", "192.0.2.11,192.0.2.12", "--node-ip", "192.0.2.20",
		"--health-path", "/livez", "--interval", "2s", "--timeout", "1s", "--rise", "3", "--fall", "4",
		"--", "--token", testJoinToken)
	require.NoError(t, err)
	require.Len(t, o.Service.RealServers, 2, "--master takes commas")
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(o.Manifest, &pod))
	assert.Equal(t, []string{"/vipctl", "care", "--vip=10.103.97.2:6443", "--master=192.0.2.11:6443", "--master=192.0.2.12:6443",
		"--node-ip=192.0.2.20", "--health-path=/livez", "--ca-file=/etc/kubernetes/pki/ca.crt", "--interval=2s", "--timeout=1s",
		"--rise=3", "--fall=4", "--metrics-addr=127.0.0.1:9282", "--log-format=json"}, pod.Spec.Containers[0].Command)
}

func TestJoinCmdMasterOptions(t *testing.T) {
	o, _, err := runJoinFlags(t, "--control-plane", "--master", "192.0.2.11", "--master", "192.0.2.12",
		"--", "--token", testJoinToken, "--apiserver-advertise-address", "192.0.2.12", "--certificate-key=00ff")
	require.NoError(t, err)
	assert.True(t, o.ControlPlane)
	assert.Equal(t, netip.MustParseAddr("192.0.2.12"), o.VIP.NodeIP, "a master's own address is kubeadm's advertise address")
	assert.Contains(t, string(o.Manifest), "- --master=192.0.2.12:6443", "the watchdog of a master watches its own apiserver too")
	assert.Contains(t, string(o.Manifest), "- --scheduler=wrr", "a master prefers its own apiserver by weight")
	assert.Equal(t, "wrr", o.Service.Service.Scheduler)
	assert.Equal(t, "apiserver.cluster.local:6443", o.Endpoint())
	assert.Equal(t, "--control-plane", o.KubeadmCommand()[len(o.KubeadmCommand())-1])

	// --control-plane given among kubeadm's flags means the same; a master
	// not listed among --master is added to its watchdog's list.
	o, _, err = runJoinFlags(t, "--master", "192.0.2.11", "--node-ip", "192.0.2.13", "--", "--token", testJoinToken, "--control-plane")
	require.NoError(t, err)
	assert.True(t, o.ControlPlane)
	assert.Contains(t, string(o.Manifest), "- --master=192.0.2.13:6443")
	assert.NotContains(t, realServersOf(o), "192.0.2.13:6443", "the one-shot virtual server has only the masters up now")

	// A scheduler the user chose is kept.
	o, _, err = runJoinFlags(t, "--control-plane", "--scheduler", "wlc", "--master", "192.0.2.11", "--node-ip", "192.0.2.13", "--", "--token", testJoinToken)
	require.NoError(t, err)
	assert.Equal(t, "wlc", o.Service.Service.Scheduler)
}

func realServersOf(o kubeadm.JoinOptions) []string {
	var s []string
	for _, rs := range o.Service.RealServers {
		s = append(s, rs.Addr.String())
	}
	return s
}

func TestJoinCmdBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node-ip", "192.0.2.20"}, "--master"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "x"}, `--node-ip "x"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--service-subnet", "10.96.0.0"}, `--service-subnet "10.96.0.0"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--pod-subnet", "10.244.0.0/16,nope"}, `--pod-subnet "10.244.0.0/16,nope": "nope"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--dial-timeout", "0s"}, "--dial-timeout 0s"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag", "hold-down"}, `--care-flag "hold-down"`},
		// What the watchdog refuses, so that its pod would crash-loop.
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--interface", "a/b"}, `--interface "a/b"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--scheduler", "foo"}, `--scheduler "foo"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--timeout", "1s"}, "--timeout 1s: must be shorter than --interval 1s"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag=--timeout=2s"}, "--timeout 2s: must be shorter than --interval 1s"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag=--bogus=1"}, `--care-flag "--bogus=1": --bogus is not a flag of the watchdog`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag=--scheduler=foo"}, `--scheduler "foo"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--health-path", "/readyz\n"}, `--health-path "/readyz\n"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag=--health-path=/x\x01"}, `--health-path "/x\x01"`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--health-path", "/livez", "--care-flag=--health-path=/readyz"}, "--health-path is given as a flag already"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--care-flag=--metrics-addr="}, `--metrics-addr ""`},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--token", testJoinToken}, "kubeadm's own flags go after --"},
		{[]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", testJoinToken}, `unexpected argument "<redacted>"`},
	} {
		_, _, err := runJoinFlags(t, tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
		assert.NotContains(t, err.Error(), "0123456789abcdef", "no token in errors")
	}
}

func TestResetCmdBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--vip", "nope"}, `--vip "nope"`},
		{[]string{"--mode", "bgp"}, `--mode "bgp"`},
		{[]string{"--wait", "0s"}, "--wait 0s"},
	} {
		_, err := runAppCmd(t, newResetCmd, tc.args...)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestJoinCmdSecretFiles(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	keyFile := filepath.Join(dir, "certificate-key")
	key := "8f1c2e8a3b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	require.NoError(t, os.WriteFile(tokenFile, []byte(testJoinToken+"\n"), 0o600))
	require.NoError(t, os.WriteFile(keyFile, []byte(key), 0o600))
	cfg := filepath.Join(dir, "join.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n"), 0o600))

	o, _, err := runJoinFlags(t, "--control-plane", "--master", "192.0.2.11", "--node-ip", "192.0.2.12",
		"--token-file", tokenFile, "--certificate-key-file", keyFile, "--config", cfg, "--", "--discovery-token-ca-cert-hash", "sha256:abc")
	require.NoError(t, err)
	assert.Equal(t, testJoinToken, o.Token)
	assert.Equal(t, key, o.CertificateKey)
	assert.Contains(t, string(o.JoinConfig), "kind: JoinConfiguration")
	assert.True(t, o.UsesConfig())
	assert.NoError(t, o.Validate())
}

func TestJoinCmdBadSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	empty := write("empty", "")
	bad := write("bad", "abcdef.0123456789abcdeZ")
	badKey := write("badkey", "0123456789abcdef")
	good := write("token", testJoinToken)
	base := []string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-file", filepath.Join(dir, "missing")}, "--token-file " + filepath.Join(dir, "missing")},
		{[]string{"--token-file", empty}, "--token-file " + empty + ": the file is empty"},
		{[]string{"--token-file", bad}, "--token-file " + bad + ": not a bootstrap token"},
		{[]string{"--token-file", ""}, "--token-file: empty path"},
		{[]string{"--token-file", good, "--certificate-key-file", badKey}, "--certificate-key-file " + badKey + ": only a master"},
		{[]string{"--control-plane", "--token-file", good, "--certificate-key-file", badKey}, "--certificate-key-file " + badKey + ": not a certificate key"},
		{[]string{"--config", filepath.Join(dir, "nope.yaml")}, "--config: open " + filepath.Join(dir, "nope.yaml")},
		{[]string{"--config", empty}, "--config " + empty + ": the file is empty"},
	} {
		_, _, err := runJoinFlags(t, append(append([]string{}, base...), tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, "%v", tc.args)
		assert.NotContains(t, err.Error(), "0123456789abcde", "no secret in errors")
	}
}

func TestJoinCmdWarnsAboutAnOpenSecretFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(p, []byte(testJoinToken), 0o644))
	require.NoError(t, os.Chmod(p, 0o644))
	var stderr bytes.Buffer
	cmd := newJoinCmdWith(func(*cobra.Command, kubeadm.JoinOptions, string) error { return nil })
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--token-file", p, "--", "--discovery-token-ca-cert-hash", "sha256:abc"})
	require.NoError(t, cmd.ExecuteContext(t.Context()))
	assert.Contains(t, stderr.String(), "readable by other users (mode 0644)")
	assert.NotContains(t, stderr.String(), testJoinToken)
}

// With IPv6 masters and no --vip, the VIP is the default IPv6 VIP, and the
// VIP, the node IP and the masters are all IPv6.
func TestJoinCmdIPv6MastersGetTheIPv6DefaultVIP(t *testing.T) {
	o, _, err := runJoinFlags(t, "--master", "fd00:10::11", "--master", "[fd00:10::12]:6443", "--node-ip", "fd00:10::1",
		"--", "--token", testJoinToken, "--discovery-token-ca-cert-hash", "sha256:abc")
	require.NoError(t, err)
	vip := netip.MustParseAddr(DefaultVIP6)
	assert.Equal(t, netip.AddrPortFrom(vip, 6443), o.Service.Service.VIP)
	assert.Equal(t, ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: "vipctl0", VIP: vip, NodeIP: netip.MustParseAddr("fd00:10::1")}, o.VIP)

	// An explicit --vip wins; an IPv4 one with IPv6 masters is refused.
	o, _, err = runJoinFlags(t, "--vip", "[fd00:99::2]:8443", "--master", "fd00:10::11", "--node-ip", "fd00:10::1", "--", "--token", testJoinToken)
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddrPort("[fd00:99::2]:8443"), o.Service.Service.VIP)
	_, _, err = runJoinFlags(t, "--vip", "10.103.97.2", "--master", "fd00:10::11", "--node-ip", "fd00:10::1", "--", "--token", testJoinToken)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "address family")
}
