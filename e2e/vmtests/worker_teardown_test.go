package vmtests

import (
	"os"
	"os/exec"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vishvananda/netlink"
)

// teardown uninstalls the worker as docs/join.md says (step 8): `vipctl
// reset`, then `kubeadm reset -f`, and checks that nothing of vipctl is
// left: the hosts file byte-identical to before the join, no virtual
// server for the VIP, no vipctl0, no manifest, modules-load file, state
// file or join secrets. kubeadm reset asks systemd to stop the kubelet:
// after the reboot systemd is there and does; on a boot without it the
// harness stops its supervisor first.
func (w *worker) teardown(hostsBefore []byte) {
	t := w.t
	const (
		manifest = "/etc/kubernetes/manifests/vipctl-care.yaml"
		modules  = "/etc/modules-load.d/vipctl.conf"
		state    = "/var/lib/vipctl/masters.json"
		secrets  = "/etc/kubernetes/vipctl-join"
	)
	for _, p := range []string{manifest, modules, state, secrets} {
		_, err := os.Stat(p)
		t.Logf("before the reset: %s exists: %v", p, err == nil)
	}
	o, err := exec.Command("/usr/local/bin/vipctl", "reset").CombinedOutput()
	t.Logf("vipctl reset:\n%s", o)
	require.NoError(t, err, "vipctl reset")
	o, err = exec.Command("/usr/local/bin/kubeadm", "reset", "-f").CombinedOutput()
	t.Logf("kubeadm reset -f:\n%s", o)
	require.NoError(t, err, "kubeadm reset -f")

	hosts, err := os.ReadFile("/etc/hosts")
	require.NoError(t, err)
	assert.Equal(t, string(hostsBefore), string(hosts), "/etc/hosts after the resets, byte for byte as before the join")
	_, err = os.Stat("/proc/net/ip_vs")
	require.NoError(t, err, "IPVS still loaded (the modules stay until reboot): its table is readable")
	assert.Nil(t, procRealServers(), "no IPVS virtual server %s", lab.VIPPort)
	_, err = netlink.LinkByName("vipctl0")
	assert.Error(t, err, "no vipctl0 interface")
	for _, p := range []string{manifest, modules, state, "/var/lib/vipctl", secrets} {
		_, err := os.Lstat(p)
		assert.ErrorIs(t, err, os.ErrNotExist, "%s after the resets", p)
	}
}
