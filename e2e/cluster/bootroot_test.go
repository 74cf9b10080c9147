package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/k8simage"
)

// The harness's supervisor and systemd start the kubelet the same way:
// KubeletArgs expands the drop-in's ExecStart with its Environment= and
// kubeadm's flags file, and the units call the kubelet where the node has it.
func TestKubeletArgsFollowTheDropIn(t *testing.T) {
	env := []byte("KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/containerd/containerd.sock --node-ip=10.31.0.50\"\n")
	assert.Equal(t, []string{
		"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
		"--kubeconfig=/etc/kubernetes/kubelet.conf",
		"--config=/var/lib/kubelet/config.yaml",
		"--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
		"--node-ip=10.31.0.50",
	}, KubeletArgs(env))
	assert.Len(t, KubeletArgs(nil), 3, "before kubeadm wrote its flags")
	for _, u := range []string{KubeletUnit, KubeadmDropIn} {
		require.Contains(t, u, "ExecStart=/usr/local/bin/kubelet")
	}
}

// Every unit the node's systemd is told to start exists, and the network
// unit carries the node's address and gateway.
func TestBootFilesEnableWhatTheyDefine(t *testing.T) {
	spec := &WorkerSpec{NodeIP: "10.31.0.50/24", Gateway: "10.31.0.1"}
	files := bootFiles(spec, "/deb")
	for dst, c := range files {
		target, ok := strings.CutPrefix(c, "->")
		if !ok || !strings.HasPrefix(target, "/etc/") {
			continue
		}
		_, defined := files[target]
		assert.True(t, defined, "%s links to %s, which the node's files define", dst, target)
	}
	net := files["/etc/systemd/system/lab-network.service"]
	assert.Contains(t, net, "ip addr add 10.31.0.50/24 dev eth0")
	assert.Contains(t, net, "default via 10.31.0.1")
	assert.Equal(t, "</deb/lib/systemd/system/containerd.service", files["/lib/systemd/system/containerd.service"])
}

// Installing a node replaces what is at a path, later files winning, and
// never writes through a hard link into the cache it links from.
func TestWriteRootReplacesWithoutWritingThrough(t *testing.T) {
	cache, root := t.TempDir(), t.TempDir()
	lib := filepath.Join(cache, "libc.so.6")
	require.NoError(t, os.WriteFile(lib, []byte("cached"), 0o755))
	other := filepath.Join(cache, "other")
	require.NoError(t, os.WriteFile(other, []byte("other"), 0o644))
	require.NoError(t, writeRoot(root, []k8simage.File{
		{Dst: "/lib/libc.so.6", Src: lib},
		{Dst: "/bin/sh", Link: "busybox"},
		{Dst: "/etc/hosts", Src: other},
	}))
	require.NoError(t, writeRoot(root, []k8simage.File{{Dst: "/lib/libc.so.6", Src: lib}, {Dst: "/bin/sh", Link: "dash"}}))
	l, err := os.Readlink(filepath.Join(root, "bin/sh"))
	require.NoError(t, err)
	assert.Equal(t, "dash", l, "the later link wins")
	require.NoError(t, writeContents(root, map[string]string{"/etc/hosts": "127.0.0.1 localhost\n", "/etc/hostname": "worker1\n"}))
	b, err := os.ReadFile(filepath.Join(root, "etc/hosts"))
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1 localhost\n", string(b))
	b, err = os.ReadFile(other)
	require.NoError(t, err)
	assert.Equal(t, "other", string(b), "the cache's file, which /etc/hosts linked to, is untouched")
	b, err = os.ReadFile(filepath.Join(root, "etc/hostname"))
	require.NoError(t, err)
	assert.Equal(t, "worker1\n", string(b))
}

// A node's own files: its name in hostname and hosts, and a machine ID of
// its own each time.
func TestMachineFilesNameTheNode(t *testing.T) {
	spec := WorkerSpec{Name: "worker1", NodeIP: "10.31.0.50/24"}
	a, b := MachineFiles(spec), MachineFiles(spec)
	assert.Equal(t, "worker1\n", a["/etc/hostname"])
	assert.Contains(t, a["/etc/hosts"], "10.31.0.50 worker1\n")
	assert.Contains(t, a["/etc/os-release"], "PRETTY_NAME=\""+InstalledOS+"\"")
	assert.Len(t, strings.TrimSpace(a["/etc/machine-id"]), 32)
	assert.NotEqual(t, a["/etc/machine-id"], b["/etc/machine-id"])
}
