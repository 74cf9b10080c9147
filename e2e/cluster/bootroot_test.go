package cluster

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		if !ok || target == "/dev/null" || strings.HasPrefix(target, "/lib/") {
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
