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
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/image"
	"github.com/vipctl/vipctl/manifests"
)

// runAppCmd runs a command built by newCmd with args and returns its stdout.
func runAppCmd(t *testing.T, newCmd func(*app) *cobra.Command, args ...string) (string, error) {
	t.Helper()
	cmd := newCmd(&app{log: zap.NewNop()})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestManifestCmdPrints(t *testing.T) {
	out, err := runAppCmd(t, newManifestCmd, "--master", "192.168.0.2", "--master", "192.168.0.3:6443",
		"--mode", "route", "--interval", "2s", "--rise", "3", "--image", "registry.local/vipctl:v1", "--", "--hold-down=10s")
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict([]byte(out), &pod))
	c := pod.Spec.Containers[0]
	assert.Equal(t, "registry.local/vipctl:v1", c.Image)
	assert.Equal(t, []string{"/vipctl", "care", "--vip=10.103.97.2:6443", "--master=192.168.0.2:6443", "--master=192.168.0.3:6443",
		"--mode=route", "--ca-file=/etc/kubernetes/pki/ca.crt", "--interval=2s", "--rise=3",
		"--metrics-addr=127.0.0.1:9282", "--hold-down=10s", "--log-format=json"}, c.Command, "only the flags given, plus the ones the pod depends on")
}

func TestManifestCmdWritesFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	path := filepath.Join(dir, "vipctl-care.yaml")
	_, err := runAppCmd(t, newManifestCmd, "--output-file", path, "--master", "192.168.0.2")
	require.ErrorContains(t, err, "the folder "+dir+" does not exist", "a missing folder is not created silently")
	require.NoError(t, os.Mkdir(dir, 0o700))
	out, err := runAppCmd(t, newManifestCmd, "--output-file", path, "--master", "192.168.0.2,192.168.0.3")
	require.NoError(t, err)
	assert.Empty(t, out)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	c := careconfig.Default()
	c.Masters = []netip.AddrPort{netip.MustParseAddrPort("192.168.0.2:6443"), netip.MustParseAddrPort("192.168.0.3:6443")}
	want, err := manifests.Render(manifests.Options{Care: c})
	require.NoError(t, err)
	assert.Equal(t, string(want), string(data))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
}

func TestManifestCmdErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vipctl-care.yaml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--output-file", path}, "master"},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--mode", "tunnel"}, `--mode "tunnel"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--vip", "vip:6443"}, `--vip "vip:6443"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "stray"}, `"stray"`},
		// What the watchdog refuses, so that its pod would crash-loop.
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--interface", "a/b"}, `--interface "a/b"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--scheduler", "foo"}, `--scheduler "foo"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--timeout", "1s"}, "--timeout 1s: must be shorter than --interval 1s"},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--health-path", "/readyz\r\nHost: x"}, `--health-path "/readyz\r\nHost: x"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--interval", "1e300"}, `"1e300"`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--", "--bogus=1"}, `extra care argument "--bogus=1": --bogus is not a flag of the watchdog`},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--", "--resync-period=1ms"}, "--resync-period 1ms"},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--", "--once=true"}, "--once"},
		{[]string{"--output-file", path, "--master", "192.168.0.2", "--mode", "route", "--", "--mode=link"}, "--mode is given as a flag already"},
	} {
		_, err := runAppCmd(t, newManifestCmd, tc.args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want)
	}
	assert.NoFileExists(t, path, "nothing is written on error")
}

func TestManifestStartsTheImagesBinary(t *testing.T) {
	assert.Equal(t, image.BinaryPath, manifests.BinaryPath)
	assert.Equal(t, image.DefaultRepository, manifests.DefaultImageRepository)
}

func TestManifestMetricsAddrReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipctl-care.yaml")
	_, err := runAppCmd(t, newManifestCmd, "--output-file", path, "--master", "192.168.0.2", "--metrics-addr", ":9300")
	require.NoError(t, err)
	addr, ok, err := manifestMetricsAddr(path)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, ":9300", addr)

	_, ok, err = manifestMetricsAddr(filepath.Join(t.TempDir(), "absent.yaml"))
	require.NoError(t, err)
	assert.False(t, ok, "no manifest")
}

// With IPv6 masters and no --vip, the manifest's watchdog gets the default
// IPv6 VIP, bracketed; `vipctl reset` reads it back from the manifest.
func TestManifestCmdIPv6DefaultVIPAndResetReadsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vipctl-care.yaml")
	_, err := runAppCmd(t, newManifestCmd, "--output-file", path, "--master", "fd00:10::11", "--master", "[fd00:10::12]:6443")
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(data, &pod))
	assert.Contains(t, pod.Spec.Containers[0].Command, "--vip=["+DefaultVIP6+"]:6443")
	vip, ok := manifestVIP(path)
	require.True(t, ok)
	assert.Equal(t, "["+DefaultVIP6+"]:6443", vip)
	_, ok = manifestVIP(filepath.Join(t.TempDir(), "absent.yaml"))
	assert.False(t, ok, "no manifest: reset keeps its default")
}
