package kubeadm

import (
	"context"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

func joinDoc(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, yaml.Unmarshal(b, &m))
	return m
}

func TestRenderJoinConfigurationFromFlags(t *testing.T) {
	out, pass, warnings, err := RenderJoinConfiguration(JoinConfigInput{
		Endpoint: "apiserver.cluster.local:6443", ControlPlane: true,
		Args: []string{"--discovery-token-ca-cert-hash", testHash, "--discovery-token-ca-cert-hash=sha256:ff",
			"--node-name=m2", "--cri-socket", "unix:///run/containerd/containerd.sock",
			"--ignore-preflight-errors", "Swap,NumCPU", "--apiserver-advertise-address", "192.0.2.12",
			"--apiserver-bind-port=6443", "--skip-phases", "preflight", "--patches", "/etc/patches",
			"--control-plane", "--v", "5", "--dry-run"},
		Token: testToken, CertificateKey: testCertKey,
	})
	require.NoError(t, err)
	assert.Empty(t, warnings)
	assert.Equal(t, []string{"--v", "5", "--dry-run"}, pass, "flags kubeadm accepts with --config stay on its command line")
	d := joinDoc(t, out)
	assert.Equal(t, "kubeadm.k8s.io/v1beta4", d["apiVersion"])
	assert.Equal(t, "JoinConfiguration", d["kind"])
	assert.Equal(t, "apiserver.cluster.local:6443", at(d, "discovery", "bootstrapToken", "apiServerEndpoint"))
	assert.Equal(t, testToken, at(d, "discovery", "bootstrapToken", "token"))
	assert.Equal(t, []string{testHash, "sha256:ff"}, strs(at(d, "discovery", "bootstrapToken", "caCertHashes")))
	assert.Equal(t, testCertKey, at(d, "controlPlane", "certificateKey"))
	assert.Equal(t, "192.0.2.12", at(d, "controlPlane", "localAPIEndpoint", "advertiseAddress"))
	assert.EqualValues(t, 6443, at(d, "controlPlane", "localAPIEndpoint", "bindPort"))
	assert.Equal(t, "m2", at(d, "nodeRegistration", "name"))
	assert.Equal(t, "unix:///run/containerd/containerd.sock", at(d, "nodeRegistration", "criSocket"))
	assert.Equal(t, []string{"Swap", "NumCPU"}, strs(at(d, "nodeRegistration", "ignorePreflightErrors")))
	assert.Equal(t, []string{"preflight"}, strs(at(d, "skipPhases")))
	assert.Equal(t, "/etc/patches", at(d, "patches", "directory"))
}

func TestRenderJoinConfigurationMergesTheUsers(t *testing.T) {
	user := []byte("# mine\napiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\n" +
		"discovery:\n  bootstrapToken:\n    apiServerEndpoint: 192.0.2.11:6443\n    caCertHashes: [" + testHash + "]\n" +
		"  timeout: 5m0s\nnodeRegistration:\n  name: w1 # the name\n  taints: []\n")
	out, pass, warnings, err := RenderJoinConfiguration(JoinConfigInput{
		Endpoint: "apiserver.cluster.local:6443", Token: testToken, Config: user,
		Args: []string{"--ignore-preflight-errors=Swap"},
	})
	require.NoError(t, err)
	assert.Empty(t, pass)
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], `"192.0.2.11:6443" replaced by "apiserver.cluster.local:6443"`)
	d := joinDoc(t, out)
	assert.Equal(t, "kubeadm.k8s.io/v1beta3", d["apiVersion"], "the user's API version is kept")
	assert.Equal(t, "apiserver.cluster.local:6443", at(d, "discovery", "bootstrapToken", "apiServerEndpoint"))
	assert.Equal(t, testToken, at(d, "discovery", "bootstrapToken", "token"))
	assert.Equal(t, "5m0s", at(d, "discovery", "timeout"))
	assert.Equal(t, "w1", at(d, "nodeRegistration", "name"))
	assert.Equal(t, []string{"Swap"}, strs(at(d, "nodeRegistration", "ignorePreflightErrors")))
	assert.Contains(t, string(out), "# the name", "comments are kept")
	assert.Nil(t, d["controlPlane"], "a worker has no controlPlane section")

	// The token may come from the config itself; a file's replaces it.
	withToken := strings.Replace(string(user), "    caCertHashes", "    token: zzzzzz.0123456789abcdef\n    caCertHashes", 1)
	out, _, warnings, err = RenderJoinConfiguration(JoinConfigInput{Endpoint: "apiserver.cluster.local:6443", Config: []byte(withToken)})
	require.NoError(t, err)
	assert.Equal(t, "zzzzzz.0123456789abcdef", at(joinDoc(t, out), "discovery", "bootstrapToken", "token"))
	assert.Len(t, warnings, 1)
	out, _, warnings, err = RenderJoinConfiguration(JoinConfigInput{Endpoint: "apiserver.cluster.local:6443", Config: []byte(withToken), Token: testToken})
	require.NoError(t, err)
	assert.Equal(t, testToken, at(joinDoc(t, out), "discovery", "bootstrapToken", "token"))
	require.Len(t, warnings, 2)
	assert.NotContains(t, strings.Join(warnings, " "), "zzzzzz", "warnings never show a secret")
}

func TestRenderJoinConfigurationErrorsHideSecrets(t *testing.T) {
	for _, in := range []JoinConfigInput{
		{Args: []string{"--token", "not-a-token-but-secret", "--discovery-token-ca-cert-hash", testHash}, Token: ""},
		{Args: []string{"--token=" + testToken, "--discovery-token-ca-cert-hash", testHash, "--certificate-key", "secretsecret"}, ControlPlane: true},
		{Args: []string{"--token", testToken, "--token", testToken, "--discovery-token-ca-cert-hash", testHash}},
	} {
		in.Endpoint = "apiserver.cluster.local:6443"
		in.Config = []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n")
		_, _, _, err := RenderJoinConfiguration(in)
		require.Error(t, err)
		for _, s := range []string{"not-a-token-but-secret", "secretsecret", testToken} {
			assert.NotContains(t, err.Error(), s)
		}
	}
}

// recordingTemp is OSTemp, remembering the files it wrote.
type recordingTemp struct {
	OSTemp
	paths []string
}

func (r *recordingTemp) WriteTemp(name string, data []byte) (string, func() error, error) {
	p, remove, err := r.OSTemp.WriteTemp(name, data)
	r.paths = append(r.paths, p)
	return p, remove, err
}

func TestJoinWithSecretsFromFilesHandsKubeadmAPrivateConfig(t *testing.T) {
	for _, master := range []bool{false, true} {
		w := newWorld(t)
		o := w.workerOpts()
		if master {
			o = w.masterOpts()
			o.CertificateKey = testCertKey
		}
		o.Token = testToken
		o.KubeadmArgs = []string{"--discovery-token-ca-cert-hash", testHash}
		tmp := &recordingTemp{OSTemp: OSTemp{Dir: t.TempDir()}}
		type seen struct {
			mode fs.FileMode
			doc  map[string]any
		}
		var atKubeadm seen
		w.runner.run = func(_ context.Context, _ string, args []string, out io.Writer) error {
			require.Len(t, args, 3)
			st, err := os.Stat(args[2])
			require.NoError(t, err)
			atKubeadm.mode = st.Mode().Perm()
			b, err := os.ReadFile(args[2])
			require.NoError(t, err)
			atKubeadm.doc = joinDoc(t, b)
			_, _ = io.WriteString(out, "[preflight] using token "+testToken+" and key "+testCertKey+"\n")
			return nil
		}
		j := w.joiner()
		j.Temp = tmp
		require.NoError(t, j.Join(context.Background(), o))
		calls := w.runner.kubeadmCalls()
		require.Len(t, calls, 1)
		require.Len(t, tmp.paths, 1)
		assert.Equal(t, []string{"join", "--config", tmp.paths[0]}, calls[0].args, "no secret and no other flag on kubeadm's command line")
		assert.Equal(t, fs.FileMode(0o600), atKubeadm.mode)
		assert.Equal(t, testToken, at(atKubeadm.doc, "discovery", "bootstrapToken", "token"))
		assert.Equal(t, "apiserver.cluster.local:6443", at(atKubeadm.doc, "discovery", "bootstrapToken", "apiServerEndpoint"))
		if master {
			assert.Equal(t, testCertKey, at(atKubeadm.doc, "controlPlane", "certificateKey"))
		} else {
			assert.Nil(t, atKubeadm.doc["controlPlane"])
		}
		assertAbsent(t, tmp.paths[0])
		w.assertNoSecrets(nil)
		assert.NotContains(t, w.out.String(), "on the command line", "no warning: the secrets came from files")
	}
}

func TestJoinFailureRemovesTheConfigToo(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts()
	o.Token = testToken
	o.KubeadmArgs = []string{"--discovery-token-ca-cert-hash", testHash}
	tmp := &recordingTemp{OSTemp: OSTemp{Dir: t.TempDir()}}
	w.runner.run = func(context.Context, string, []string, io.Writer) error { return io.ErrUnexpectedEOF }
	before := w.state()
	j := w.joiner()
	j.Temp = tmp
	err := j.Join(context.Background(), o)
	require.Error(t, err)
	require.Len(t, tmp.paths, 1)
	assertAbsent(t, tmp.paths[0])
	assert.Equal(t, before, w.state())
	w.assertNoSecrets(err)
}

func TestJoinWarnsAboutSecretsOnTheCommandLine(t *testing.T) {
	w := newWorld(t)
	require.NoError(t, w.joiner().Join(context.Background(), w.workerOpts()))
	assert.Contains(t, w.out.String(), "every local user can read it")
	assert.Equal(t, "join", w.runner.kubeadmCalls()[0].args[0])
}

func TestJoinDryRunShowsTheConfigRedacted(t *testing.T) {
	w := newWorld(t)
	o := w.masterOpts()
	o.KubeadmArgs = []string{"--discovery-token-ca-cert-hash", testHash}
	o.Token, o.CertificateKey, o.DryRun = testToken, testCertKey, true
	before := w.state()
	require.NoError(t, w.joiner().Join(context.Background(), o))
	assert.Equal(t, before, w.state())
	assert.Contains(t, w.out.String(), "token: "+Redacted)
	assert.Contains(t, w.out.String(), "certificateKey: "+Redacted)
	assert.Contains(t, w.out.String(), "would run: kubeadm join --config")
	w.assertNoSecrets(nil)
	assert.Empty(t, w.runner.kubeadmCalls())
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode fs.FileMode) string {
		p := dir + "/" + name
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	good := write("token", testToken+"\n", 0o600)
	s, warn, err := ReadSecretFile("--token-file", good, CheckToken)
	require.NoError(t, err)
	assert.Equal(t, testToken, s)
	assert.Empty(t, warn)

	open := write("open", testToken, 0o644)
	s, warn, err = ReadSecretFile("--token-file", open, CheckToken)
	require.NoError(t, err)
	assert.Equal(t, testToken, s)
	assert.Contains(t, warn, "readable by other users (mode 0644)")

	for _, tc := range []struct{ path, want string }{
		{dir + "/missing", "--token-file " + dir + "/missing"},
		{write("empty", " \n", 0o600), "is empty"},
		{write("bad", "abcdef.0123456789abcdeX\n", 0o600), "not a bootstrap token"},
		{write("two", testToken+"\n"+testToken+"\n", 0o600), "more than one line"},
		{dir, "not a regular file"},
	} {
		_, _, err := ReadSecretFile("--token-file", tc.path, CheckToken)
		require.Error(t, err, tc.path)
		assert.Contains(t, err.Error(), tc.want)
		assert.Contains(t, err.Error(), "--token-file")
		assert.NotContains(t, err.Error(), "0123456789abcde", "the secret is never in an error")
	}
	_, _, err = ReadSecretFile("--certificate-key-file", write("key", "zz"+testCertKey[2:], 0o600), CheckCertificateKey)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), testCertKey[2:])
}

func TestNewSecretsAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, err := NewBootstrapToken()
		require.NoError(t, err)
		require.NoError(t, CheckToken(tok), tok)
		key, err := NewCertificateKey()
		require.NoError(t, err)
		require.NoError(t, CheckCertificateKey(key))
		assert.False(t, seen[tok])
		seen[tok] = true
	}
}

func assertAbsent(t *testing.T, path string) {
	t.Helper()
	_, err := os.Stat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist, "%s is gone", path)
}
