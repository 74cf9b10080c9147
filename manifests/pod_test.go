package manifests

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"net/netip"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/care/careconfig"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func minimalCare() careconfig.Config {
	c := careconfig.Default()
	c.Masters = []netip.AddrPort{netip.MustParseAddrPort("192.168.0.2:6443"), netip.MustParseAddrPort("192.168.0.3:6443")}
	return c
}

func fullCare() careconfig.Config {
	c := careconfig.Default()
	c.Masters = []netip.AddrPort{netip.MustParseAddrPort("192.168.0.2:6443"), netip.MustParseAddrPort("192.168.0.3:6443"), netip.MustParseAddrPort("192.168.0.4:6443")}
	c.Mode, c.Interface, c.NodeIP, c.Scheduler = careconfig.ModeRoute, "vip9", netip.MustParseAddr("192.168.0.10"), "wrr"
	c.HealthPath, c.HealthScheme, c.CAFile = "/livez", careconfig.HTTP, "/etc/pki/k8s-ca.pem"
	c.Interval, c.Timeout, c.Rise, c.Fall = 2*time.Second, 1500*time.Millisecond, 3, 4
	c.MetricsAddr = "0.0.0.0:9300"
	c.HoldDown, c.Sentinel = 10*time.Second, false
	c.Kubeconfig, c.StateFile, c.ForgetAfter = "/etc/vipctl/care.conf", "/srv/vipctl/state.json", 10*time.Minute
	return c
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"minimal", Options{Image: "registry.local/vipctl:v1.2.3", Care: minimalCare()}},
		{"full", Options{Image: "registry.local/vipctl:v1.2.3", Care: fullCare()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.opts)
			require.NoError(t, err)
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./manifests -update to create it")
			assert.Equal(t, string(want), string(got))
		})
	}
}

// decode parses rendered YAML strictly into a v1.Pod: a misspelled field fails.
func decode(t *testing.T, data []byte) *corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	require.NoError(t, yaml.UnmarshalStrict(data, &pod))
	return &pod
}

func TestRenderDecodesToPod(t *testing.T) {
	out, err := Render(Options{Care: minimalCare()})
	require.NoError(t, err)
	pod := decode(t, out)

	assert.Equal(t, "v1", pod.APIVersion)
	assert.Equal(t, "Pod", pod.Kind)
	assert.Equal(t, "kube-system", pod.Namespace)
	assert.Equal(t, "vipctl-care", pod.Name)
	assert.True(t, pod.Spec.HostNetwork)
	assert.Equal(t, "system-node-critical", pod.Spec.PriorityClassName)
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]

	assert.Equal(t, DefaultImage(), c.Image)
	assert.True(t, strings.HasPrefix(c.Image, "ghcr.io/vipctl/vipctl:"), c.Image)
	assert.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy)
	assert.Equal(t, []string{
		"/vipctl", "care",
		"--vip=10.103.97.2:6443",
		"--master=192.168.0.2:6443", "--master=192.168.0.3:6443",
		"--ca-file=" + careconfig.DefaultCAFile,
		"--metrics-addr=" + careconfig.DefaultMetricsAddr,
		"--log-format=json",
	}, c.Command)

	// Capabilities: NET_ADMIN only, not privileged.
	require.NotNil(t, c.SecurityContext)
	require.NotNil(t, c.SecurityContext.Privileged)
	assert.False(t, *c.SecurityContext.Privileged)
	require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.NotNil(t, c.SecurityContext.Capabilities)
	assert.Equal(t, []corev1.Capability{"NET_ADMIN"}, c.SecurityContext.Capabilities.Add)
	assert.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)

	// Read-only mounts of /lib/modules, the CA, the kubelet's kubeconfig
	// and certificate, a writable one of the state file's directory, all
	// backed by hostPaths.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	mounted := map[string]string{}
	for _, m := range c.VolumeMounts {
		assert.Equal(t, m.MountPath != "/var/lib/vipctl", m.ReadOnly, "only the state directory is writable: %s", m.MountPath)
		v, ok := vols[m.Name]
		require.True(t, ok, "mount %s has no volume", m.Name)
		require.NotNil(t, v.HostPath, "volume %s", m.Name)
		assert.Equal(t, m.MountPath, v.HostPath.Path, "mounted at the host path")
		mounted[m.MountPath] = string(*v.HostPath.Type)
	}
	assert.Equal(t, map[string]string{
		"/lib/modules":               string(corev1.HostPathDirectory),
		"/etc/kubernetes/pki/ca.crt": string(corev1.HostPathFile),
		careconfig.DefaultKubeconfig: string(corev1.HostPathFile),
		"/var/lib/kubelet/pki":       string(corev1.HostPathDirectory),
		"/var/lib/vipctl":            string(corev1.HostPathDirectoryOrCreate),
	}, mounted)

	// Probes on the metrics address.
	for path, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		require.NotNil(t, p, path)
		require.NotNil(t, p.HTTPGet, path)
		assert.Equal(t, path, p.HTTPGet.Path)
		assert.Equal(t, "127.0.0.1", p.HTTPGet.Host)
		assert.Equal(t, careconfig.DefaultMetricsPort, p.HTTPGet.Port.IntValue())
		assert.Equal(t, corev1.URISchemeHTTP, p.HTTPGet.Scheme)
	}

	assert.True(t, resource.MustParse("10m").Equal(c.Resources.Requests[corev1.ResourceCPU]))
	assert.True(t, resource.MustParse("32Mi").Equal(c.Resources.Requests[corev1.ResourceMemory]))
	assert.NotContains(t, string(out), "status:")
	assert.NotContains(t, string(out), "creationTimestamp")
}

func TestRenderFollowsCareFlags(t *testing.T) {
	care := fullCare()
	out, err := Render(Options{Image: "example.org/vipctl:x", Care: care})
	require.NoError(t, err)
	pod := decode(t, out)
	c := pod.Spec.Containers[0]
	assert.Equal(t, "example.org/vipctl:x", c.Image)
	assert.Equal(t, append(append([]string{"/vipctl", "care"}, care.Args()...), "--log-format=json"), c.Command)
	for _, want := range []string{
		"--mode=route", "--interface=vip9", "--node-ip=192.168.0.10", "--scheduler=wrr",
		"--health-path=/livez", "--health-scheme=http", "--ca-file=/etc/pki/k8s-ca.pem",
		"--interval=2s", "--timeout=1.5s", "--rise=3", "--fall=4", "--metrics-addr=0.0.0.0:9300",
		"--hold-down=10s", "--sentinel=false", "--kubeconfig=/etc/vipctl/care.conf",
		"--state-file=/srv/vipctl/state.json", "--forget-after=10m0s",
	} {
		assert.Contains(t, c.Command, want)
	}
	assert.Equal(t, "--log-format=json", c.Command[len(c.Command)-1])

	// A wildcard metrics address is probed on loopback, on its port.
	assert.Equal(t, "127.0.0.1", c.LivenessProbe.HTTPGet.Host)
	assert.Equal(t, 9300, c.LivenessProbe.HTTPGet.Port.IntValue())
	assert.Equal(t, int32(9300), c.Ports[0].ContainerPort)
	// The CA volume follows --ca-file, the kubeconfig's --kubeconfig (no
	// kubelet directory for a kubeconfig of one's own), the state's
	// --state-file.
	var caPaths []string
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path != "/lib/modules" {
			caPaths = append(caPaths, v.HostPath.Path)
		}
	}
	assert.Equal(t, []string{"/etc/pki/k8s-ca.pem", "/etc/vipctl/care.conf", "/srv/vipctl"}, caPaths)

	// No kubeconfig, no state file: no such mounts.
	care.Kubeconfig, care.StateFile = "", ""
	bare, err := CarePod(Options{Care: care})
	require.NoError(t, err)
	assert.Len(t, bare.Spec.Volumes, 2)
	assert.Contains(t, bare.Spec.Containers[0].Command, "--kubeconfig=")

	// A specific metrics host is probed there.
	care.MetricsAddr = "192.168.0.10:9400"
	pod2, err := CarePod(Options{Care: care})
	require.NoError(t, err)
	assert.Equal(t, "192.168.0.10", pod2.Spec.Containers[0].ReadinessProbe.HTTPGet.Host)
	assert.Equal(t, 9400, pod2.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.IntValue())
}

func TestRenderRejectsBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*careconfig.Config)
		want   []string // substrings of the error: the flag and the value
	}{
		{"no masters", func(c *careconfig.Config) { c.Masters = nil }, []string{"--master"}},
		{"duplicate master", func(c *careconfig.Config) { c.Masters = append(c.Masters, c.Masters[0]) }, []string{"--master", "twice"}},
		{"mode", func(c *careconfig.Config) { c.Mode = "tunnel" }, []string{"--mode", "tunnel"}},
		{"scheme", func(c *careconfig.Config) { c.HealthScheme = "ftp" }, []string{"--health-scheme", "ftp"}},
		{"health path", func(c *careconfig.Config) { c.HealthPath = "readyz" }, []string{"--health-path", "readyz"}},
		{"health path control", func(c *careconfig.Config) { c.HealthPath = "/readyz\n" }, []string{"--health-path"}},
		{"interface", func(c *careconfig.Config) { c.Interface = "a/b" }, []string{"--interface", "a/b"}},
		{"scheduler", func(c *careconfig.Config) { c.Scheduler = "foo" }, []string{"--scheduler", "foo"}},
		{"timeout", func(c *careconfig.Config) { c.Timeout = 2 * time.Second }, []string{"--timeout 2s", "--interval 1s"}},
		{"relative ca", func(c *careconfig.Config) { c.CAFile = "ca.crt" }, []string{"--ca-file", "ca.crt"}},
		{"interval", func(c *careconfig.Config) { c.Interval = -time.Second }, []string{"--interval", "-1s"}},
		{"rise", func(c *careconfig.Config) { c.Rise = -1 }, []string{"--rise", "-1"}},
		{"metrics addr", func(c *careconfig.Config) { c.MetricsAddr = "localhost" }, []string{"--metrics-addr", "localhost"}},
		{"metrics port", func(c *careconfig.Config) { c.MetricsAddr = "127.0.0.1:0" }, []string{"--metrics-addr", "127.0.0.1:0"}},
		{"once", func(c *careconfig.Config) { c.Once = true }, []string{"--once"}},
		{"relative kubeconfig", func(c *careconfig.Config) { c.Kubeconfig = "kubelet.conf" }, []string{"--kubeconfig", "kubelet.conf"}},
		{"state file at the root", func(c *careconfig.Config) { c.StateFile = "/" }, []string{"--state-file", `"/"`}},
		{"forget after", func(c *careconfig.Config) { c.ForgetAfter = -time.Second }, []string{"--forget-after", "-1s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			care := minimalCare()
			tc.change(&care)
			out, err := Render(Options{Care: care})
			require.Error(t, err)
			assert.Nil(t, out)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestReadCareGivesBackTheConfig(t *testing.T) {
	for _, c := range []careconfig.Config{minimalCare(), fullCare()} {
		out, err := Render(Options{Care: c})
		require.NoError(t, err)
		got, _, err := ReadCare(out)
		require.NoError(t, err)
		assert.Equal(t, c, got)
	}
	_, _, err := ReadCare([]byte("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n    command: [/bin/sh]\n"))
	assert.ErrorContains(t, err, "no container runs")
}
