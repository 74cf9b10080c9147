package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/internal/version"
	"github.com/vipctl/vipctl/ipvs"
)

// careKernel is what the watchdog needs from the kernel; *ipvs.Kernel.
type careKernel interface {
	care.Dataplane
	care.Plumbing
	care.ConnCloser
	care.EventSource
	Close() error
}

// careProber probes masters and holds sentinel connections; *probe.Prober.
type careProber interface {
	care.Prober
	care.Sentinel
}

// careEnv is the outside world of `vipctl care`, replaceable in tests.
type careEnv struct {
	getenv       func(string) string
	detectNodeIP func(context.Context, netip.Addr) (netip.Addr, error)
	newKernel    func(*zap.Logger) (careKernel, error)
	newProber    func(probe.Config) (careProber, error)
	serve        func(context.Context, string, http.Handler, *zap.Logger) error
}

func defaultCareEnv() careEnv {
	return careEnv{
		getenv:       os.Getenv,
		detectNodeIP: ipvs.DetectNodeIP,
		newKernel:    func(l *zap.Logger) (careKernel, error) { return ipvs.NewKernel(l) },
		newProber:    func(c probe.Config) (careProber, error) { return probe.New(c) },
		serve:        care.Serve,
	}
}

// lvscareNodeIPEnv is the variable sealos sets in lvscare's static pod.
const lvscareNodeIPEnv = "LVSCARE_NODE_IP"

// careFlags are the raw flags of `vipctl care`.
type careFlags struct {
	vip, mode, iface, nodeIP, scheduler string
	masters, rs                         []string
	healthPath, healthScheme            string
	livezPath                           string
	caFile, certFile, keyFile           string
	insecure                            bool
	statuses                            []int
	interval, timeout                   time.Duration
	rise, fall                          int
	holdDown, maxHoldDown, drainTimeout time.Duration
	resync, probeReuse                  time.Duration
	sentinel                            bool
	metricsAddr                         string
	once                                bool
	// lvscare flags accepted and ignored.
	lvsLogger, lvsReqMethod, lvsReqBody string
	lvsClean                            bool
	lvsMasqBit                          int
	lvsReqHeaders                       map[string]string
}

// secondsOrDuration is a duration flag that also takes a bare number of
// seconds, as lvscare's --interval did.
type secondsOrDuration struct{ d *time.Duration }

func (v secondsOrDuration) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v secondsOrDuration) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*v.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 1s or 500ms, or a number of seconds")
	}
	*v.d = d
	return nil
}

func (v secondsOrDuration) Type() string { return "duration" }

func (f *careFlags) register(fs *pflag.FlagSet) {
	def := health.DefaultConfig()
	fs.StringVar(&f.vip, "vip", DefaultVIP+":6443", "virtual server address, IP[:PORT] (port defaults to 6443)")
	fs.StringSliceVar(&f.masters, "master", nil, "a master's apiserver address, IP[:PORT] (port defaults to 6443); repeat or separate with commas")
	fs.StringVar(&f.mode, "mode", string(ipvs.ModeLink), "how the VIP is reachable locally: link (dummy interface) or route (VIP/32 route via the node IP)")
	fs.StringVar(&f.iface, "interface", ipvs.DefaultInterface, "dummy interface holding the VIP in link mode")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's IP, the source of connections to the masters (default: $"+lvscareNodeIPEnv+", else detected from the route to the first master)")
	fs.StringVar(&f.scheduler, "scheduler", ipvs.DefaultScheduler, "IPVS scheduler: "+strings.Join(ipvs.Schedulers, ", "))
	fs.StringVar(&f.healthPath, "health-path", care.DefaultHealthPath, "HTTP path probed on each master")
	fs.StringVar(&f.livezPath, "liveness-path", "", "before resetting the connections of a master that answered --health-path unhealthily, probe this path (e.g. "+care.LivenessPath+"): 200 means it still serves them (an apiserver in its shutdown delay), so they are left to finish; empty (default): always reset, so long-lived watches move at once")
	fs.StringVar(&f.healthScheme, "health-scheme", string(probe.HTTPS), "probe: https (TLS verified against --ca-file), http, or tcp (connect only)")
	fs.StringVar(&f.caFile, "ca-file", care.DefaultCAFile, "cluster CA the apiservers' certificates must chain to")
	fs.StringVar(&f.certFile, "cert-file", "", "client certificate presented to the apiservers (optional, with --key-file)")
	fs.StringVar(&f.keyFile, "key-file", "", "key of --cert-file")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "do not verify the apiservers' certificates (not recommended)")
	fs.IntSliceVar(&f.statuses, "health-status", []int{200}, "HTTP statuses that mean healthy; any other is a failure")
	f.interval = def.Interval
	fs.Var(secondsOrDuration{&f.interval}, "interval", "time between two probes of a master (a bare number means seconds)")
	fs.DurationVar(&f.timeout, "timeout", 0, "bound of one probe (connect, TLS, response), shorter than --interval (default: 80% of --interval, at most 800ms, so that a silent master is out within 3 s)")
	fs.IntVar(&f.rise, "rise", def.Rise, "consecutive successful probes that bring a master back")
	fs.IntVar(&f.fall, "fall", def.Fall, "consecutive failed probes that take a master out")
	fs.DurationVar(&f.holdDown, "hold-down", def.HoldDown, "hold-down of a master that falls again soon after a fall (it stays out until this long after its last failed probe); doubles with each further recent fall; 0 turns flap damping off")
	fs.DurationVar(&f.maxHoldDown, "max-hold-down", def.MaxHoldDown, "cap of the hold-down, and the quiet time that halves a master's count of recent falls")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", def.DrainTimeout, "how long a master out of service keeps weight 0 while it has active connections, before it is deleted")
	fs.DurationVar(&f.resync, "resync-period", care.DefaultResyncPeriod, "how often the IPVS service is polled and repaired (a flush emits no event)")
	fs.DurationVar(&f.probeReuse, "probe-reuse", care.DefaultProbeReuse, "how long a probe connection that answered healthy carries the next probes of its master (0: a fresh connection per probe); a connection closed while idle is replaced within the probe")
	fs.BoolVar(&f.sentinel, "sentinel", true, "hold an idle keep-alive connection to each master and probe at once when it closes (detects a killed apiserver in milliseconds)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", care.DefaultMetricsAddr, "HOST:PORT serving /metrics, /healthz, /readyz and /status; empty to disable")
	fs.BoolVar(&f.once, "once", false, "probe every master once, reconcile once and exit")

	// lvscare's names, so that a sealos manifest keeps working.
	alias := func(name, of string) {
		_ = fs.MarkHidden(name)
		fs.Lookup(name).Usage = "alias of --" + of + " (lvscare)"
	}
	fs.StringVar(&f.vip, "vs", DefaultVIP+":6443", "")
	alias("vs", "vip")
	fs.StringSliceVar(&f.rs, "rs", nil, "")
	alias("rs", "master")
	fs.StringVar(&f.healthScheme, "health-schem", string(probe.HTTPS), "")
	alias("health-schem", "health-scheme")
	fs.BoolVar(&f.insecure, "health-insecure-skip-verify", false, "")
	alias("health-insecure-skip-verify", "insecure-skip-verify")
	fs.DurationVar(&f.timeout, "health-timeout", 0, "")
	alias("health-timeout", "timeout")
	fs.StringVar(&f.nodeIP, "ip", "", "")
	alias("ip", "node-ip")
	fs.StringVar(&f.iface, "iface", ipvs.DefaultInterface, "")
	alias("iface", "interface")
	fs.BoolVar(&f.once, "run-once", false, "")
	alias("run-once", "once")
	ignored := func(name string) {
		_ = fs.MarkHidden(name)
		fs.Lookup(name).Usage = "lvscare flag, accepted and ignored"
	}
	fs.StringVar(&f.lvsLogger, "logger", "", "")
	ignored("logger")
	fs.BoolVarP(&f.lvsClean, "clean", "C", false, "")
	ignored("clean")
	fs.IntVar(&f.lvsMasqBit, "masqueradebit", 0, "")
	ignored("masqueradebit")
	fs.StringVar(&f.lvsReqMethod, "health-req-method", "", "")
	ignored("health-req-method")
	fs.StringVar(&f.lvsReqBody, "health-req-body", "", "")
	ignored("health-req-body")
	fs.StringToStringVar(&f.lvsReqHeaders, "health-req-headers", nil, "")
	ignored("health-req-headers")
}

// careAliases maps each lvscare alias to the flag it stands for.
func careAliases() [][2]string {
	return [][2]string{
		{"vs", "vip"}, {"rs", "master"}, {"health-schem", "health-scheme"},
		{"health-insecure-skip-verify", "insecure-skip-verify"}, {"health-timeout", "timeout"},
		{"ip", "node-ip"}, {"iface", "interface"}, {"run-once", "once"},
	}
}

// careIgnored are the lvscare flags vipctl accepts and ignores.
func careIgnored() []string {
	return []string{"logger", "clean", "masqueradebit", "health-req-method", "health-req-body", "health-req-headers"}
}

// careSetup is the validated outcome of the flags.
type careSetup struct {
	cfg         care.Config
	probe       probe.Config
	sentinel    bool
	metricsAddr string
	once        bool
	lvscare     bool
	livezPath   string
	warnings    []string
}

// build validates every flag and reads the TLS files; it changes nothing.
// Errors name the flag and the value.
func (f *careFlags) build(ctx context.Context, fs *pflag.FlagSet, env careEnv) (careSetup, error) {
	var s careSetup
	for _, a := range careAliases() {
		if fs.Changed(a[0]) && fs.Changed(a[1]) {
			return s, fmt.Errorf("--%s and --%s: give one of them (--%s is lvscare's name for --%s)", a[0], a[1], a[0], a[1])
		}
	}
	for _, n := range careIgnored() {
		if fs.Changed(n) {
			s.warnings = append(s.warnings, fmt.Sprintf("--%s is an lvscare flag that vipctl ignores", n))
		}
	}
	s.lvscare = fs.Changed("vs") || fs.Changed("rs")
	vip, err := ipvs.ParseEndpoint(f.vip, DefaultAPIPort)
	if err != nil {
		return s, fmt.Errorf("--vip %q: %v", f.vip, err)
	}
	var masters []netip.AddrPort
	for _, m := range append(append([]string(nil), f.masters...), f.rs...) {
		a, err := ipvs.ParseEndpoint(m, DefaultAPIPort)
		if err != nil {
			return s, fmt.Errorf("--master %q: %v", m, err)
		}
		masters = append(masters, a)
	}
	mode := f.mode
	if s.lvscare && !fs.Changed("mode") {
		mode = string(ipvs.ModeRoute)
		s.warnings = append(s.warnings, "lvscare command line: using lvscare's default --mode route (give --mode to choose)")
	}
	h := health.DefaultConfig()
	h.Rise, h.Fall, h.Interval = f.rise, f.fall, f.interval
	h.FastRetry = min(h.FastRetry, max(f.interval/2, time.Millisecond))
	if !fs.Changed("timeout") && !fs.Changed("health-timeout") {
		f.timeout = min(800*time.Millisecond, f.interval*8/10)
	}
	h.HoldDown, h.MaxHoldDown, h.DrainTimeout = f.holdDown, f.maxHoldDown, f.drainTimeout
	s.cfg = care.Config{
		Service:      ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: f.scheduler},
		Masters:      masters,
		VIP:          ipvs.VIPConfig{Mode: ipvs.Mode(mode), Interface: f.iface, VIP: vip.Addr()},
		Health:       h,
		Timeout:      f.timeout,
		ResyncPeriod: f.resync,
		Version:      version.Get().Version,
	}
	// Validate everything but the node IP first, with a stand-in, so that
	// a bad flag is reported before anything is detected.
	stand := s.cfg
	stand.VIP.NodeIP = standInNodeIP(vip.Addr())
	if err := stand.Validate(); err != nil {
		return s, err
	}
	if err := f.buildProbe(&s); err != nil {
		return s, err
	}
	if f.metricsAddr != "" {
		host, port, err := net.SplitHostPort(f.metricsAddr)
		if err != nil {
			return s, fmt.Errorf("--metrics-addr %q: want HOST:PORT: %v", f.metricsAddr, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return s, fmt.Errorf("--metrics-addr %q: port %q: want 1 to 65535", f.metricsAddr, port)
		}
		if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			return s, fmt.Errorf("--metrics-addr %q: host %q: want an IP address", f.metricsAddr, host)
		}
	}
	s.metricsAddr, s.once = f.metricsAddr, f.once
	s.sentinel = f.sentinel && s.probe.Scheme != probe.TCP
	node, err := f.resolveNodeIP(ctx, env, masters[0].Addr())
	if err != nil {
		return s, err
	}
	s.cfg.VIP.NodeIP = node
	if err := s.cfg.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// standInNodeIP is an address of vip's family that differs from it.
func standInNodeIP(vip netip.Addr) netip.Addr {
	if vip.Is4() {
		if vip == netip.MustParseAddr("192.0.2.1") {
			return netip.MustParseAddr("192.0.2.2")
		}
		return netip.MustParseAddr("192.0.2.1")
	}
	if vip == netip.MustParseAddr("2001:db8::1") {
		return netip.MustParseAddr("2001:db8::2")
	}
	return netip.MustParseAddr("2001:db8::1")
}

func (f *careFlags) resolveNodeIP(ctx context.Context, env careEnv, firstMaster netip.Addr) (netip.Addr, error) {
	if f.nodeIP != "" {
		a, err := netip.ParseAddr(f.nodeIP)
		if err != nil {
			return a, fmt.Errorf("--node-ip %q: not an IP address", f.nodeIP)
		}
		return a.Unmap(), nil
	}
	if v := strings.TrimSpace(env.getenv(lvscareNodeIPEnv)); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return a, fmt.Errorf("$%s %q: not an IP address (give --node-ip)", lvscareNodeIPEnv, v)
		}
		return a.Unmap(), nil
	}
	a, err := env.detectNodeIP(ctx, firstMaster)
	if err != nil {
		return a, fmt.Errorf("--node-ip: not given, and detecting it from the route to %s failed: %w", firstMaster, err)
	}
	return a, nil
}

// buildProbe validates the probe flags and loads the TLS files.
func (f *careFlags) buildProbe(s *careSetup) error {
	scheme := probe.Scheme(f.healthScheme)
	switch scheme {
	case probe.HTTPS, probe.HTTP, probe.TCP:
	default:
		return fmt.Errorf("--health-scheme %q: want https, http or tcp", f.healthScheme)
	}
	if f.livezPath != "" && !strings.HasPrefix(f.livezPath, "/") {
		return fmt.Errorf("--liveness-path %q: must start with / (or be empty)", f.livezPath)
	}
	s.livezPath = f.livezPath
	if scheme != probe.TCP && !strings.HasPrefix(f.healthPath, "/") {
		return fmt.Errorf("--health-path %q: must start with /", f.healthPath)
	}
	if len(f.statuses) == 0 {
		return errors.New("--health-status: at least one status is required")
	}
	for _, c := range f.statuses {
		if c < 100 || c > 599 {
			return fmt.Errorf("--health-status %d: want an HTTP status, 100 to 599", c)
		}
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return fmt.Errorf("--cert-file %q and --key-file %q: give both or neither", f.certFile, f.keyFile)
	}
	if f.probeReuse < 0 {
		return fmt.Errorf("--probe-reuse %s: want 0 (a fresh connection per probe) or a positive duration", f.probeReuse)
	}
	s.probe = probe.Config{Scheme: scheme, Path: f.healthPath, Statuses: f.statuses, Timeout: f.timeout,
		UserAgent: "vipctl-care/" + version.Get().Version, ReuseFor: f.probeReuse}
	if scheme != probe.HTTPS {
		return nil
	}
	insecure := f.insecure
	if !insecure && f.caFile == "" {
		return errors.New("--ca-file \"\": a CA is required to verify the apiservers (or pass --insecure-skip-verify)")
	}
	if !insecure && f.caFile == care.DefaultCAFile && s.lvscare {
		if _, err := os.Stat(f.caFile); errors.Is(err, fs.ErrNotExist) {
			// lvscare never verified certificates and sealos does not
			// mount the CA into its pod: keep such a manifest working.
			s.warnings = append(s.warnings, fmt.Sprintf("lvscare command line and no %s: not verifying the apiservers' certificates, as lvscare did (mount the CA to verify them)", f.caFile))
			insecure = true
		}
	}
	var roots *x509.CertPool
	if insecure {
		if f.insecure {
			s.warnings = append(s.warnings, "--insecure-skip-verify: the apiservers' certificates are not verified; anything answering on a master's address counts as that master")
		}
	} else {
		p, err := probe.LoadCA(f.caFile)
		if err != nil {
			hint := ""
			if errors.Is(err, fs.ErrNotExist) {
				hint = " (mount the cluster CA into the pod, or pass --insecure-skip-verify)"
			}
			return fmt.Errorf("--ca-file %q: %w%s", f.caFile, err, hint)
		}
		roots = p
	}
	var certs []tls.Certificate
	if f.certFile != "" {
		c, err := probe.LoadClientCert(f.certFile, f.keyFile)
		if err != nil {
			return fmt.Errorf("--cert-file %q/--key-file %q: %w", f.certFile, f.keyFile, err)
		}
		certs = append(certs, c)
	}
	s.probe.TLS = probe.TLSConfig(roots, certs, insecure)
	return nil
}

func newCareCmd(a *app) *cobra.Command { return newCareCmdWith(a, defaultCareEnv()) }

func newCareCmdWith(a *app, env careEnv) *cobra.Command {
	var f careFlags
	cmd := &cobra.Command{
		Use:   "care --vip VIP[:PORT] --master IP[:PORT] [--master ...]",
		Short: "Health-check the masters and keep the IPVS virtual server in line (the watchdog)",
		Long: `care is vipctl's watchdog, run as a static pod on every node. It probes each
master's kube-apiserver (HTTPS GET of --health-path, verified against the
cluster CA), takes a master out of the virtual server after --fall failed
probes (weight 0, its connections reset, deleted once drained) and puts it
back after --rise good ones. It re-asserts the virtual server, its real
servers and the VIP plumbing every --interval, on every netlink event and
polls the IPVS table every --resync-period, so a flush is repaired at once.
When every master is down it keeps them all (fail-open). On SIGTERM it
leaves the kernel's rules in place; 'vipctl ipvs delete' removes them.

lvscare's flag names are accepted (--vs, --rs, --health-schem,
--health-insecure-skip-verify, --health-timeout, --ip, --iface, --run-once;
--interval in seconds), so a sealos manifest keeps working; see docs/care.md.`,
		Example: `  vipctl care --vip 10.103.97.2:6443 --master 192.0.2.11 --master 192.0.2.12 --master 192.0.2.13
  vipctl care --vs 10.103.97.2:6443 --rs 192.0.2.11:6443 --rs 192.0.2.12:6443 --health-path /healthz --health-schem https`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: boolean flags take their value as --flag=true", args[0])
			}
			s, err := f.build(cmd.Context(), cmd.Flags(), env)
			if err != nil {
				return err
			}
			return runCare(cmd.Context(), a.log, env, s)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// runCare starts the watchdog from a validated setup.
func runCare(ctx context.Context, log *zap.Logger, env careEnv, s careSetup) error {
	for _, w := range s.warnings {
		log.Warn(w)
	}
	p, err := env.newProber(s.probe)
	if err != nil {
		return err
	}
	k, err := env.newKernel(log)
	if err != nil {
		return err
	}
	defer k.Close()
	d := care.Deps{Dataplane: k, Plumbing: k, Closer: k, Events: k, Prober: p, Log: log}
	if s.probe.Scheme != probe.TCP && s.livezPath != "" {
		lc := s.probe
		lc.Path, lc.Statuses = s.livezPath, []int{200}
		lp, err := env.newProber(lc)
		if err != nil {
			return err
		}
		d.Liveness = lp
	}
	if s.sentinel && !s.once {
		d.Sentinel = p
	}
	w, err := care.New(s.cfg, d)
	if err != nil {
		return err
	}
	if s.once {
		return w.Once(ctx)
	}
	if s.metricsAddr != "" {
		if err := env.serve(ctx, s.metricsAddr, w.Handler(), log); err != nil {
			return err
		}
	}
	return w.Run(ctx)
}
