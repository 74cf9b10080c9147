package careconfig

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// LvscareNodeIPEnv is the variable sealos sets in lvscare's static pod; the
// watchdog reads the node IP from it when --node-ip is not given.
const LvscareNodeIPEnv = "LVSCARE_NODE_IP"

// Flags binds a Config to command-line flags. Register adds them to a flag
// set; after parsing, Config returns the validated result.
type Flags struct {
	c       Config
	fs      *pflag.FlagSet
	vip     string
	masters []string
	rs      []string
	nodeIP  string
	// lvscare flags accepted and ignored.
	lvsLogger, lvsReqMethod, lvsReqBody string
	lvsClean                            bool
	lvsMasqBit                          int
	lvsReqHeaders                       map[string]string
}

// NewFlags returns flags whose defaults are base's values (usually
// Default()).
func NewFlags(base Config) *Flags {
	f := &Flags{c: base, vip: base.VIP.String()}
	f.c.Masters = slices.Clone(base.Masters)
	f.c.HealthStatuses = slices.Clone(base.HealthStatuses)
	if base.NodeIP.IsValid() {
		f.nodeIP = base.NodeIP.String()
	}
	return f
}

// flag is one watchdog flag: its name and how it is registered.
type flag struct {
	name string
	add  func(f *Flags, fs *pflag.FlagSet, name string)
}

// flags lists every watchdog flag, in the order Args renders them.
var flags = []flag{
	{"vip", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.vip, n, f.vip, "virtual server address, IP[:PORT] (port defaults to 6443; default ["+DefaultVIP6+"]:6443 when the masters are IPv6)")
	}},
	{"master", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringArrayVar(&f.masters, n, nil, "a master's apiserver address, IP[:PORT] (port defaults to 6443); repeat or separate with commas")
	}},
	{"mode", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar((*string)(&f.c.Mode), n, string(f.c.Mode), "how the VIP is reachable locally: link (dummy interface) or route (VIP/32 route via the node IP)")
	}},
	{"interface", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.Interface, n, f.c.Interface, "dummy interface holding the VIP in link mode")
	}},
	{"node-ip", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.nodeIP, n, f.nodeIP, "this node's IP, the source of connections to the masters (default: detected from the route to the first master; the watchdog reads $"+LvscareNodeIPEnv+" first)")
	}},
	{"scheduler", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.Scheduler, n, f.c.Scheduler, "IPVS scheduler: "+strings.Join(Schedulers, ", "))
	}},
	{"health-path", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.HealthPath, n, f.c.HealthPath, "HTTP path probed on each master")
	}},
	{"health-scheme", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar((*string)(&f.c.HealthScheme), n, string(f.c.HealthScheme), "probe: https (TLS verified against --ca-file), http, or tcp (connect only)")
	}},
	{"ca-file", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.CAFile, n, f.c.CAFile, "cluster CA the apiservers' certificates must chain to")
	}},
	{"interval", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.Var(secondsOrDuration{&f.c.Interval}, n, "time between two probes of a master (a bare number means seconds)")
		fs.Lookup(n).DefValue = f.c.Interval.String()
	}},
	{"timeout", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.Timeout, n, f.c.Timeout, "bound of one probe (connect, TLS, response), shorter than --interval (0, the default: 80% of --interval, at most 800ms, so that a silent master is out within 3 s)")
	}},
	{"rise", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.IntVar(&f.c.Rise, n, f.c.Rise, "consecutive successful probes that bring a master back")
	}},
	{"fall", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.IntVar(&f.c.Fall, n, f.c.Fall, "consecutive failed probes that take a master out")
	}},
	{"metrics-addr", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.MetricsAddr, n, f.c.MetricsAddr, "HOST:PORT serving /metrics, /healthz, /readyz and /status; empty to disable")
	}},
	{"liveness-path", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.LivenessPath, n, f.c.LivenessPath, "before resetting the connections of a master that answered --health-path unhealthily, probe this path (e.g. "+LivenessPath+"): 200 means it still serves them (an apiserver in its shutdown delay), so they are left to finish; empty (default): always reset, so long-lived watches move at once")
	}},
	{"cert-file", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.CertFile, n, f.c.CertFile, "client certificate presented to the apiservers (optional, with --key-file)")
	}},
	{"key-file", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.KeyFile, n, f.c.KeyFile, "key of --cert-file")
	}},
	{"kubeconfig", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.Kubeconfig, n, f.c.Kubeconfig, "kubeconfig whose client certificate and key the probes present, whose cluster CA verifies the apiservers (--ca-file when it has none), and through which the masters are discovered from the kubernetes Service's EndpointSlice; its files are re-read when they change (the kubelet rotates its certificate); empty: anonymous probes, the --master list only; the default, when absent, means the same")
	}},
	{"state-file", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.StringVar(&f.c.StateFile, n, f.c.StateFile, "file keeping the masters discovered from the API (no secrets in it), read at start so a restart with the API unreachable still knows them; empty: not kept")
	}},
	{"forget-after", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.ForgetAfter, n, f.c.ForgetAfter, "a discovered master that has been absent from the API and unhealthy this long is drained and forgotten (--master seeds never are); 0: never")
	}},
	{"insecure-skip-verify", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.BoolVar(&f.c.InsecureSkipVerify, n, f.c.InsecureSkipVerify, "do not verify the apiservers' certificates (not recommended)")
	}},
	{"health-status", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.IntSliceVar(&f.c.HealthStatuses, n, f.c.HealthStatuses, "HTTP statuses that mean healthy; any other is a failure")
	}},
	{"hold-down", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.HoldDown, n, f.c.HoldDown, "hold-down of a master that falls again soon after a fall (it stays out until this long after its last failed probe); doubles with each further recent fall; 0 turns flap damping off")
	}},
	{"max-hold-down", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.MaxHoldDown, n, f.c.MaxHoldDown, "cap of the hold-down, and the quiet time that halves a master's count of recent falls")
	}},
	{"drain-timeout", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.DrainTimeout, n, f.c.DrainTimeout, "how long a master out of service keeps weight 0 while it has active connections, before it is deleted")
	}},
	{"resync-period", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.ResyncPeriod, n, f.c.ResyncPeriod, "how often the IPVS service is polled and repaired (a flush emits no event)")
	}},
	{"probe-reuse", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.ProbeReuse, n, f.c.ProbeReuse, "how long a probe connection that answered healthy carries the next probes of its master (0: a fresh connection per probe); a connection closed while idle is replaced within the probe")
	}},
	{"probe-http2", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.BoolVar(&f.c.ProbeHTTP2, n, f.c.ProbeHTTP2, "experimental: probe each master (https) over one HTTP/2 connection that the sentinel shares: a health GET every --ready-every and HTTP/2 PINGs between, the connection kept for --probe-reuse (default then 10m); a master without HTTP/2 is probed over HTTP/1.1")
	}},
	{"ready-every", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.DurationVar(&f.c.ReadyEvery, n, f.c.ReadyEvery, "with --probe-http2, how long a healthy health GET stands: probes within it are PINGs (0: every probe is a GET)")
	}},
	{"sentinel", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.BoolVar(&f.c.Sentinel, n, f.c.Sentinel, "hold an idle keep-alive connection to each master and probe at once when it closes (detects a killed apiserver in milliseconds)")
	}},
	{"once", func(f *Flags, fs *pflag.FlagSet, n string) {
		fs.BoolVar(&f.c.Once, n, f.c.Once, "probe every master once, reconcile once and exit")
	}},
}

// Names of flag groups for Register.
var (
	// ServiceFlags describe the virtual service and the VIP plumbing.
	ServiceFlags = []string{"vip", "master", "mode", "interface", "node-ip", "scheduler"}
	// TuningFlags are the probe tuning flags that `join` and `init` offer
	// besides the service flags.
	TuningFlags = []string{"health-path", "interval", "timeout", "rise", "fall"}
	// PodFlags are the flags the watchdog's static pod depends on.
	PodFlags = []string{"ca-file", "metrics-addr"}
)

// FlagNames returns the name of every watchdog flag, in the order Args
// renders them.
func FlagNames() []string {
	out := make([]string, len(flags))
	for i, fl := range flags {
		out[i] = fl.name
	}
	return out
}

// Register adds the named watchdog flags to fs (every flag when names is
// empty). A name that is not a watchdog flag panics: it is a programming
// error.
func (f *Flags) Register(fs *pflag.FlagSet, names ...string) {
	f.fs = fs
	if len(names) == 0 {
		names = FlagNames()
	}
	for _, n := range names {
		i := slices.IndexFunc(flags, func(fl flag) bool { return fl.name == n })
		if i < 0 {
			panic("careconfig: no watchdog flag --" + n)
		}
		flags[i].add(f, fs, n)
	}
}

// lvscareAliases maps each lvscare flag name to the flag it stands for.
var lvscareAliases = [][2]string{
	{"vs", "vip"}, {"rs", "master"}, {"health-schem", "health-scheme"},
	{"health-insecure-skip-verify", "insecure-skip-verify"}, {"health-timeout", "timeout"},
	{"ip", "node-ip"}, {"iface", "interface"}, {"run-once", "once"},
}

// lvscareIgnored are the lvscare flags the watchdog accepts and ignores.
var lvscareIgnored = []string{"logger", "clean", "masqueradebit", "health-req-method", "health-req-body", "health-req-headers"}

// RegisterLvscare adds lvscare's flag names (hidden), so that a sealos
// manifest keeps working: aliases of the watchdog's flags, and flags
// accepted and ignored. Call it after Register with every flag.
func (f *Flags) RegisterLvscare(fs *pflag.FlagSet) {
	alias := func(name, of string) {
		_ = fs.MarkHidden(name)
		fs.Lookup(name).Usage = "alias of --" + of + " (lvscare)"
	}
	fs.StringVar(&f.vip, "vs", f.vip, "")
	fs.StringArrayVar(&f.rs, "rs", nil, "")
	fs.StringVar((*string)(&f.c.HealthScheme), "health-schem", string(f.c.HealthScheme), "")
	fs.BoolVar(&f.c.InsecureSkipVerify, "health-insecure-skip-verify", f.c.InsecureSkipVerify, "")
	fs.DurationVar(&f.c.Timeout, "health-timeout", f.c.Timeout, "")
	fs.StringVar(&f.nodeIP, "ip", f.nodeIP, "")
	fs.StringVar(&f.c.Interface, "iface", f.c.Interface, "")
	fs.BoolVar(&f.c.Once, "run-once", f.c.Once, "")
	for _, a := range lvscareAliases {
		alias(a[0], a[1])
	}
	fs.StringVar(&f.lvsLogger, "logger", "", "")
	fs.BoolVarP(&f.lvsClean, "clean", "C", false, "")
	fs.IntVar(&f.lvsMasqBit, "masqueradebit", 0, "")
	fs.StringVar(&f.lvsReqMethod, "health-req-method", "", "")
	fs.StringVar(&f.lvsReqBody, "health-req-body", "", "")
	fs.StringToStringVar(&f.lvsReqHeaders, "health-req-headers", nil, "")
	for _, n := range lvscareIgnored {
		_ = fs.MarkHidden(n)
		fs.Lookup(n).Usage = "lvscare flag, accepted and ignored"
	}
}

func (f *Flags) changed(name string) bool {
	return f.fs != nil && f.fs.Lookup(name) != nil && f.fs.Changed(name)
}

// Lvscare reports whether the command line used lvscare's --vs or --rs.
func (f *Flags) Lvscare() bool { return f.changed("vs") || f.changed("rs") }

// Changed reports whether the flag (or its lvscare alias) was given.
func (f *Flags) Changed(name string) bool {
	if f.changed(name) {
		return true
	}
	for _, a := range lvscareAliases {
		if a[1] == name && f.changed(a[0]) {
			return true
		}
	}
	return false
}

// Config returns the parsed and validated configuration, and warnings
// about it (lvscare flags ignored or defaulted, Config.Warnings). Errors
// name the flag and the value.
func (f *Flags) Config() (Config, []string, error) {
	var warnings []string
	for _, a := range lvscareAliases {
		if f.changed(a[0]) && f.changed(a[1]) {
			return Config{}, nil, fmt.Errorf("--%s and --%s: give one of them (--%s is lvscare's name for --%s)", a[0], a[1], a[0], a[1])
		}
	}
	for _, n := range lvscareIgnored {
		if f.changed(n) {
			warnings = append(warnings, fmt.Sprintf("--%s is an lvscare flag that vipctl ignores", n))
		}
	}
	c := f.c
	c.Masters = slices.Clone(c.Masters)
	c.HealthStatuses = slices.Clone(c.HealthStatuses)
	vip, err := ParseVIP(f.vip)
	if err != nil {
		return c, nil, err
	}
	c.VIP = vip
	if f.Changed("master") {
		if c.Masters, err = ParseMasters(append(slices.Clone(f.masters), f.rs...)); err != nil {
			return c, nil, err
		}
	}
	if c.CertFile != "" && !f.Changed("kubeconfig") && c.Kubeconfig == DefaultKubeconfig {
		// A client certificate of one's own replaces the kubelet's.
		c.Kubeconfig = ""
	}
	if c.ProbeHTTP2 && !f.Changed("probe-reuse") {
		c.ProbeReuse = DefaultHTTP2ProbeReuse
	}
	if !f.Changed("vip") && c.VIP == DefaultVIPFor(nil) {
		// The IPv4 default VIP with IPv6 masters cannot work: take the
		// IPv6 default instead.
		c.VIP = DefaultVIPFor(c.Masters)
	}
	c.NodeIP = netip.Addr{}
	if f.nodeIP != "" {
		a, err := netip.ParseAddr(f.nodeIP)
		if err != nil {
			return c, nil, fmt.Errorf("--node-ip %q: not an IP address", f.nodeIP)
		}
		c.NodeIP = a.Unmap()
	}
	if f.Lvscare() && !f.changed("mode") {
		c.Mode = ModeRoute
		warnings = append(warnings, "lvscare command line: using lvscare's default --mode route (give --mode to choose)")
	}
	if err := c.Validate(); err != nil {
		return c, nil, err
	}
	return c, append(warnings, c.Warnings()...), nil
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
		ns := n * float64(time.Second)
		if math.IsNaN(ns) || math.IsInf(ns, 0) || ns > float64(MaxInterval) || ns < -float64(MaxInterval) {
			return fmt.Errorf("%s seconds is out of range (at most %s)", s, MaxInterval)
		}
		*v.d = time.Duration(ns)
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

// Args renders c as the arguments of `vipctl care`, --flag=value each, in
// a fixed order: --vip and every --master, then each flag whose value
// differs from Default() (so the watchdog's own defaults apply to the
// others), with --ca-file and --metrics-addr always written (a static pod
// mounts the one and probes the other). A zero NodeIP is left out: the
// watchdog detects it. ParseArgs(c.Args()) gives c back.
func (c Config) Args() []string {
	def := Default()
	args := []string{"--vip=" + c.VIP.String()}
	for _, m := range c.Masters {
		args = append(args, "--master="+m.String())
	}
	add := func(name, v string) { args = append(args, "--"+name+"="+v) }
	for _, fl := range flags[2:] {
		n := fl.name
		switch n {
		case "mode":
			if c.Mode != def.Mode {
				add(n, string(c.Mode))
			}
		case "interface":
			if c.Interface != def.Interface {
				add(n, c.Interface)
			}
		case "node-ip":
			if c.NodeIP.IsValid() {
				add(n, c.NodeIP.String())
			}
		case "scheduler":
			if c.Scheduler != def.Scheduler {
				add(n, c.Scheduler)
			}
		case "health-path":
			if c.HealthPath != def.HealthPath {
				add(n, c.HealthPath)
			}
		case "health-scheme":
			if c.HealthScheme != def.HealthScheme {
				add(n, string(c.HealthScheme))
			}
		case "ca-file":
			add(n, c.CAFile)
		case "interval":
			if c.Interval != def.Interval {
				add(n, c.Interval.String())
			}
		case "timeout":
			if c.Timeout != def.Timeout {
				add(n, c.Timeout.String())
			}
		case "rise":
			if c.Rise != def.Rise {
				add(n, strconv.Itoa(c.Rise))
			}
		case "fall":
			if c.Fall != def.Fall {
				add(n, strconv.Itoa(c.Fall))
			}
		case "metrics-addr":
			add(n, c.MetricsAddr)
		case "liveness-path":
			if c.LivenessPath != def.LivenessPath {
				add(n, c.LivenessPath)
			}
		case "cert-file":
			if c.CertFile != "" {
				add(n, c.CertFile)
			}
		case "key-file":
			if c.KeyFile != "" {
				add(n, c.KeyFile)
			}
		case "kubeconfig":
			if c.Kubeconfig != def.Kubeconfig {
				add(n, c.Kubeconfig)
			}
		case "state-file":
			if c.StateFile != def.StateFile {
				add(n, c.StateFile)
			}
		case "forget-after":
			if c.ForgetAfter != def.ForgetAfter {
				add(n, c.ForgetAfter.String())
			}
		case "insecure-skip-verify":
			if c.InsecureSkipVerify != def.InsecureSkipVerify {
				add(n, strconv.FormatBool(c.InsecureSkipVerify))
			}
		case "health-status":
			if !slices.Equal(c.HealthStatuses, def.HealthStatuses) {
				s := make([]string, len(c.HealthStatuses))
				for i, v := range c.HealthStatuses {
					s[i] = strconv.Itoa(v)
				}
				add(n, strings.Join(s, ","))
			}
		case "hold-down":
			if c.HoldDown != def.HoldDown {
				add(n, c.HoldDown.String())
			}
		case "max-hold-down":
			if c.MaxHoldDown != def.MaxHoldDown {
				add(n, c.MaxHoldDown.String())
			}
		case "drain-timeout":
			if c.DrainTimeout != def.DrainTimeout {
				add(n, c.DrainTimeout.String())
			}
		case "resync-period":
			if c.ResyncPeriod != def.ResyncPeriod {
				add(n, c.ResyncPeriod.String())
			}
		case "probe-reuse":
			if c.ProbeReuse != def.ProbeReuse {
				add(n, c.ProbeReuse.String())
			}
		case "probe-http2":
			if c.ProbeHTTP2 != def.ProbeHTTP2 {
				add(n, strconv.FormatBool(c.ProbeHTTP2))
			}
		case "ready-every":
			if c.ReadyEvery != def.ReadyEvery {
				add(n, c.ReadyEvery.String())
			}
		case "sentinel":
			if c.Sentinel != def.Sentinel {
				add(n, strconv.FormatBool(c.Sentinel))
			}
		case "once":
			if c.Once {
				add(n, "true")
			}
		default:
			panic("careconfig: Args does not render --" + n)
		}
	}
	return args
}

// globalFlags are vipctl's own flags, valid on any command line.
var globalFlags = []string{"log-format", "log-level"}

// ParseArgs parses the arguments of a `vipctl care` command line, such as
// the command of the watchdog's static pod (after "vipctl care"), with
// lvscare's names and vipctl's global flags (--log-format, --log-level)
// accepted. It returns the configuration the watchdog would run with, except
// that files are not read and the node IP is not detected, and the warnings
// the watchdog would log.
func ParseArgs(args []string) (Config, []string, error) {
	f := NewFlags(Default())
	fs := pflag.NewFlagSet("vipctl care", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	f.Register(fs)
	f.RegisterLvscare(fs)
	for _, g := range globalFlags {
		fs.String(g, "", "")
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, nil, fmt.Errorf("watchdog command line: %w", err)
	}
	if fs.NArg() > 0 {
		return Config{}, nil, fmt.Errorf("watchdog command line: unexpected argument %q", fs.Arg(0))
	}
	return f.Config()
}

// ApplyArgs sets further watchdog flags on c, given as --flag=value items
// (`vipctl manifest -- ARGS`, `vipctl join --care-flag`). given reports the
// flags the command set already: naming one again is an error, as are
// lvscare's names, vipctl's global flags and anything but --flag=value.
// The result is validated.
func (c Config) ApplyArgs(args []string, given func(name string) bool, what string) (Config, error) {
	if len(args) == 0 {
		return c, nil
	}
	f := NewFlags(c)
	fs := pflag.NewFlagSet(what, pflag.ContinueOnError)
	fs.SetOutput(discard{})
	f.Register(fs)
	for _, a := range args {
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || name == "" || !hasValue {
			return c, fmt.Errorf("%s %q: want --flag=value", what, a)
		}
		if slices.Contains(globalFlags, name) {
			return c, fmt.Errorf("%s %q: --%s is vipctl's own flag, set by the pod", what, a, name)
		}
		if fs.Lookup(name) == nil {
			return c, fmt.Errorf("%s %q: --%s is not a flag of the watchdog (vipctl care --help lists them)", what, a, name)
		}
		if given != nil && given(name) {
			return c, fmt.Errorf("%s %q: --%s is given as a flag already; give it once", what, a, name)
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%s: %w", what, err)
	}
	if fs.Changed("master") && len(c.Masters) > 0 {
		// --master adds to the masters already given.
		f.masters = append(mastersStrings(c.Masters), f.masters...)
	}
	out, _, err := f.Config()
	if err != nil {
		return c, err
	}
	return out, nil
}

func mastersStrings(ms []netip.AddrPort) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.String()
	}
	return out
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
