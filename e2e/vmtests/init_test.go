package vmtests

import (
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/kubeadm"
)

// The lifecycle scenarios run the README's commands (docs/join.md, "The
// cluster's life") with the stand-in kubeadm: this node (10.10.0.1) is the
// first master, the lab's masters the others.

// secretFile writes a secret file as the user would copy it, mode 0600.
func secretFile(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(value+"\n"), 0o600))
	return p
}

// assertPrivateConfig checks that kubeadm got its configuration in a
// 0600 file that is gone now, and no secret on its command line.
func assertPrivateConfig(t *testing.T, c lab.KubeadmCall, secrets ...string) {
	t.Helper()
	require.NotEmpty(t, c.ConfigFile, "kubeadm got --config: %v", c.Args)
	assert.Equal(t, fs.FileMode(0o600), c.ConfigMode, "the configuration was private while kubeadm ran")
	assertAbsent(t, c.ConfigFile)
	assertAbsent(t, filepath.Dir(c.ConfigFile))
	for _, s := range secrets {
		require.NotEmpty(t, s)
		assert.Contains(t, c.Config, s, "kubeadm got the secret in its configuration")
		assert.NotContains(t, strings.Join(c.Args, " "), s, "no secret on kubeadm's command line")
	}
}

// This node runs its own stand-in apiserver (lab.NewMaster): init maps the
// name to the VIP once, sets up the VIP with the node's own apiserver as
// its one real server, and kubeadm init's control-plane endpoint reaches
// it through the VIP. The watchdog's manifest comes after kubeadm.
func TestInitFirstMasterThenReset(t *testing.T) {
	l := lab.NewMaster(t, lab.IPv4, 2)
	base := realHosts(t)
	before := lab.HostsIdentity(etcHosts)
	clean := lab.Observe(t)
	fk := l.FakeKubeadm(0)
	p := newJoinPaths(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	cfg := filepath.Join(dir, "kubeadm.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: "+pki+"\n"), 0o600))
	secrets := filepath.Join(dir, "vipctl-join")

	// README: vipctl init --master SELF --master B --master C
	masters := []string{"--master", lab.NodeIP.String(), "--master", l.Masters[0].IP.String(), "--master", l.Masters[1].IP.String()}
	args := append(append([]string{"init"}, masters...), "--config", cfg, "--kube-proxy-mode", "nftables", "--kubeadm", fk.Path, "--secrets-dir", secrets,
		"--image", "e2e.local/vipctl:test")
	args = append(args, p.flags()...)
	stdout, stderr, err := l.RunWith(fk.Env, args...)
	t.Logf("vipctl init stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.NoError(t, err)

	calls := fk.Calls(t)
	require.Len(t, calls, 1, "kubeadm ran once")
	c := calls[0]
	require.Empty(t, c.Err)
	assert.Equal(t, []string{"init", "--config", c.ConfigFile, "--upload-certs"}, c.Args)
	assert.Equal(t, []string{lab.VIP.String()}, c.Resolved, "while kubeadm init runs, the name resolves to the VIP, as on every node")
	assert.Regexp(t, `^local saw 10\.10\.0\.1:\d+$`, c.Answer, "the control-plane endpoint reaches this node's own apiserver through the VIP")
	assert.NotEqual(t, before, c.Hosts, "the hosts file was written before kubeadm init")
	assert.Equal(t, c.Hosts, lab.HostsIdentity(etcHosts), "and never after: written exactly once")
	token, err := os.ReadFile(filepath.Join(secrets, "token"))
	require.NoError(t, err)
	key, err := os.ReadFile(filepath.Join(secrets, "certificate-key"))
	require.NoError(t, err)
	assertPrivateConfig(t, c, strings.TrimSpace(string(token)), strings.TrimSpace(string(key)))
	for _, f := range []string{"token", "certificate-key"} {
		st, err := os.Stat(filepath.Join(secrets, f))
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o600), st.Mode().Perm(), f)
	}
	for _, want := range []string{"controlPlaneEndpoint: apiserver.cluster.local:6443", "advertiseAddress: 10.10.0.1", "- 10.103.97.2",
		"- 10.10.0.11", "- 10.10.0.12", "mode: nftables", "- 10.103.97.2/32"} {
		assert.Contains(t, c.Config, want)
	}
	for _, s := range []string{string(token), string(key)} {
		assert.NotContains(t, stdout+stderr, strings.TrimSpace(s), "no secret is printed")
	}

	// The join lines, with the masters and the cluster CA's hash.
	ca, err := os.ReadFile(l.CAFile)
	require.NoError(t, err)
	hash, err := kubeadm.CAHash(ca)
	require.NoError(t, err)
	list := "--vip 10.103.97.2:6443 --master 10.10.0.1:6443 --master 10.10.0.11:6443 --master 10.10.0.12:6443"
	assert.Contains(t, stdout, "vipctl join "+list+" --token-file "+filepath.Join(secrets, "token")+" -- --discovery-token-ca-cert-hash "+hash)
	assert.Contains(t, stdout, "vipctl join --control-plane "+list+" --token-file "+filepath.Join(secrets, "token")+
		" --certificate-key-file "+filepath.Join(secrets, "certificate-key")+" -- --discovery-token-ca-cert-hash "+hash)
	assert.Equal(t, []string{lab.VIP.String()}, addrStrings(hostsMapping(t)), "the name stays on the VIP")
	assert.Equal(t, map[string]int{l.Local.Addr.String(): ipvs.LocalWeight}, lab.Observe(t).RealServers,
		"the VIP's one real server is this master's own apiserver, with the local weight")
	care := careCommand(t, p.manifest)
	for _, m := range l.AllMasters() {
		assert.Contains(t, care, "--master="+m.Addr.String(), "the watchdog's manifest lists every master")
	}
	assert.Contains(t, care, "--scheduler=wrr")

	// README, uninstall: vipctl reset (then kubeadm reset, kubeadm's own).
	_, err = l.Run(append([]string{"reset"}, p.flags()...)...)
	require.NoError(t, err)
	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	assert.Equal(t, string(base), string(after), "the hosts file is byte-identical")
	assert.Equal(t, clean, lab.Observe(t), "no IPVS, no VIP left")
}

func TestInitFailingKubeadmLeavesTheNodeAsBefore(t *testing.T) {
	l := lab.New(t, 1)
	base := realHosts(t)
	clean := lab.Observe(t)
	fk := l.FakeKubeadm(1)
	secrets := filepath.Join(t.TempDir(), "vipctl-join")
	p := newJoinPaths(t)
	stdout, stderr, err := l.RunWith(fk.Env, append([]string{"init", "--master", lab.NodeIP.String(), "--master", l.Masters[0].IP.String(),
		"--kubeadm", fk.Path, "--secrets-dir", secrets}, p.flags()...)...)
	t.Logf("vipctl init stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Error(t, err)
	assert.Contains(t, stderr, `init failed at step "kubeadm"`)
	assert.Contains(t, stderr, "the node is as before")
	calls := fk.Calls(t)
	require.Len(t, calls, 1)
	assert.Equal(t, []string{lab.VIP.String()}, calls[0].Resolved)
	assertPrivateConfig(t, calls[0])
	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	assert.Equal(t, string(base), string(after))
	assert.Equal(t, clean, lab.Observe(t), "the virtual server and the VIP are undone")
	assertAbsent(t, secrets)
	assertAbsent(t, p.root)
}

func TestJoinWithSecretFiles(t *testing.T) {
	for _, master := range []bool{false, true} {
		name := "worker"
		if master {
			name = "master"
		}
		t.Run(name, func(t *testing.T) {
			l, base, p, _, fk := joinScene(t, 3, 0)
			token := secretFile(t, "token", e2eToken)
			// README: vipctl join --master A --master B --master C --token-file F -- --discovery-token-ca-cert-hash H
			args := joinArgs(l, fk, p, "--token-file", token)
			if master {
				args = append(args, "--control-plane", "--certificate-key-file", secretFile(t, "certificate-key", e2eCertKey))
			}
			args = append(args, "--", "--discovery-token-ca-cert-hash", e2eHash)
			stdout, stderr, err := l.RunWith(fk.Env, args...)
			t.Logf("vipctl join stdout:\n%s\nstderr:\n%s", stdout, stderr)
			require.NoError(t, err)
			assertNoSecrets(t, stdout, stderr)
			assert.NotContains(t, stdout, "visible", "no warning about secrets on the command line")

			calls := fk.Calls(t)
			require.Len(t, calls, 1)
			c := calls[0]
			assert.Equal(t, []string{"join", "--config", c.ConfigFile}, c.Args)
			want := []string{e2eToken}
			if master {
				want = append(want, e2eCertKey)
			}
			assert.Equal(t, []string{lab.VIP.String()}, c.Resolved, "a worker and a master join through the VIP")
			assertPrivateConfig(t, c, want...)
			assert.Contains(t, c.Config, "apiServerEndpoint: apiserver.cluster.local:6443")
			require.Empty(t, c.Err, "kubeadm reached an apiserver at the configuration's endpoint")
			assert.Regexp(t, `^master[123] saw 10\.10\.0\.1:\d+$`, c.Answer)

			_, err = l.Run(append([]string{"reset", "--vip", lab.VIPPort.String()}, p.flags()...)...)
			require.NoError(t, err)
			after, err := os.ReadFile(etcHosts)
			require.NoError(t, err)
			assert.Equal(t, string(base), string(after))
		})
	}
}

func TestJoinRefusesBadSecretFilesBeforeAnyChange(t *testing.T) {
	l, base, p, clean, fk := joinScene(t, 1, 0)
	bad := secretFile(t, "token", "not-a-token")
	_, stderr, err := l.RunWith(fk.Env, append(joinArgs(l, fk, p, "--token-file", bad, "--"), "--discovery-token-ca-cert-hash", e2eHash)...)
	require.Error(t, err)
	assert.Contains(t, stderr, "--token-file "+bad+": not a bootstrap token")
	assert.NotContains(t, stderr, "not-a-token", "the secret is not in the error")
	assert.Empty(t, fk.Calls(t))
	after, _ := os.ReadFile(etcHosts)
	assert.Equal(t, string(base), string(after))
	assert.Equal(t, clean, lab.Observe(t))
	assertAbsent(t, p.root)
}

func addrStrings[T interface{ String() string }](as []T) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// TestAddAMasterReRendersTheWorkersManifest is the lifecycle's step 5 on a
// worker: joined with two masters, the manifest re-rendered with a third
// (`vipctl manifest --output-file …`), and the watchdog started from it
// puts the new master into the virtual server.
func TestAddAMasterReRendersTheWorkersManifest(t *testing.T) {
	l, base, p, clean, fk := joinScene(t, 3, 0)
	if _, err := l.Run("care", "--help"); err != nil {
		t.Skipf("`vipctl care` is not registered in this build: %v", err)
	}
	token := secretFile(t, "token", e2eToken)
	args := []string{"join", "--vip", lab.VIPPort.String(), "--kubeadm", fk.Path, "--ca-file", l.CAFile, "--image", "e2e.local/vipctl:test",
		"--master", l.Masters[0].Addr.String(), "--master", l.Masters[1].Addr.String(), "--token-file", token}
	args = append(append(args, p.flags()...), "--", "--discovery-token-ca-cert-hash", e2eHash)
	stdout, stderr, err := l.RunWith(fk.Env, args...)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Len(t, lab.Observe(t).RealServers, 2)

	// README step 5: re-render the worker's manifest with the new list.
	_, err = l.Run("manifest", "--output-file", p.manifest, "--image", "e2e.local/vipctl:test", "--vip", lab.VIPPort.String(),
		"--ca-file", l.CAFile, "--master", l.Masters[0].Addr.String(), "--master", l.Masters[1].Addr.String(),
		"--master", l.Masters[2].Addr.String())
	require.NoError(t, err)
	care := careCommand(t, p.manifest)
	assert.Contains(t, care, "--master="+l.Masters[2].Addr.String())
	// The kubelet would restart the pod; here the watchdog runs from the
	// manifest's command line. A master absent from the kernel starts out
	// of service and comes in after --rise successful probes.
	c := l.StartCareArgs(care...)
	lab.WaitFor(t, 30*time.Second, "the new master in the virtual server", func(rs map[netip.AddrPort]int) bool {
		return len(rs) == 3 && lab.Serving(rs, l.Masters[2])
	})
	c.Stop()
	for _, h := range l.HitVIP(6, 3*time.Second) {
		assert.NoError(t, h.Err)
	}

	_, err = l.Run(append([]string{"reset", "--vip", lab.VIPPort.String()}, p.flags()...)...)
	require.NoError(t, err)
	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	assert.Equal(t, string(base), string(after))
	assert.Equal(t, clean, lab.Observe(t))
}
