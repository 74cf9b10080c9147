package kubeadm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/ipvs"
)

var initNodeIP = netip.MustParseAddr("192.0.2.20")

// testCA returns a self-signed CA certificate in PEM and its discovery
// hash, computed here from the public key.
func testCA(t *testing.T) ([]byte, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	sum := sha256.Sum256(spki)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), "sha256:" + hex.EncodeToString(sum[:])
}

// initOpts renders the configuration for this node (192.0.2.20) among
// three masters, with the certificates in the world's folder.
func (w *world) initOpts(user string) InitOptions {
	w.t.Helper()
	if user == "" {
		user = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: " + w.pkiDir() + "\n"
	}
	masters := []string{"192.0.2.20", "192.0.2.12", "192.0.2.13"}
	cfg, _, err := Merge(Options{VIP: testVIP.String(), Masters: masters, AdvertiseAddress: initNodeIP.String()}, []byte(user))
	require.NoError(w.t, err)
	o := InitOptions{Config: cfg, VIP: testVIP, NodeIP: initNodeIP, Kubeadm: "kubeadm",
		SecretsDir: filepath.Join(w.dir, "etc", "kubernetes", "vipctl-join"),
		Mode:       ipvs.ModeLink, Interface: "vipctl0",
		Manifest: []byte(testManifest), ManifestPath: w.manifestPath(), ModulesFile: w.modulesPath()}
	for _, m := range masters {
		o.Masters = append(o.Masters, netip.AddrPortFrom(netip.MustParseAddr(m), 6443))
	}
	return o
}

func (w *world) pkiDir() string { return filepath.Join(w.dir, "etc", "kubernetes", "pki") }

func initDoc(t *testing.T, cfg []byte) map[string]any {
	t.Helper()
	for _, d := range strings.Split(string(cfg), "\n---\n") {
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(d), &m))
		if m["kind"] == kindInit {
			return m
		}
	}
	t.Fatalf("no InitConfiguration in\n%s", cfg)
	return nil
}

func TestInitFirstMaster(t *testing.T) {
	w := newWorld(t)
	o := w.initOpts("")
	o.KubeadmArgs = []string{"--v=5"}
	caPEM, caHash := testCA(t)
	tmp := &recordingTemp{OSTemp: OSTemp{Dir: t.TempDir()}}
	var atKubeadm struct {
		hosts    []netip.Addr
		mode     fs.FileMode
		init     map[string]any
		service  ipvs.State
		plumbing bool
		manifest bool
	}
	w.runner.run = func(_ context.Context, _ string, args []string, out io.Writer) error {
		for _, m := range w.hostsMapping() {
			atKubeadm.hosts = append(atKubeadm.hosts, m.Addr)
		}
		atKubeadm.service, _ = w.dp.Get(context.Background(), testVIP)
		atKubeadm.plumbing = w.dp.Has(w.vipConfig())
		_, err := os.Stat(w.manifestPath())
		atKubeadm.manifest = err == nil
		st, err := os.Stat(args[2])
		require.NoError(t, err)
		atKubeadm.mode = st.Mode().Perm()
		b, err := os.ReadFile(args[2])
		require.NoError(t, err)
		atKubeadm.init = initDoc(t, b)
		// What kubeadm init does and prints.
		require.NoError(t, os.MkdirAll(w.pkiDir(), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(w.pkiDir(), "ca.crt"), caPEM, 0o644))
		key, _ := at(atKubeadm.init, "certificateKey").(string)
		tok, _ := at(atKubeadm.init, "bootstrapTokens").([]any)[0].(map[string]any)["token"].(string)
		_, _ = io.WriteString(out, "[upload-certs] Using certificate key:\n"+key+"\n  kubeadm join apiserver.cluster.local:6443 --token "+tok+
			" \\\n\t--discovery-token-ca-cert-hash "+caHash+" \\\n\t--control-plane --certificate-key "+key+"\n")
		return nil
	}
	j := w.joiner()
	j.Temp = tmp
	require.NoError(t, j.Init(context.Background(), o))

	calls := w.runner.kubeadmCalls()
	require.Len(t, calls, 1)
	require.Len(t, tmp.paths, 1)
	assert.Equal(t, []string{"init", "--config", tmp.paths[0], "--v=5", "--upload-certs"}, calls[0].args, "no secret on kubeadm's command line")
	assert.Equal(t, []netip.Addr{testVIP.Addr()}, atKubeadm.hosts, "the name maps to the VIP while kubeadm init runs, as on every node")
	require.Len(t, atKubeadm.service.RealServers, 1, "the VIP's one real server is this master's own apiserver")
	assert.Equal(t, netip.AddrPortFrom(initNodeIP, 6443), atKubeadm.service.RealServers[0].Addr)
	assert.Equal(t, ipvs.LocalWeight, atKubeadm.service.RealServers[0].Weight)
	assert.Equal(t, ipvs.MasterScheduler, atKubeadm.service.Service.Scheduler)
	assert.True(t, atKubeadm.plumbing, "the VIP is reachable while kubeadm init runs")
	assert.False(t, atKubeadm.manifest, "the watchdog's manifest comes after kubeadm init (its preflight wants an empty manifest folder)")
	b, err := os.ReadFile(w.manifestPath())
	require.NoError(t, err)
	assert.Equal(t, testManifest, string(b), "then the watchdog's manifest is written")
	assert.Equal(t, 1, w.hosts.writes, "the hosts file is written exactly once by the whole init")
	assert.Equal(t, fs.FileMode(0o600), atKubeadm.mode)
	assertAbsent(t, tmp.paths[0])
	assert.Equal(t, initNodeIP.String(), at(atKubeadm.init, "localAPIEndpoint", "advertiseAddress"))

	// The secrets: the ones kubeadm got, in 0600 files.
	key := at(atKubeadm.init, "certificateKey").(string)
	tok := at(atKubeadm.init, "bootstrapTokens").([]any)[0].(map[string]any)["token"].(string)
	require.NoError(t, CheckToken(tok))
	require.NoError(t, CheckCertificateKey(key))
	for name, want := range map[string]string{TokenFileName: tok, CertificateKeyFileName: key} {
		p := filepath.Join(o.SecretsDir, name)
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, SecretFileMode, st.Mode().Perm(), p)
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.Equal(t, want+"\n", string(b))
	}
	st, err := os.Stat(o.SecretsDir)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o700), st.Mode().Perm())

	// The join lines, with the masters and the hash; no secret anywhere.
	out := w.out.String()
	masters := "--vip 10.103.97.2:6443 --master 192.0.2.20:6443 --master 192.0.2.12:6443 --master 192.0.2.13:6443"
	assert.Contains(t, out, "vipctl join "+masters+" --token-file "+filepath.Join(o.SecretsDir, "token")+" -- --discovery-token-ca-cert-hash "+caHash)
	assert.Contains(t, out, "vipctl join --control-plane "+masters+" --token-file "+filepath.Join(o.SecretsDir, "token")+
		" --certificate-key-file "+filepath.Join(o.SecretsDir, "certificate-key")+" -- --discovery-token-ca-cert-hash "+caHash)
	for _, s := range []string{tok, key} {
		assert.NotContains(t, out+w.kout.String(), s)
	}
	assert.Contains(t, w.kout.String(), caHash, "the public hash is not redacted")
	// The name stays on the VIP.
	ms := w.hostsMapping()
	require.Len(t, ms, 1)
	assert.Equal(t, testVIP.Addr(), ms[0].Addr)
}

func TestInitGrantsDiscoveryAndOnlyWarnsWhenItCannot(t *testing.T) {
	for _, fail := range []bool{false, true} {
		w := newWorld(t)
		var got []string
		j := w.joiner()
		j.RBAC = func(_ context.Context, kubeconfig string) error {
			got = append(got, kubeconfig)
			if fail {
				return errors.New("connection refused")
			}
			return nil
		}
		require.NoError(t, j.Init(context.Background(), w.initOpts("")), "kubeadm init succeeded: the node stays a master")
		assert.Equal(t, []string{AdminKubeconfig}, got)
		if fail {
			assert.Contains(t, w.out.String(), "[rbac] warning: connection refused")
			assert.Contains(t, w.out.String(), "vipctl rbac apply --kubeconfig "+AdminKubeconfig)
		} else {
			assert.Contains(t, w.out.String(), "[rbac] the nodes may discover the masters")
		}
		assert.Contains(t, w.out.String(), "vipctl join", "the join lines follow")
	}
}

func TestInitKeepsTheUsersSecrets(t *testing.T) {
	w := newWorld(t)
	user := "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\ncertificateKey: " + testCertKey +
		"\nbootstrapTokens:\n- token: " + testToken + "\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: " + w.pkiDir() + "\n"
	o := w.initOpts(user)
	require.NoError(t, w.joiner().Init(context.Background(), o))
	b, err := os.ReadFile(filepath.Join(o.SecretsDir, TokenFileName))
	require.NoError(t, err)
	assert.Equal(t, testToken+"\n", string(b))
	b, err = os.ReadFile(filepath.Join(o.SecretsDir, CertificateKeyFileName))
	require.NoError(t, err)
	assert.Equal(t, testCertKey+"\n", string(b))
	assert.Contains(t, w.out.String(), "take the hash from kubeadm's output", "no CA was written: the user is told where the hash is")
	w.assertNoSecrets(nil)
}

func TestInitFailingKubeadmLeavesTheNodeAsBefore(t *testing.T) {
	w := newWorld(t)
	o := w.initOpts("")
	tmp := &recordingTemp{OSTemp: OSTemp{Dir: t.TempDir()}}
	w.runner.run = func(_ context.Context, _ string, _ []string, out io.Writer) error {
		_, _ = io.WriteString(out, "error execution phase preflight: port 6443 is in use\n")
		return errors.New("exit status 1")
	}
	before := w.state()
	j := w.joiner()
	j.Temp = tmp
	err := j.Init(context.Background(), o)
	var je *JoinError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, StepKubeadm, je.Step)
	assert.Contains(t, err.Error(), `init failed at step "kubeadm"`)
	assert.Contains(t, err.Error(), "port 6443 is in use")
	assert.Contains(t, err.Error(), "hosts file restored")
	assert.Equal(t, before, w.state(), "hosts file as before, no secrets written")
	require.Len(t, tmp.paths, 1)
	assertAbsent(t, tmp.paths[0])
	w.assertNoSecrets(err)
}

func TestInitBadInputChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(w *world, o *InitOptions)
		step string
		want string
	}{
		{"node not a master", func(_ *world, o *InitOptions) { o.NodeIP = netip.MustParseAddr("192.0.2.99") }, StepValidate, "--node-ip 192.0.2.99: not among the --master"},
		{"no master", func(_ *world, o *InitOptions) { o.Masters = nil }, StepValidate, "--master"},
		{"kubeadm flag refused with --config", func(_ *world, o *InitOptions) {
			o.KubeadmArgs = []string{"--pod-network-cidr", "10.244.0.0/16"}
		}, StepValidate, "kubeadm argument --pod-network-cidr"},
		{"kubeadm positional", func(_ *world, o *InitOptions) { o.KubeadmArgs = []string{testToken} }, StepValidate, `kubeadm argument "` + Redacted + `"`},
		{"bad token in config", func(w *world, o *InitOptions) {
			*o = w.initOpts("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens:\n- token: nope\n")
		}, StepValidate, "bootstrapTokens[0].token: not a bootstrap token"},
		{"kubeadm missing", func(w *world, _ *InitOptions) { w.runner.missing["kubeadm"] = true }, StepPreflight, `--kubeadm "kubeadm": not found`},
		{"node IP elsewhere", func(_ *world, o *InitOptions) {
			o.NodeIP = netip.MustParseAddr("192.0.2.12")
		}, StepPreflight, "--node-ip 192.0.2.12: not an address of this node"},
		{"VIP on this master", func(w *world, _ *InitOptions) { w.insp.otherIfs[testVIP.Addr()] = []string{"eth0"} }, StepPreflight, "--vip 10.103.97.2: already an address of interface eth0"},
		{"bad mode", func(_ *world, o *InitOptions) { o.Mode = "bgp" }, StepValidate, `--mode: mode "bgp"`},
		{"route mode on a master", func(_ *world, o *InitOptions) { o.Mode = ipvs.ModeRoute }, StepValidate, "--mode route: a master's own apiserver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			o := w.initOpts("")
			tc.edit(w, &o)
			before := w.state()
			err := w.joiner().Init(context.Background(), o)
			var je *JoinError
			require.ErrorAs(t, err, &je)
			assert.Equal(t, tc.step, je.Step)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "nothing had been changed")
			assert.Equal(t, before, w.state())
			assert.Empty(t, w.runner.kubeadmCalls())
			w.assertNoSecrets(err)
		})
	}
}

func TestInitDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	o := w.initOpts("")
	o.DryRun = true
	before := w.state()
	require.NoError(t, w.joiner().Init(context.Background(), o))
	assert.Equal(t, before, w.state())
	assert.Empty(t, w.runner.kubeadmCalls())
	out := w.out.String()
	assert.Contains(t, out, "would map apiserver.cluster.local to 10.103.97.2")
	assert.Contains(t, out, "with real servers 192.0.2.20:6443")
	assert.Contains(t, out, "would run: kubeadm init --config <a private temporary file>/kubeadm.yaml --upload-certs")
	assert.Contains(t, out, "token: "+Redacted)
	assert.Contains(t, out, "certificateKey: "+Redacted)
	assert.Contains(t, out, "controlPlaneEndpoint: apiserver.cluster.local:6443")
	assert.NotRegexp(t, `[a-z0-9]{6}\.[a-z0-9]{16}`, out, "no token")
}

func TestCAHash(t *testing.T) {
	pemData, want := testCA(t)
	got, err := CAHash(pemData)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	_, err = CAHash([]byte("not a certificate"))
	assert.Error(t, err)
}
