package manifests

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func minimalCare() Care {
	return Care{VIP: "10.103.97.2:6443", Masters: []string{"192.168.0.2:6443", "192.168.0.3"}}
}

func fullCare() Care {
	return Care{
		VIP:          "10.103.97.2:6443",
		Masters:      []string{"192.168.0.2:6443", "192.168.0.3:6443", "192.168.0.4:6443"},
		Mode:         "route",
		Interface:    "vip9",
		NodeIP:       "192.168.0.10",
		Scheduler:    "wrr",
		HealthPath:   "/livez",
		HealthScheme: "https",
		CAFile:       "/etc/pki/k8s-ca.pem",
		Interval:     2 * time.Second,
		Timeout:      1500 * time.Millisecond,
		Rise:         3,
		Fall:         4,
		MetricsAddr:  "0.0.0.0:9300",
		Extra:        []string{"--hold-down=5s", "--sentinel=false"},
	}
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
		"--master=192.168.0.2:6443", "--master=192.168.0.3",
		"--ca-file=" + DefaultCAFile,
		"--metrics-addr=" + DefaultMetricsAddr,
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

	// Read-only mounts of /lib/modules and the CA, backed by hostPaths.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	mounted := map[string]string{}
	for _, m := range c.VolumeMounts {
		assert.True(t, m.ReadOnly, "mount %s must be read-only", m.MountPath)
		v, ok := vols[m.Name]
		require.True(t, ok, "mount %s has no volume", m.Name)
		require.NotNil(t, v.HostPath, "volume %s", m.Name)
		assert.Equal(t, m.MountPath, v.HostPath.Path, "mounted at the host path")
		mounted[m.MountPath] = string(*v.HostPath.Type)
	}
	assert.Equal(t, map[string]string{
		"/lib/modules":               string(corev1.HostPathDirectory),
		"/etc/kubernetes/pki/ca.crt": string(corev1.HostPathFile),
	}, mounted)

	// Probes on the metrics address.
	for path, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		require.NotNil(t, p, path)
		require.NotNil(t, p.HTTPGet, path)
		assert.Equal(t, path, p.HTTPGet.Path)
		assert.Equal(t, "127.0.0.1", p.HTTPGet.Host)
		assert.Equal(t, DefaultMetricsPort, p.HTTPGet.Port.IntValue())
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
	assert.Equal(t, append([]string{"/vipctl", "care"}, care.Args()...), c.Command)
	for _, want := range []string{
		"--mode=route", "--interface=vip9", "--node-ip=192.168.0.10", "--scheduler=wrr",
		"--health-path=/livez", "--health-scheme=https", "--ca-file=/etc/pki/k8s-ca.pem",
		"--interval=2s", "--timeout=1.5s", "--rise=3", "--fall=4", "--metrics-addr=0.0.0.0:9300",
		"--hold-down=5s", "--sentinel=false",
	} {
		assert.Contains(t, c.Command, want)
	}
	assert.Equal(t, "--log-format=json", c.Command[len(c.Command)-1])

	// A wildcard metrics address is probed on loopback, on its port.
	assert.Equal(t, "127.0.0.1", c.LivenessProbe.HTTPGet.Host)
	assert.Equal(t, 9300, c.LivenessProbe.HTTPGet.Port.IntValue())
	assert.Equal(t, int32(9300), c.Ports[0].ContainerPort)
	// The CA volume follows --ca-file.
	var caPaths []string
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil && v.HostPath.Path != "/lib/modules" {
			caPaths = append(caPaths, v.HostPath.Path)
		}
	}
	assert.Equal(t, []string{"/etc/pki/k8s-ca.pem"}, caPaths)

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
		change func(*Care)
		want   []string // substrings of the error: the flag and the value
	}{
		{"no vip", func(c *Care) { c.VIP = "" }, []string{"--vip", `""`}},
		{"vip hostname", func(c *Care) { c.VIP = "vip.example.com:6443" }, []string{"--vip", "vip.example.com:6443"}},
		{"no masters", func(c *Care) { c.Masters = nil }, []string{"--master"}},
		{"bad master port", func(c *Care) { c.Masters = []string{"10.0.0.1:99999"} }, []string{"--master", "10.0.0.1:99999"}},
		{"duplicate master", func(c *Care) { c.Masters = []string{"10.0.0.1:6443", "10.0.0.1:6443"} }, []string{"--master", "twice"}},
		{"mode", func(c *Care) { c.Mode = "tunnel" }, []string{"--mode", "tunnel"}},
		{"node ip", func(c *Care) { c.NodeIP = "node1" }, []string{"--node-ip", "node1"}},
		{"scheme", func(c *Care) { c.HealthScheme = "ftp" }, []string{"--health-scheme", "ftp"}},
		{"health path", func(c *Care) { c.HealthPath = "readyz" }, []string{"--health-path", "readyz"}},
		{"relative ca", func(c *Care) { c.CAFile = "ca.crt" }, []string{"--ca-file", "ca.crt"}},
		{"interval", func(c *Care) { c.Interval = -time.Second }, []string{"--interval", "-1s"}},
		{"rise", func(c *Care) { c.Rise = -1 }, []string{"--rise", "-1"}},
		{"metrics addr", func(c *Care) { c.MetricsAddr = "localhost" }, []string{"--metrics-addr", "localhost"}},
		{"metrics host", func(c *Care) { c.MetricsAddr = "localhost:9282" }, []string{"--metrics-addr", "localhost:9282"}},
		{"extra not a flag", func(c *Care) { c.Extra = []string{"hold-down=5s"} }, []string{"hold-down=5s"}},
		{"extra repeats a field", func(c *Care) { c.Extra = []string{"--ca-file=/x"} }, []string{"--ca-file=/x", "--ca-file"}},
		{"extra log format", func(c *Care) { c.Extra = []string{"--log-format=console"} }, []string{"--log-format=console"}},
		{"metrics port", func(c *Care) { c.MetricsAddr = "127.0.0.1:0" }, []string{"--metrics-addr", "127.0.0.1:0"}},
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
