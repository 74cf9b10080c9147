package careconfig

import (
	"net/netip"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, args ...string) (Config, []string, error) {
	t.Helper()
	f := NewFlags(Default())
	fs := pflag.NewFlagSet("care", pflag.ContinueOnError)
	f.Register(fs)
	f.RegisterLvscare(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, nil, err
	}
	return f.Config()
}

func valid() Config {
	c := Default()
	c.Masters = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.12:6443")}
	return c
}

func TestDefaultsAreValidWithAMaster(t *testing.T) {
	require.NoError(t, valid().Validate())
	assert.Equal(t, 800*time.Millisecond, valid().EffectiveTimeout())
	assert.Empty(t, valid().Warnings())
}

func TestMastersCommasAndRepeats(t *testing.T) {
	c, _, err := parse(t, "--master", "192.0.2.11,192.0.2.12:6444", "--master", "[2001:db8::1]:6443,192.0.2.13")
	require.Error(t, err, "mixed families are refused")
	c, _, err = parse(t, "--master", "192.0.2.11,192.0.2.12:6444", "--master", "192.0.2.13")
	require.NoError(t, err)
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.12:6444"),
		netip.MustParseAddrPort("192.0.2.13:6443")}, c.Masters)
	_, err = ParseMasters([]string{"192.0.2.11,"})
	assert.ErrorContains(t, err, `--master "": empty address`)
}

func TestValidateRefusesWhatTheWatchdogCannotRun(t *testing.T) {
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Interface = "a/b" }, `--interface "a/b"`},
		{func(c *Config) { c.Interface = "a:b" }, `--interface "a:b"`},
		{func(c *Config) { c.Interface = "a\nb" }, `--interface "a\nb"`},
		{func(c *Config) { c.Interface = ".." }, `--interface ".."`},
		{func(c *Config) { c.Scheduler = "foo" }, `--scheduler "foo"`},
		{func(c *Config) { c.Timeout = 2 * time.Second }, "--timeout 2s: must be shorter than --interval 1s"},
		{func(c *Config) { c.Timeout = time.Second }, "--timeout 1s: must be shorter than --interval 1s"},
		{func(c *Config) { c.HealthPath = "/readyz\r\nX-Evil: 1" }, `--health-path "/readyz\r\nX-Evil: 1"`},
		{func(c *Config) { c.HealthPath = "/ready z" }, `--health-path "/ready z"`},
		{func(c *Config) { c.LivenessPath = "livez" }, `--liveness-path "livez": must start with / (or be empty)`},
		{func(c *Config) { c.Interval = 25 * time.Hour }, "--interval 25h0m0s: want at most 24h"},
		{func(c *Config) { c.MetricsAddr = ":0" }, `--metrics-addr ":0"`},
		{func(c *Config) { c.MetricsAddr = "node1:9282" }, `--metrics-addr "node1:9282": host "node1"`},
		{func(c *Config) { c.NodeIP = c.VIP.Addr() }, "--node-ip 10.103.97.2: equal to --vip"},
		{func(c *Config) { c.CAFile = "" }, `--ca-file ""`},
		{func(c *Config) { c.CAFile = "/etc/ca\n.crt" }, `--ca-file "/etc/ca\n.crt"`},
		{func(c *Config) { c.HealthStatuses = nil }, "--health-status"},
		{func(c *Config) { c.CertFile = "/c" }, "--cert-file"},
		{func(c *Config) { c.ProbeReuse = -1 }, "--probe-reuse"},
		{func(c *Config) { c.CertFile, c.KeyFile = "/c", "/k" }, `--kubeconfig "/etc/kubernetes/kubelet.conf" and --cert-file "/c"`},
		{func(c *Config) { c.StateFile = "/var/lib/x\n" }, `--state-file "/var/lib/x\n"`},
		{func(c *Config) { c.ForgetAfter = -time.Minute }, "--forget-after -1m0s"},
		{func(c *Config) { c.Masters = append(c.Masters, c.Masters[0]) }, "listed twice"},
	} {
		c := valid()
		tc.change(&c)
		err := c.Validate()
		if assert.Error(t, err, tc.want) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
	c := valid()
	c.HealthScheme, c.HealthPath = TCP, ""
	assert.NoError(t, c.Validate(), "no path with tcp probes")
}

func TestIntervalSeconds(t *testing.T) {
	for arg, want := range map[string]time.Duration{"5": 5 * time.Second, "1.5": 1500 * time.Millisecond, "2s": 2 * time.Second} {
		c, _, err := parse(t, "--master", "192.0.2.11", "--interval", arg)
		require.NoError(t, err, arg)
		assert.Equal(t, want, c.Interval, arg)
	}
	for _, arg := range []string{"1e300", "-1e300", "NaN", "Inf"} {
		_, _, err := parse(t, "--master", "192.0.2.11", "--interval", arg)
		if assert.Error(t, err, arg) {
			assert.Contains(t, err.Error(), "--interval", arg)
			assert.NotContains(t, err.Error(), "-2562047h", "no overflowed duration")
		}
	}
}

func TestArgsRoundTrip(t *testing.T) {
	c := valid()
	args := c.Args()
	assert.Equal(t, []string{"--vip=10.103.97.2:6443", "--master=192.0.2.11:6443", "--master=192.0.2.12:6443",
		"--ca-file=/etc/kubernetes/pki/ca.crt", "--metrics-addr=127.0.0.1:9282"}, args, "defaults are left out")
	back, _, err := ParseArgs(args)
	require.NoError(t, err)
	assert.Equal(t, c, back)

	c.Mode, c.Interface, c.NodeIP, c.Scheduler = ModeRoute, "vip9", netip.MustParseAddr("192.0.2.20"), "wrr"
	c.HealthPath, c.HealthScheme, c.LivenessPath = "/livez", HTTP, "/livez"
	c.Interval, c.Timeout, c.Rise, c.Fall = 2*time.Second, 1500*time.Millisecond, 3, 4
	c.HealthStatuses = []int{200, 204}
	c.HoldDown, c.MaxHoldDown, c.DrainTimeout = time.Second, time.Minute, time.Second
	c.ResyncPeriod, c.ProbeReuse, c.Sentinel = time.Second, 0, false
	c.CAFile, c.MetricsAddr, c.InsecureSkipVerify = "/srv/ca.pem", "0.0.0.0:9300", true
	c.Kubeconfig, c.StateFile, c.ForgetAfter = "/srv/care.conf", "/srv/masters.json", time.Minute
	back, warnings, err := ParseArgs(c.Args())
	require.NoError(t, err)
	assert.Equal(t, c, back)
	c.Kubeconfig, c.StateFile, c.ForgetAfter = "", "", 0
	back, _, err = ParseArgs(c.Args())
	require.NoError(t, err)
	assert.Equal(t, c, back, "turned off, not back to the defaults")
	assert.Len(t, warnings, 1, "metrics served to the network; insecure means nothing with http: %v", warnings)
}

func TestCertFileReplacesTheDefaultKubeconfig(t *testing.T) {
	c, _, err := ParseArgs([]string{"--master=192.0.2.11", "--cert-file=/c", "--key-file=/k"})
	require.NoError(t, err)
	assert.Empty(t, c.Kubeconfig)
	_, _, err = ParseArgs([]string{"--master=192.0.2.11", "--cert-file=/c", "--key-file=/k", "--kubeconfig=/etc/kubernetes/kubelet.conf"})
	assert.ErrorContains(t, err, "give one source of the client certificate")
}

func TestParseArgsOfAManifest(t *testing.T) {
	c, _, err := ParseArgs([]string{"--vip=10.103.97.2:6443", "--master=192.0.2.11", "--metrics-addr=:9282", "--log-format=json"})
	require.NoError(t, err)
	m, err := ParseMetricsAddr(c.MetricsAddr)
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:9282"), m.Local(), "every address: reached on loopback")
	_, _, err = ParseArgs([]string{"--master=192.0.2.11", "--bogus=1"})
	assert.ErrorContains(t, err, "bogus")

	// lvscare's command line, as sealos writes it.
	c, warnings, err := ParseArgs([]string{"--vs", "10.103.97.2:6443", "--rs", "192.0.2.11:6443", "--rs", "192.0.2.12:6443", "--health-path", "/healthz", "--health-schem", "https"})
	require.NoError(t, err)
	assert.Equal(t, ModeRoute, c.Mode)
	assert.Len(t, c.Masters, 2)
	assert.NotEmpty(t, warnings)
}

func TestApplyArgs(t *testing.T) {
	c := valid()
	got, err := c.ApplyArgs([]string{"--hold-down=10s", "--sentinel=false"}, nil, "--care-flag")
	require.NoError(t, err)
	assert.Equal(t, 10*time.Second, got.HoldDown)
	assert.False(t, got.Sentinel)
	assert.Equal(t, c.Masters, got.Masters)

	given := func(n string) bool { return n == "ca-file" }
	for _, tc := range []struct{ arg, want string }{
		{"--bogus=1", `--care-flag "--bogus=1": --bogus is not a flag of the watchdog`},
		{"hold-down=5s", `--care-flag "hold-down=5s": want --flag=value`},
		{"--sentinel", `--care-flag "--sentinel": want --flag=value`},
		{"--ca-file=/x", `--care-flag "--ca-file=/x": --ca-file is given as a flag already`},
		{"--log-format=console", `--care-flag "--log-format=console": --log-format is vipctl's own flag`},
		{"--scheduler=foo", `--scheduler "foo"`},
		{"--interface=a/b", `--interface "a/b"`},
		{"--timeout=1s", "--timeout 1s: must be shorter than --interval 1s"},
		{"--vs=10.0.0.1", "--vs is not a flag of the watchdog"},
	} {
		_, err := c.ApplyArgs([]string{tc.arg}, given, "--care-flag")
		if assert.Error(t, err, tc.arg) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}

func TestValidateForPod(t *testing.T) {
	require.NoError(t, valid().ValidateForPod())
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.CAFile = "ca.crt" }, `--ca-file "ca.crt"`},
		{func(c *Config) { c.Once = true }, "--once"},
		{func(c *Config) { c.MetricsAddr = "" }, `--metrics-addr ""`},
		{func(c *Config) { c.CertFile, c.KeyFile = "/c", "/k" }, "--cert-file"},
	} {
		c := valid()
		tc.change(&c)
		assert.ErrorContains(t, c.ValidateForPod(), tc.want)
	}
}

func TestMetricsAddr(t *testing.T) {
	for addr, want := range map[string]struct {
		local    string
		loopback bool
	}{
		"127.0.0.1:9282": {"127.0.0.1:9282", true},
		":9282":          {"127.0.0.1:9282", false},
		"0.0.0.0:9282":   {"127.0.0.1:9282", false},
		"[::]:9282":      {"[::1]:9282", false},
		"localhost:9282": {"127.0.0.1:9282", true},
		"192.0.2.1:9282": {"192.0.2.1:9282", false},
	} {
		m, err := ParseMetricsAddr(addr)
		require.NoError(t, err, addr)
		assert.Equal(t, want.local, m.Local().String(), addr)
		assert.Equal(t, want.loopback, m.Loopback(), addr)
	}
	c := valid()
	c.MetricsAddr = "0.0.0.0:9282"
	assert.Len(t, c.Warnings(), 1)
	assert.Contains(t, c.Warnings()[0], "--metrics-addr 0.0.0.0:9282: not a loopback address")
}
