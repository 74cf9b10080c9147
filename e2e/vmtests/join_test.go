package vmtests

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/hosts"
)

// The join scenarios run `vipctl join` against a stand-in kubeadm (the test
// binary, see lab.FakeKubeadm) that checks, at the moment it is run, that
// https://apiserver.cluster.local:6443/ reaches a master. Go's resolver
// reads /etc/hosts, so they edit the VM's real /etc/hosts (/ is a writable
// initramfs) and put it back afterwards.

const (
	e2eToken   = "abcdef.0123456789abcdef"
	e2eCertKey = "5c7e0d7a0f3b4e1c9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f"
	e2eHash    = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	etcHosts   = "/etc/hosts"
	apiName    = "apiserver.cluster.local"
)

// realHosts gives the scenario a known /etc/hosts and puts the VM's back
// when it ends. It returns the content it wrote.
func realHosts(t *testing.T) []byte {
	t.Helper()
	orig, err := os.ReadFile(etcHosts)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	base := []byte("127.0.0.1\tlocalhost\n# the vipctl join e2e\n10.10.0.11 master1.lab\n")
	require.NoError(t, os.WriteFile(etcHosts, base, 0o644))
	t.Cleanup(func() {
		if existed {
			os.WriteFile(etcHosts, orig, 0o644)
		} else {
			os.Remove(etcHosts)
		}
	})
	return base
}

// joinPaths are the paths a scenario's join writes: the manifest folder and
// the modules file under a folder of their own, absent at first.
type joinPaths struct {
	root, manifestDir, manifest, modules string
}

func newJoinPaths(t *testing.T) joinPaths {
	root := filepath.Join(t.TempDir(), "node")
	return joinPaths{
		root:        root,
		manifestDir: filepath.Join(root, "etc", "kubernetes", "manifests"),
		manifest:    filepath.Join(root, "etc", "kubernetes", "manifests", "vipctl-care.yaml"),
		modules:     filepath.Join(root, "etc", "modules-load.d", "vipctl.conf"),
	}
}

func (p joinPaths) flags() []string {
	return []string{"--manifest-dir", p.manifestDir, "--modules-file", p.modules}
}

// joinScene is a node before `vipctl join`: a lab of n masters, the
// node's /etc/hosts, the paths join writes, the kernel's state, and a
// stand-in kubeadm that exits with exit.
func joinScene(t *testing.T, n, exit int) (*lab.Lab, []byte, joinPaths, lab.Observed, *lab.FakeKubeadm) {
	t.Helper()
	return joinSceneIn(t, lab.IPv4, n, exit)
}

// joinSceneIn is joinScene with the addresses of family fam.
func joinSceneIn(t *testing.T, fam lab.Family, n, exit int) (*lab.Lab, []byte, joinPaths, lab.Observed, *lab.FakeKubeadm) {
	t.Helper()
	l := lab.NewIn(t, fam, n)
	base := realHosts(t)
	p := newJoinPaths(t)
	return l, base, p, l.Observe(t), l.FakeKubeadm(exit)
}

// joinArgs is a `vipctl join` command line for the lab. The IPv6 lab's VIP
// is vipctl's default IPv6 VIP, so with IPv6 masters --vip is left out and
// the default must be picked.
func joinArgs(l *lab.Lab, fk *lab.FakeKubeadm, p joinPaths, extra ...string) []string {
	args := []string{"join", "--kubeadm", fk.Path, "--ca-file", l.CAFile, "--image", "e2e.local/vipctl:test"}
	if l.VIP.Is4() {
		args = append(args, "--vip", l.VIPPort().String())
	}
	for _, m := range l.Masters {
		args = append(args, "--master", m.Addr.String())
	}
	args = append(args, p.flags()...)
	return append(args, extra...)
}

var kubeadmFlags = []string{"--token", e2eToken, "--discovery-token-ca-cert-hash", e2eHash}

func hostsMapping(t *testing.T) []netip.Addr {
	t.Helper()
	ms, err := hosts.File{Path: etcHosts}.Lookup(apiName)
	require.NoError(t, err)
	var out []netip.Addr
	for _, m := range ms {
		out = append(out, m.Addr)
	}
	return out
}

func assertNoSecrets(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		assert.NotContains(t, s, e2eToken, "the token is never printed")
		assert.NotContains(t, s, e2eCertKey, "the certificate key is never printed")
	}
}

func assertAbsent(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist, "%s is absent", path)
}

// careCommand returns the watchdog's command line from the manifest,
// without the image's binary path.
func careCommand(t *testing.T, manifest string) []string {
	t.Helper()
	b, err := os.ReadFile(manifest)
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, yaml.Unmarshal(b, &pod))
	require.Len(t, pod.Spec.Containers, 1)
	cmd := pod.Spec.Containers[0].Command
	require.GreaterOrEqual(t, len(cmd), 2)
	require.Equal(t, "care", cmd[1], "the pod runs vipctl care: %v", cmd)
	return cmd[1:]
}

// hostPattern is a regular expression matching a, bracketed when IPv6, as
// in "[fd00:10::1]:41234".
func hostPattern(a netip.Addr) string {
	if a.Is6() {
		return regexp.QuoteMeta("[" + a.String() + "]")
	}
	return regexp.QuoteMeta(a.String())
}

func TestJoinWorkerThroughTheVIPThenReset(t *testing.T) {
	eachFamily(t, testJoinWorkerThroughTheVIPThenReset)
}

func testJoinWorkerThroughTheVIPThenReset(t *testing.T, fam lab.Family) {
	l, base, p, clean, fk := joinSceneIn(t, fam, 3, 0)

	stdout, stderr, err := l.RunWith(fk.Env, append(joinArgs(l, fk, p, "--"), kubeadmFlags...)...)
	t.Logf("vipctl join stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.NoError(t, err)
	assertNoSecrets(t, stdout, stderr)
	assert.Contains(t, stdout, "--token <redacted>")
	assert.Contains(t, stderr, "[preflight] called with: join apiserver.cluster.local:6443 --token <redacted>",
		"kubeadm's output is passed on, redacted")

	calls := fk.Calls(t)
	require.Len(t, calls, 1, "kubeadm ran once")
	c := calls[0]
	assert.Equal(t, append([]string{"join", "apiserver.cluster.local:6443"}, kubeadmFlags...), c.Args)
	assert.Equal(t, []string{l.VIP.String()}, c.Resolved, "when kubeadm runs, the name resolves to the VIP")
	require.Empty(t, c.Err, "kubeadm reached an apiserver")
	assert.Regexp(t, `^master[123] saw `+hostPattern(l.NodeIP)+`:\d+$`, c.Answer, "a master answered through the VIP and saw the node IP")

	joined := l.Observe(t)
	assert.Equal(t, []string{"TCP " + l.VIPPort().String() + " rr"}, joined.Services)
	assert.Len(t, joined.RealServers, 3)
	assert.True(t, joined.VIPOnLink)
	assert.Equal(t, l.NodeIP.String(), joined.LocalSrc)
	assert.Equal(t, []netip.Addr{l.VIP}, hostsMapping(t))
	mods, err := os.ReadFile(p.modules)
	require.NoError(t, err)
	assert.Contains(t, string(mods), "\nip_vs\nip_vs_rr\n")

	// The watchdog, started from the manifest's own command line, keeps
	// the node right: after a flush it puts the virtual server back.
	if _, err := l.Run("care", "--help"); err != nil {
		t.Logf("SKIPPED the watchdog part: `vipctl care` is not registered in this build (%v)", err)
	} else {
		care := careCommand(t, p.manifest)
		assert.Contains(t, care, "--ca-file="+l.CAFile)
		lab.FlushIPVS(t)
		require.Empty(t, l.Observe(t).Services)
		_, err := l.Run(append(care, "--once")...)
		require.NoError(t, err, "vipctl %s --once", strings.Join(care, " "))
		assert.Equal(t, joined, l.Observe(t), "the watchdog restored the virtual server")
		for _, h := range l.HitVIP(6, 3*time.Second) {
			assert.NoError(t, h.Err)
		}
	}

	// The IPv6 reset finds the VIP in the watchdog's manifest.
	resetArgs := []string{"reset", "--manifest-dir", p.manifestDir, "--modules-file", p.modules}
	if l.VIP.Is4() {
		resetArgs = append(resetArgs, "--vip", l.VIPPort().String())
	}
	out, err := l.Run(resetArgs...)
	require.NoError(t, err)
	assert.Contains(t, out, "kubeadm reset")
	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	assert.Equal(t, string(base), string(after), "the hosts file is byte-identical")
	assert.Equal(t, clean, l.Observe(t), "no rule, no interface, no route left")
	assertAbsent(t, p.manifest)
	assertAbsent(t, p.modules)

	// Reset again: nothing to do, no error, nothing changes.
	_, err = l.Run(resetArgs...)
	require.NoError(t, err)
	assert.Equal(t, clean, l.Observe(t))
	after, _ = os.ReadFile(etcHosts)
	assert.Equal(t, string(base), string(after))
}

func TestJoinFailingKubeadmLeavesTheNodeAsBefore(t *testing.T) {
	l, base, p, clean, fk := joinScene(t, 3, 1)

	stdout, stderr, err := l.RunWith(fk.Env, append(joinArgs(l, fk, p, "--"), kubeadmFlags...)...)
	t.Logf("vipctl join stdout:\n%s\nstderr:\n%s", stdout, stderr)
	require.Error(t, err)
	assert.Contains(t, stderr, `join failed at step "kubeadm"`)
	assert.Contains(t, stderr, "error execution phase preflight: couldn't validate the identity", "kubeadm's output is reported")
	assert.Contains(t, stderr, "the node is as before")
	assertNoSecrets(t, stdout, stderr)

	calls := fk.Calls(t)
	require.Len(t, calls, 1)
	assert.Regexp(t, `^master[123] saw`, calls[0].Answer, "the VIP worked while kubeadm ran")

	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	assert.Equal(t, string(base), string(after), "the hosts file is byte-identical")
	assert.Equal(t, clean, lab.Observe(t), "no rule, no interface, no route left")
	assertAbsent(t, p.root) // not even the folders the join created
}

func TestJoinDryRunChangesNothing(t *testing.T) {
	l, base, p, clean, fk := joinScene(t, 2, 0)

	stdout, stderr, err := l.RunWith(fk.Env, append(joinArgs(l, fk, p, "--dry-run", "--"), kubeadmFlags...)...)
	require.NoError(t, err, stderr)
	assertNoSecrets(t, stdout, stderr)
	for _, s := range []string{"would map apiserver.cluster.local to 10.103.97.2", "would write " + p.manifest, "would write " + p.modules, "would run: "} {
		assert.Contains(t, stdout, s)
	}
	assert.Empty(t, fk.Calls(t), "kubeadm did not run")
	after, _ := os.ReadFile(etcHosts)
	assert.Equal(t, string(base), string(after))
	assert.Equal(t, clean, lab.Observe(t))
	assertAbsent(t, p.root)
}
