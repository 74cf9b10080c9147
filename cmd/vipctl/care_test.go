package main

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/care/probe/probetest"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

// fakeCareKernel is an in-memory kernel.
type fakeCareKernel struct {
	*ipvstest.Memory
	*ipvstest.MemoryPlumbing
	closed bool
}

func (k *fakeCareKernel) Watch(ctx context.Context) (<-chan struct{}, error) {
	return make(chan struct{}), nil
}

func (k *fakeCareKernel) Close() error { k.closed = true; return nil }

// fakeCareProber answers every probe as healthy without any network.
type fakeCareProber struct {
	mu    sync.Mutex
	cfg   probe.Config
	calls int
}

func (p *fakeCareProber) Probe(context.Context, netip.AddrPort) probe.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	return probe.Result{OK: true, Status: 200, Reason: "HTTP 200"}
}

func (p *fakeCareProber) Hold(ctx context.Context, _ netip.AddrPort, _ func()) (bool, error) {
	<-ctx.Done()
	return true, ctx.Err()
}

// careWorld records what `vipctl care` touched.
type careWorld struct {
	env      map[string]string
	detected int
	kernels  int
	kernel   *fakeCareKernel
	prober   *fakeCareProber
	liveness *fakeCareProber
	served   []string
}

func newCareWorld() *careWorld {
	return &careWorld{env: map[string]string{}, kernel: &fakeCareKernel{Memory: ipvstest.NewMemory(), MemoryPlumbing: ipvstest.NewMemoryPlumbing()}}
}

func (w *careWorld) careEnv() careEnv {
	return careEnv{
		getenv: func(k string) string { return w.env[k] },
		detectNodeIP: func(context.Context, netip.Addr) (netip.Addr, error) {
			w.detected++
			return netip.MustParseAddr("192.0.2.20"), nil
		},
		newKernel: func(*zap.Logger) (careKernel, error) {
			w.kernels++
			return w.kernel, nil
		},
		newProber: func(c probe.Config) (careProber, error) {
			if err := c.Validate(); err != nil {
				return nil, err
			}
			p := &fakeCareProber{cfg: c}
			if w.prober == nil {
				w.prober = p
			} else {
				w.liveness = p // the second prober is the liveness check
			}
			return p, nil
		},
		serve: func(_ context.Context, addr string, _ http.Handler, _ *zap.Logger) error {
			w.served = append(w.served, addr)
			return nil
		},
	}
}

// parseCare parses args and validates them like the command does.
func parseCare(t *testing.T, w *careWorld, args ...string) (careSetup, error) {
	t.Helper()
	var f careFlags
	cmd := &cobra.Command{Use: "care"}
	f.register(cmd.Flags())
	if err := cmd.ParseFlags(args); err != nil {
		return careSetup{}, err
	}
	return f.build(context.Background(), w.careEnv())
}

// runCareCmd runs `vipctl care args...` in w until ctx ends.
func runCareCmd(ctx context.Context, w *careWorld, args ...string) error {
	cmd := newCareCmdWith(&app{log: zap.NewNop()}, w.careEnv())
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.ExecuteContext(ctx)
}

func testCA(t *testing.T) string {
	return probetest.WriteFile(t, "ca.crt", probetest.NewCA(t, "cluster CA").PEM)
}

func defaultCAMissing(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(careconfig.DefaultCAFile); err == nil {
		t.Skipf("%s exists on this machine: the missing-CA behaviour cannot be tested", careconfig.DefaultCAFile)
	}
}

func TestCareFlagsNative(t *testing.T) {
	w := newCareWorld()
	ca := testCA(t)
	s, err := parseCare(t, w, "--vip", "10.103.97.2", "--master", "192.0.2.11", "--master", "192.0.2.12:6444",
		"--ca-file", ca, "--node-ip", "192.0.2.20")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddrPort("10.103.97.2:6443"), s.cfg.Service.VIP, "the VIP's port defaults to 6443")
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.12:6444")}, s.cfg.Masters)
	assert.Equal(t, ipvs.ModeLink, s.cfg.VIP.Mode)
	assert.Equal(t, "vipctl0", s.cfg.VIP.Interface)
	assert.Equal(t, netip.MustParseAddr("192.0.2.20"), s.cfg.VIP.NodeIP)
	assert.Equal(t, "rr", s.cfg.Service.Scheduler)
	assert.Equal(t, time.Second, s.cfg.Health.Interval)
	assert.Equal(t, 800*time.Millisecond, s.cfg.Timeout, "default timeout: 80% of the interval, at most 800ms")
	assert.Equal(t, 2, s.cfg.Health.Rise)
	assert.Equal(t, 2, s.cfg.Health.Fall)
	assert.Equal(t, 100*time.Millisecond, s.cfg.ResyncPeriod)
	assert.Equal(t, probe.HTTPS, s.probe.Scheme)
	assert.Equal(t, "/readyz", s.probe.Path)
	assert.Equal(t, []int{200}, s.probe.Statuses)
	require.NotNil(t, s.probe.TLS)
	assert.NotNil(t, s.probe.TLS.RootCAs, "verified against the CA")
	assert.False(t, s.probe.TLS.InsecureSkipVerify)
	assert.False(t, s.probe.HTTP2, "HTTP/2 probing is opt-in")
	assert.Equal(t, careconfig.DefaultProbeReuse, s.probe.ReuseFor)
	assert.True(t, s.sentinel)
	assert.Equal(t, "127.0.0.1:9282", s.metricsAddr)
	assert.False(t, s.lvscare)
	assert.Empty(t, s.warnings)
	assert.Zero(t, w.detected, "--node-ip given: nothing detected")
}

func TestCareFlagsMastersCommaSeparated(t *testing.T) {
	s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11,192.0.2.12", "--ca-file", testCA(t), "--node-ip", "192.0.2.20")
	require.NoError(t, err)
	assert.Len(t, s.cfg.Masters, 2)
}

func TestCareFlagsLvscareManifest(t *testing.T) {
	defaultCAMissing(t)
	w := newCareWorld()
	w.env["LVSCARE_NODE_IP"] = "192.0.2.30"
	// The arguments sealos writes into its kube-lvscare static pod.
	s, err := parseCare(t, w, "--vs", "10.103.97.2:6443", "--health-path", "/healthz", "--health-schem", "https",
		"--rs", "192.0.2.11:6443", "--rs", "192.0.2.12:6443", "--rs", "192.0.2.13:6443")
	require.NoError(t, err)
	assert.True(t, s.lvscare)
	assert.Equal(t, netip.MustParseAddrPort("10.103.97.2:6443"), s.cfg.Service.VIP)
	assert.Len(t, s.cfg.Masters, 3)
	assert.Equal(t, "/healthz", s.probe.Path)
	assert.Equal(t, ipvs.ModeRoute, s.cfg.VIP.Mode, "lvscare's default mode")
	assert.Equal(t, netip.MustParseAddr("192.0.2.30"), s.cfg.VIP.NodeIP, "from $LVSCARE_NODE_IP")
	assert.Zero(t, w.detected)
	assert.True(t, s.probe.TLS.InsecureSkipVerify, "no CA mounted in a sealos pod: not verified, as lvscare did")
	assert.NotEmpty(t, s.warnings)
}

func TestCareFlagsLvscareAliases(t *testing.T) {
	ca := testCA(t)
	s, err := parseCare(t, newCareWorld(), "--vs", "10.103.97.2:6443", "--rs", "192.0.2.11:6443,192.0.2.12:6443",
		"--interval", "5", "--health-timeout", "2s", "--ip", "192.0.2.40", "--iface", "lvscare", "--mode", "link",
		"--health-insecure-skip-verify", "--run-once", "--ca-file", ca, "--logger", "INFO", "-C", "--masqueradebit", "0")
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, s.cfg.Health.Interval, "a bare number is seconds")
	assert.Equal(t, 2*time.Second, s.cfg.Timeout)
	assert.Equal(t, netip.MustParseAddr("192.0.2.40"), s.cfg.VIP.NodeIP)
	assert.Equal(t, "lvscare", s.cfg.VIP.Interface)
	assert.Equal(t, ipvs.ModeLink, s.cfg.VIP.Mode, "an explicit --mode wins")
	assert.True(t, s.probe.TLS.InsecureSkipVerify)
	assert.True(t, s.once)
	assert.Len(t, s.warnings, 4, "three ignored lvscare flags and --insecure-skip-verify: %v", s.warnings)
}

func TestCareFlagsInterval(t *testing.T) {
	ca := testCA(t)
	for arg, want := range map[string]time.Duration{"5": 5 * time.Second, "1.5": 1500 * time.Millisecond, "2s": 2 * time.Second, "1m": time.Minute} {
		s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--ca-file", ca, "--node-ip", "192.0.2.20", "--interval", arg)
		require.NoError(t, err, arg)
		assert.Equal(t, want, s.cfg.Health.Interval, arg)
		assert.Equal(t, min(800*time.Millisecond, want*8/10), s.cfg.Timeout, arg)
	}
}

func TestCareWarnsOfMetricsOnTheNetwork(t *testing.T) {
	s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--ca-file", testCA(t), "--node-ip", "192.0.2.20", "--metrics-addr", "0.0.0.0:9282")
	require.NoError(t, err)
	require.Len(t, s.warnings, 1)
	assert.Contains(t, s.warnings[0], "--metrics-addr 0.0.0.0:9282: not a loopback address")
}

func TestCareFlagsNodeIPDetected(t *testing.T) {
	w := newCareWorld()
	s, err := parseCare(t, w, "--master", "192.0.2.11", "--ca-file", testCA(t))
	require.NoError(t, err)
	assert.Equal(t, 1, w.detected)
	assert.Equal(t, netip.MustParseAddr("192.0.2.20"), s.cfg.VIP.NodeIP)
}

func TestCareFlagsSchemes(t *testing.T) {
	defaultCAMissing(t)
	for _, scheme := range []string{"http", "tcp"} {
		s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--health-scheme", scheme)
		require.NoError(t, err, "no CA is needed for %s", scheme)
		assert.Equal(t, probe.Scheme(scheme), s.probe.Scheme)
		assert.Nil(t, s.probe.TLS)
		assert.Equal(t, scheme != "tcp", s.sentinel, "no sentinel connection in tcp mode")
	}
}

func TestCareBadInput(t *testing.T) {
	ca := testCA(t)
	garbage := probetest.WriteFile(t, "garbage.crt", []byte("not a certificate"))
	// with returns a valid command line plus extra.
	with := func(extra ...string) []string {
		return append([]string{"--master", "192.0.2.11", "--ca-file", ca, "--node-ip", "192.0.2.20"}, extra...)
	}
	rest := []string{"--ca-file", ca, "--node-ip", "192.0.2.20"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{rest, nil, "--master: at least one master is required"},
		{append([]string{"--master", "300.1.2.3"}, rest...), nil, `--master "300.1.2.3"`},
		{append([]string{"--master", "192.0.2.11:99999"}, rest...), nil, `--master "192.0.2.11:99999"`},
		{append([]string{"--master", "192.0.2.11", "--master", "192.0.2.11:6443"}, rest...), nil, "--master 192.0.2.11:6443: listed twice"},
		{with("--vip", "192.0.2.11:6443"), nil, "--master 192.0.2.11:6443: same address as --vip 192.0.2.11:6443"},
		{with("--vip", "vip.example"), nil, `--vip "vip.example"`},
		{with("--vip", "127.0.0.1"), nil, "--vip 127.0.0.1:6443"},
		{with("--interval", "soon"), nil, `invalid argument "soon" for "--interval"`},
		{with("--interval", "0"), nil, "--interval 0s: want a positive duration"},
		{with("--interval", "-1s"), nil, "--interval -1s"},
		{with("--timeout", "2s"), nil, "--timeout 2s: must be shorter than --interval 1s"},
		{with("--timeout", "1s"), nil, "--timeout 1s: must be shorter than --interval 1s"},
		{with("--timeout", "-1s"), nil, "--timeout -1s"},
		{with("--timeout", "fast"), nil, `invalid argument "fast" for "--timeout"`},
		{with("--rise", "0"), nil, "--rise 0: want at least 1"},
		{with("--fall", "-1"), nil, "--fall -1: want at least 1"},
		{with("--rise", "two"), nil, `invalid argument "two" for "--rise"`},
		{with("--resync-period", "0s"), nil, "--resync-period 0s"},
		{with("--probe-reuse", "-1s"), nil, "--probe-reuse -1s: want 0"},
		{with("--ready-every", "-1s"), nil, "--ready-every -1s: want 0"},
		{with("--drain-timeout", "-1s"), nil, "--drain-timeout -1s"},
		{with("--hold-down", "-5s"), nil, "--hold-down -5s"},
		{with("--max-hold-down", "1s"), nil, "--max-hold-down 1s: shorter than --hold-down 5s"},
		{with("--ca-file", "/nonexistent/ca.crt"), nil, `--ca-file "/nonexistent/ca.crt"`},
		{with("--ca-file", garbage), nil, "no PEM certificate"},
		{with("--ca-file", ""), nil, `--ca-file ""`},
		{with("--cert-file", ca), nil, "--cert-file"},
		{with("--key-file", ca), nil, "--key-file"},
		{with("--cert-file", ca, "--key-file", garbage), nil, "--cert-file"},
		{with("--health-scheme", "ftp"), nil, `--health-scheme "ftp"`},
		{with("--health-path", "readyz"), nil, `--health-path "readyz": must start with /`},
		{with("--health-status", "700"), nil, "--health-status 700"},
		{with("--health-status", "ok"), nil, `invalid argument "ok" for "--health-status"`},
		{with("--scheduler", "fifo"), nil, `--scheduler "fifo"`},
		{with("--mode", "tunnel"), nil, `--mode "tunnel"`},
		{with("--interface", "an-interface-name-too-long"), nil, `--interface "an-interface-name-too-long"`},
		{with("--interface", "a/b"), nil, `--interface "a/b"`},
		{with("--health-path", "/readyz\r\nX: y"), nil, `--health-path "/readyz\r\nX: y"`},
		{with("--liveness-path", "livez"), nil, `--liveness-path "livez"`},
		{with("--interval", "1e300"), nil, `invalid argument "1e300" for "--interval"`},
		{with("--node-ip", "node1"), nil, `--node-ip "node1"`},
		{with("--node-ip", "10.103.97.2"), nil, "--node-ip 10.103.97.2: equal to --vip"},
		{with("--node-ip", "2001:db8::1"), nil, "--node-ip 2001:db8::1: address family"},
		{with("--metrics-addr", "9282"), nil, `--metrics-addr "9282"`},
		{with("--metrics-addr", "127.0.0.1:0"), nil, `--metrics-addr "127.0.0.1:0"`},
		{with("--vs", "10.103.97.3:6443", "--vip", "10.103.97.2:6443"), nil, "--vs and --vip"},
		{with("--node-ip", "", "--ip", "192.0.2.20"), nil, "--ip and --node-ip"},
	} {
		args := tc.args
		w := newCareWorld()
		for k, v := range tc.env {
			w.env[k] = v
		}
		err := runCareCmd(context.Background(), w, args...)
		if assert.Error(t, err, "%v", args) {
			assert.Contains(t, err.Error(), tc.want, "%v", args)
		}
		assert.Zero(t, w.kernels, "bad input touches nothing: %v", args)
		assert.Empty(t, w.served, "%v", args)
	}
}

func TestCareBadInputEnvAndDetection(t *testing.T) {
	ca := testCA(t)
	w := newCareWorld()
	w.env["LVSCARE_NODE_IP"] = "node-1"
	err := runCareCmd(context.Background(), w, "--master", "192.0.2.11", "--ca-file", ca)
	assert.ErrorContains(t, err, `$LVSCARE_NODE_IP "node-1"`)
	assert.Zero(t, w.kernels)

	w = newCareWorld()
	env := w.careEnv()
	env.detectNodeIP = func(context.Context, netip.Addr) (netip.Addr, error) {
		return netip.Addr{}, errors.New("no route to host")
	}
	cmd := newCareCmdWith(&app{log: zap.NewNop()}, env)
	cmd.SetArgs([]string{"--master", "192.0.2.11", "--ca-file", ca})
	err = cmd.ExecuteContext(context.Background())
	assert.ErrorContains(t, err, "--node-ip: not given, and detecting it from the route to 192.0.2.11 failed: no route to host")
	assert.Zero(t, w.kernels)

	w = newCareWorld()
	err = runCareCmd(context.Background(), w, "--master", "192.0.2.11", "--ca-file", ca, "--node-ip", "192.0.2.20", "--health-insecure-skip-verify", "true")
	assert.ErrorContains(t, err, `unexpected argument "true": boolean flags take their value as --flag=true`)
	assert.Zero(t, w.kernels)
}

func TestCareDefaultCAMissing(t *testing.T) {
	defaultCAMissing(t)
	w := newCareWorld()
	err := runCareCmd(context.Background(), w, "--master", "192.0.2.11", "--node-ip", "192.0.2.20")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--ca-file "/etc/kubernetes/pki/ca.crt"`)
	assert.Contains(t, err.Error(), "--insecure-skip-verify", "says how to proceed")
	assert.Zero(t, w.kernels)

	s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--insecure-skip-verify")
	require.NoError(t, err)
	assert.True(t, s.probe.TLS.InsecureSkipVerify)
	assert.Contains(t, s.warnings[0], "not verified")
}

func TestCareOnce(t *testing.T) {
	w := newCareWorld()
	err := runCareCmd(context.Background(), w, "--vip", "10.103.97.2", "--master", "192.0.2.11", "--master", "192.0.2.12",
		"--ca-file", testCA(t), "--node-ip", "192.0.2.20", "--once")
	require.NoError(t, err)
	st, err := w.kernel.Get(context.Background(), netip.MustParseAddrPort("10.103.97.2:6443"))
	require.NoError(t, err)
	assert.Len(t, st.RealServers, 2)
	assert.True(t, w.kernel.Has(ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: "vipctl0",
		VIP: netip.MustParseAddr("10.103.97.2"), NodeIP: netip.MustParseAddr("192.0.2.20")}))
	assert.Equal(t, 2, w.prober.calls, "one probe round")
	assert.Nil(t, w.liveness, "no liveness check unless --liveness-path is given")

	w = newCareWorld()
	err = runCareCmd(context.Background(), w, "--vip", "10.103.97.2", "--master", "192.0.2.11",
		"--ca-file", testCA(t), "--node-ip", "192.0.2.20", "--once", "--liveness-path", "/livez")
	require.NoError(t, err)
	require.NotNil(t, w.liveness, "a liveness prober for the connection-reset decision")
	assert.Equal(t, "/livez", w.liveness.cfg.Path)
	assert.Equal(t, []int{200}, w.liveness.cfg.Statuses)
	assert.Equal(t, "/readyz", w.prober.cfg.Path, "the health probe keeps its own path")
	assert.Empty(t, w.served, "no metrics server for --once")
	assert.True(t, w.kernel.closed)
}

func TestCareRunServesMetricsAndStopsOnCancel(t *testing.T) {
	w := newCareWorld()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCareCmd(ctx, w, "--master", "192.0.2.11", "--ca-file", testCA(t), "--node-ip", "192.0.2.20", "--resync-period", "10ms")
	}()
	require.Eventually(t, func() bool {
		_, err := w.kernel.Get(context.Background(), netip.MustParseAddrPort("10.103.97.2:6443"))
		return err == nil
	}, 5*time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGTERM is a clean exit")
	case <-time.After(10 * time.Second):
		t.Fatal("care did not stop")
	}
	assert.Equal(t, []string{"127.0.0.1:9282"}, w.served)
	_, err := w.kernel.Get(context.Background(), netip.MustParseAddrPort("10.103.97.2:6443"))
	assert.NoError(t, err, "the rules stay in place after exit")
}

func TestCareKubeconfigAuthenticatesAndDiscovers(t *testing.T) {
	ca := probetest.NewCA(t, "cluster CA")
	_, cert, key := ca.Issue(t, "system:node:n1", true)
	certFile := probetest.WriteFile(t, "kubelet-client-current.pem", append(append([]byte{}, cert...), key...))
	kc := probetest.WriteFile(t, "kubelet.conf", []byte(`apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority-data: `+base64.StdEncoding.EncodeToString(ca.PEM)+`, server: "https://apiserver.cluster.local:6443"}
  name: k
contexts:
- context: {cluster: k, user: n1}
  name: n1
current-context: n1
users:
- name: n1
  user: {client-certificate: `+certFile+`, client-key: `+certFile+`}
`))
	s, err := parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--kubeconfig", kc)
	require.NoError(t, err)
	require.NotNil(t, s.creds)
	assert.Equal(t, kc, s.kubeconfig)
	assert.Equal(t, careconfig.DefaultStateFile, s.stateFile)
	assert.NotNil(t, s.probe.TLS.GetClientCertificate, "the probes present the kubelet's certificate")
	assert.NotNil(t, s.probe.TLS.VerifyConnection, "and verify against the current CA")
	w, err := newDiscovery(s)
	require.NoError(t, err)
	assert.Equal(t, "https://apiserver.cluster.local:6443", w.Server.String(), "discovery through the kubeconfig's server")

	_, err = parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--kubeconfig", "/nonexistent/kubelet.conf")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `--kubeconfig "/nonexistent/kubelet.conf"`, "a kubeconfig asked for by name must be there")

	s, err = parseCare(t, newCareWorld(), "--master", "192.0.2.11", "--node-ip", "192.0.2.20", "--ca-file", testCA(t), "--kubeconfig=")
	require.NoError(t, err)
	assert.Nil(t, s.creds, "--kubeconfig= turns it off")
	assert.Empty(t, s.kubeconfig)
}
