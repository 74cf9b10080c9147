// Package careconfig is the one configuration of vipctl's watchdog (`vipctl
// care`): its settings and their defaults, the command-line flags that set
// them, the rules a valid configuration follows, the rendering to a command
// line (for the static pod's manifest) and the parsing back from one.
//
// Every command that starts or writes the watchdog goes through it: `vipctl
// care` parses its flags with it, `vipctl manifest`, `vipctl join` (and `vipctl
// init`) build the same Config from theirs and render it with Args, so a
// manifest can only hold a command line the watchdog accepts. `vipctl status`
// and `vipctl reset` read a manifest's command line back with ParseArgs.
//
// The package depends on the standard library, pflag and the pure types of
// package ipvs (its endpoint parser) only: no netlink, no Kubernetes types. Turning a Config into the watchdog's runtime types
// (IPVS service, VIP plumbing, probes) is package care's job, detecting the
// node IP the command's.
package careconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vipctl/vipctl/ipvs"
)

// Defaults of the watchdog's settings.
const (
	// DefaultVIP is the virtual IP sealos/lvscare made the convention.
	DefaultVIP = "10.103.97.2"
	// DefaultVIP6 is the virtual IP when the masters are IPv6 and no --vip
	// is given: a unique-local address (RFC 4193, fd00::/8) that mirrors
	// DefaultVIP, outside the IPv6 service and pod subnets people pick
	// (kind's and vipctl's fd00:10:96::/112 and fd00:10:244::/56, k3s's
	// 2001:cafe:42::/56 and 2001:cafe:43::/112, Cilium's fd00::/104).
	DefaultVIP6 = "fd00:103:97::2"
	// DefaultPort is the kube-apiserver's port, the port of --vip and
	// --master when they give none.
	DefaultPort = 6443
	// DefaultInterface is the dummy interface holding the VIP in link mode.
	DefaultInterface = "vipctl0"
	// DefaultScheduler is round robin, as kube-proxy and lvscare use.
	DefaultScheduler = "rr"
	// DefaultHealthPath is probed on each master.
	DefaultHealthPath = "/readyz"
	// LivenessPath is what --liveness-path is typically set to. Off by
	// default, see docs/care.md.
	LivenessPath = "/livez"
	// DefaultCAFile is the cluster CA kubeadm writes on masters and
	// workers.
	DefaultCAFile = "/etc/kubernetes/pki/ca.crt"
	// DefaultKubeconfig is the kubelet's kubeconfig on a kubeadm node: its
	// client certificate (rotated by the kubelet, in DefaultKubeletPKIDir)
	// authenticates the probes and the discovery of the masters, and its
	// server is the VIP. When the file is absent and --kubeconfig was left
	// at this default, the watchdog probes anonymously and discovers
	// nothing (a warning says so).
	DefaultKubeconfig = "/etc/kubernetes/kubelet.conf"
	// DefaultKubeletPKIDir holds the kubelet's rotating client certificate
	// that DefaultKubeconfig points at; the watchdog's pod mounts it
	// read-only with it.
	DefaultKubeletPKIDir = "/var/lib/kubelet/pki"
	// DefaultStateFile is where the watchdog keeps the masters it
	// discovered, so a restart with the API unreachable still knows them.
	DefaultStateFile = "/var/lib/vipctl/masters.json"
	// DefaultForgetAfter is how long a discovered master must be both
	// absent from the API and unhealthy before it is forgotten.
	DefaultForgetAfter = time.Hour
	// DefaultMetricsPort is the port of the watchdog's metrics and health
	// endpoints. No Kubernetes component uses it (kubelet 10248/10250,
	// kube-proxy 10249/10256, scheduler 10259, controller-manager 10257,
	// etcd 2379-2381, apiserver 6443) and it is outside the NodePort range.
	DefaultMetricsPort = 9282
	// DefaultMetricsAddr serves /metrics, /healthz, /readyz and /status on
	// loopback only, like kube-proxy's metrics; the kubelet probes it there.
	DefaultMetricsAddr = "127.0.0.1:9282"
	// DefaultInterval is the time between two probes of a master.
	DefaultInterval = time.Second
	// MaxDefaultTimeout caps the timeout derived from the interval, so that
	// a silent master is out within 3 s.
	MaxDefaultTimeout = 800 * time.Millisecond
	DefaultRise       = 2
	DefaultFall       = 2
	// DefaultHoldDown is the hold-down after a master's second fall in a
	// row of flaps; it doubles with each further fall up to
	// DefaultMaxHoldDown.
	DefaultHoldDown     = 5 * time.Second
	DefaultMaxHoldDown  = 30 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	// DefaultResyncPeriod is how often the IPVS service is polled: a flush
	// of the table emits no event.
	DefaultResyncPeriod = 100 * time.Millisecond
	// MinResyncPeriod keeps the kernel poll from becoming a busy loop.
	MinResyncPeriod = 10 * time.Millisecond
	// DefaultProbeReuse is how long a probe connection that answered
	// healthy carries the next probes of its master: ten probes at the
	// default interval share one TCP and TLS handshake, which is most of a
	// probe's cost, while a fresh connection (and certificate check) still
	// happens every 10 s.
	DefaultProbeReuse = 10 * time.Second
	// DefaultReadyEvery is, with --probe-http2, how long a healthy health
	// GET stands: the probes within it are HTTP/2 PINGs.
	DefaultReadyEvery = 1500 * time.Millisecond
	// DefaultHTTP2ProbeReuse is --probe-reuse's default with --probe-http2:
	// how long the shared HTTP/2 connection is kept.
	DefaultHTTP2ProbeReuse = 10 * time.Minute
	// MaxInterval bounds --interval (and the durations derived from it).
	MaxInterval = 24 * time.Hour
)

// Schedulers lists the IPVS schedulers the watchdog accepts; package ipvs
// accepts the same (a test in package care keeps them equal).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}

// Mode is how the VIP is reachable locally.
type Mode string

// The VIP modes; see ipvs.Mode.
const (
	ModeLink  Mode = "link"
	ModeRoute Mode = "route"
)

// Scheme is how a master is probed.
type Scheme string

// The probe schemes; see probe.Scheme.
const (
	HTTPS Scheme = "https"
	HTTP  Scheme = "http"
	TCP   Scheme = "tcp"
)

// Config is the watchdog's configuration: one field per `vipctl care` flag
// (named in each comment). The zero value is not valid; start from Default.
type Config struct {
	VIP       netip.AddrPort   // --vip
	Masters   []netip.AddrPort // --master, in order
	Mode      Mode             // --mode
	Interface string           // --interface, used in link mode
	// NodeIP is the source of connections to the masters (--node-ip);
	// invalid (zero) means "detect it when the watchdog starts".
	NodeIP    netip.Addr
	Scheduler string // --scheduler

	HealthScheme Scheme // --health-scheme
	HealthPath   string // --health-path
	// LivenessPath is probed before resetting the connections of a master
	// that answered unhealthily (--liveness-path); empty: never.
	LivenessPath   string
	HealthStatuses []int  // --health-status
	CAFile         string // --ca-file
	CertFile       string // --cert-file
	KeyFile        string // --key-file
	// Kubeconfig names a kubeconfig whose client certificate (and cluster
	// CA, when it has one) the probes use (--kubeconfig); empty: none.
	Kubeconfig string
	// StateFile is where discovered masters are kept (--state-file);
	// empty: nowhere.
	StateFile string
	// ForgetAfter is how long a discovered master absent from the API and
	// unhealthy stays before it is dropped (--forget-after); 0: never.
	ForgetAfter        time.Duration
	InsecureSkipVerify bool // --insecure-skip-verify

	Interval time.Duration // --interval
	// Timeout bounds one probe (--timeout); 0 means derived from the
	// interval, see EffectiveTimeout.
	Timeout      time.Duration
	Rise         int           // --rise
	Fall         int           // --fall
	HoldDown     time.Duration // --hold-down
	MaxHoldDown  time.Duration // --max-hold-down
	DrainTimeout time.Duration // --drain-timeout
	ResyncPeriod time.Duration // --resync-period
	ProbeReuse   time.Duration // --probe-reuse
	Sentinel     bool          // --sentinel
	ProbeHTTP2   bool          // --probe-http2
	ReadyEvery   time.Duration // --ready-every
	// MetricsAddr is HOST:PORT of /metrics, /healthz, /readyz and /status
	// (--metrics-addr); empty disables them.
	MetricsAddr string
	Once        bool // --once
}

// DefaultVIPFor is the VIP used when --vip is not given: DefaultVIP6 when
// the first master is IPv6, else DefaultVIP, on DefaultPort.
func DefaultVIPFor(masters []netip.AddrPort) netip.AddrPort {
	if len(masters) > 0 && masters[0].Addr().Is6() {
		return netip.AddrPortFrom(netip.MustParseAddr(DefaultVIP6), DefaultPort)
	}
	return netip.AddrPortFrom(netip.MustParseAddr(DefaultVIP), DefaultPort)
}

// Default returns the defaults of every flag, with the default VIP and no
// master.
func Default() Config {
	return Config{
		VIP:            netip.AddrPortFrom(netip.MustParseAddr(DefaultVIP), DefaultPort),
		Mode:           ModeLink,
		Interface:      DefaultInterface,
		Scheduler:      DefaultScheduler,
		HealthScheme:   HTTPS,
		HealthPath:     DefaultHealthPath,
		HealthStatuses: []int{200},
		CAFile:         DefaultCAFile,
		Kubeconfig:     DefaultKubeconfig,
		StateFile:      DefaultStateFile,
		ForgetAfter:    DefaultForgetAfter,
		Interval:       DefaultInterval,
		Rise:           DefaultRise,
		Fall:           DefaultFall,
		HoldDown:       DefaultHoldDown,
		MaxHoldDown:    DefaultMaxHoldDown,
		DrainTimeout:   DefaultDrainTimeout,
		ResyncPeriod:   DefaultResyncPeriod,
		ProbeReuse:     DefaultProbeReuse,
		Sentinel:       true,
		ReadyEvery:     DefaultReadyEvery,
		MetricsAddr:    DefaultMetricsAddr,
	}
}

// EffectiveTimeout is Timeout, or when 0, 80% of the interval capped at
// MaxDefaultTimeout.
func (c Config) EffectiveTimeout() time.Duration {
	if c.Timeout != 0 {
		return c.Timeout
	}
	return min(MaxDefaultTimeout, c.Interval*8/10)
}

// Validate checks every setting before anything is touched; a NodeIP left
// zero is not checked (it is detected later, then checked with
// ValidateNodeIP). Errors name the flag and the value. The files named by
// --ca-file, --cert-file and --key-file are not read.
func (c Config) Validate() error {
	vip := c.VIP
	if !vip.IsValid() || vip.Port() == 0 {
		return fmt.Errorf("--vip %q: want IP[:PORT]", vip)
	}
	if a := vip.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.Zone() != "" {
		return fmt.Errorf("--vip %s: address %s cannot be a virtual IP", vip, a)
	}
	if !slices.Contains(Schedulers, c.Scheduler) {
		return fmt.Errorf("--scheduler %q: want one of %s", c.Scheduler, strings.Join(Schedulers, ", "))
	}
	if len(c.Masters) == 0 {
		return errors.New("--master: at least one master is required")
	}
	seen := map[netip.AddrPort]bool{}
	for _, m := range c.Masters {
		switch {
		case !m.IsValid() || m.Port() == 0:
			return fmt.Errorf("--master %q: want IP[:PORT]", m)
		case m.Addr() == vip.Addr():
			return fmt.Errorf("--master %s: same address as --vip %s", m, vip)
		case m.Addr().Is4() != vip.Addr().Is4():
			return fmt.Errorf("--master %s: address family differs from --vip %s", m, vip)
		case m.Addr().IsUnspecified() || m.Addr().IsLoopback() || m.Addr().IsMulticast() || m.Addr().Zone() != "":
			return fmt.Errorf("--master %s: address %s cannot be a real server", m, m.Addr())
		case seen[m]:
			return fmt.Errorf("--master %s: listed twice", m)
		}
		seen[m] = true
	}
	switch c.Mode {
	case ModeLink:
		if err := checkInterface(c.Interface); err != nil {
			return err
		}
	case ModeRoute:
	default:
		return fmt.Errorf("--mode %q: want %s or %s", c.Mode, ModeLink, ModeRoute)
	}
	if c.NodeIP.IsValid() {
		if err := c.ValidateNodeIP(); err != nil {
			return err
		}
	}
	if err := c.validateTiming(); err != nil {
		return err
	}
	if err := c.validateProbe(); err != nil {
		return err
	}
	if c.MetricsAddr != "" {
		if _, err := ParseMetricsAddr(c.MetricsAddr); err != nil {
			return err
		}
	}
	return nil
}

// ValidateNodeIP checks NodeIP against the VIP.
func (c Config) ValidateNodeIP() error {
	n, vip := c.NodeIP, c.VIP
	switch {
	case !n.IsValid() || n.IsUnspecified() || n.IsMulticast() || n.Zone() != "":
		return fmt.Errorf("--node-ip %q: not a usable unicast address", n)
	case n == vip.Addr():
		return fmt.Errorf("--node-ip %s: equal to --vip", n)
	case n.Is4() != vip.Addr().Is4():
		return fmt.Errorf("--node-ip %s: address family differs from --vip %s", n, vip)
	}
	return nil
}

func (c Config) validateTiming() error {
	timeout := c.EffectiveTimeout()
	switch {
	case c.Rise < 1:
		return fmt.Errorf("--rise %d: want at least 1", c.Rise)
	case c.Fall < 1:
		return fmt.Errorf("--fall %d: want at least 1", c.Fall)
	case c.Interval <= 0:
		return fmt.Errorf("--interval %s: want a positive duration", c.Interval)
	case c.Interval > MaxInterval:
		return fmt.Errorf("--interval %s: want at most %s", c.Interval, MaxInterval)
	case timeout <= 0:
		return fmt.Errorf("--timeout %s: want a positive duration", timeout)
	case timeout >= c.Interval:
		return fmt.Errorf("--timeout %s: must be shorter than --interval %s", timeout, c.Interval)
	case c.ResyncPeriod < MinResyncPeriod:
		return fmt.Errorf("--resync-period %s: want at least %s", c.ResyncPeriod, MinResyncPeriod)
	case c.DrainTimeout < 0:
		return fmt.Errorf("--drain-timeout %s: want 0 or more", c.DrainTimeout)
	case c.HoldDown < 0:
		return fmt.Errorf("--hold-down %s: want 0 or more", c.HoldDown)
	case c.MaxHoldDown < c.HoldDown:
		return fmt.Errorf("--max-hold-down %s: shorter than --hold-down %s", c.MaxHoldDown, c.HoldDown)
	case c.ProbeReuse < 0:
		return fmt.Errorf("--probe-reuse %s: want 0 (a fresh connection per probe) or a positive duration", c.ProbeReuse)
	case c.ForgetAfter < 0:
		return fmt.Errorf("--forget-after %s: want 0 (never forget) or a positive duration", c.ForgetAfter)
	case c.ReadyEvery < 0:
		return fmt.Errorf("--ready-every %s: want 0 (a GET every probe) or a positive duration", c.ReadyEvery)
	}
	return nil
}

func (c Config) validateProbe() error {
	switch c.HealthScheme {
	case HTTPS, HTTP, TCP:
	default:
		return fmt.Errorf("--health-scheme %q: want https, http or tcp", c.HealthScheme)
	}
	if c.HealthScheme != TCP {
		if err := checkHTTPPath("--health-path", c.HealthPath); err != nil {
			return err
		}
	}
	if c.LivenessPath != "" {
		if err := checkHTTPPath("--liveness-path", c.LivenessPath); err != nil {
			return fmt.Errorf("%w (or be empty)", err)
		}
	}
	if len(c.HealthStatuses) == 0 {
		return errors.New("--health-status: at least one status is required")
	}
	for _, s := range c.HealthStatuses {
		if s < 100 || s > 599 {
			return fmt.Errorf("--health-status %d: want an HTTP status, 100 to 599", s)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("--cert-file %q and --key-file %q: give both or neither", c.CertFile, c.KeyFile)
	}
	if c.Kubeconfig != "" && c.CertFile != "" {
		return fmt.Errorf("--kubeconfig %q and --cert-file %q: give one source of the client certificate", c.Kubeconfig, c.CertFile)
	}
	for _, f := range []struct{ flag, v string }{{"--ca-file", c.CAFile}, {"--cert-file", c.CertFile}, {"--key-file", c.KeyFile}, {"--kubeconfig", c.Kubeconfig}, {"--state-file", c.StateFile}} {
		if hasControl(f.v) {
			return fmt.Errorf("%s %q: control characters in a file name", f.flag, f.v)
		}
	}
	if c.HealthScheme == HTTPS && !c.InsecureSkipVerify && c.CAFile == "" {
		return errors.New(`--ca-file "": a CA is required to verify the apiservers (or pass --insecure-skip-verify)`)
	}
	return nil
}

// Warnings are what a valid configuration still deserves a word about.
func (c Config) Warnings() []string {
	var w []string
	if c.HealthScheme == HTTPS && c.InsecureSkipVerify {
		w = append(w, "--insecure-skip-verify: the apiservers' certificates are not verified; anything answering on a master's address counts as that master")
	}
	if c.MetricsAddr != "" {
		if a, err := ParseMetricsAddr(c.MetricsAddr); err == nil && !a.Loopback() {
			w = append(w, fmt.Sprintf("--metrics-addr %s: not a loopback address: /metrics and /status (the masters, their health, the node IP) are served to the network", c.MetricsAddr))
		}
	}
	return w
}

// checkHTTPPath accepts an absolute HTTP path that can go on a request line
// as it is.
func checkHTTPPath(flag, p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%s %q: must start with /", flag, p)
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || r == '#' || r > 0x7e {
			return fmt.Errorf("%s %q: %q cannot be in an HTTP path (no spaces, control characters, # or non-ASCII)", flag, p, r)
		}
	}
	return nil
}

// checkInterface accepts what Linux accepts as a network interface name.
func checkInterface(name string) error {
	bad := name == "" || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == '/' || r == ':' || r >= 0x7f })
	if bad {
		return fmt.Errorf("--interface %q: want a name of 1 to 15 characters without /, :, spaces or control characters", name)
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

// ParseEndpoint parses IP or IP:PORT ([IPv6]:PORT); a missing port is
// DefaultPort. IPv4-mapped IPv6 addresses are unmapped. It is
// ipvs.ParseEndpoint, the one endpoint parser, with the apiserver's port.
func ParseEndpoint(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.AddrPort{}, errors.New("empty address")
	}
	return ipvs.ParseEndpoint(s, DefaultPort)
}

// ParseVIP parses --vip: IP[:PORT].
func ParseVIP(s string) (netip.AddrPort, error) {
	v, err := ParseEndpoint(s)
	if err != nil {
		return v, fmt.Errorf("--vip %q: %w", s, err)
	}
	return v, nil
}

// ParseMasters parses --master values: each IP[:PORT], or several of them
// separated by commas. It is the one parser of --master, used by every
// command that takes it. Duplicates are not checked here (Validate does).
func ParseMasters(values []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, v := range values {
		for m := range strings.SplitSeq(v, ",") {
			a, err := ParseEndpoint(m)
			if err != nil {
				return nil, fmt.Errorf("--master %q: %w", m, err)
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// MetricsAddr is a parsed --metrics-addr.
type MetricsAddr struct {
	// Host is the IP address or "localhost"; empty for every address.
	Host string
	Port uint16
}

// ParseMetricsAddr parses HOST:PORT where HOST is an IP address,
// "localhost" or empty (every address).
func ParseMetricsAddr(s string) (MetricsAddr, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return MetricsAddr{}, fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. %s: %w", s, DefaultMetricsAddr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return MetricsAddr{}, fmt.Errorf("--metrics-addr %q: port %q: want 1 to 65535", s, p)
	}
	if host != "" && host != "localhost" {
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return MetricsAddr{}, fmt.Errorf("--metrics-addr %q: host %q: want an IP address", s, host)
		}
	}
	return MetricsAddr{Host: host, Port: uint16(n)}, nil
}

// Loopback reports whether only this node can reach the address.
func (m MetricsAddr) Loopback() bool {
	if m.Host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(m.Host)
	return err == nil && a.IsLoopback()
}

// Local is where a client on this node reaches the address: the host, or
// 127.0.0.1 when it listens on every address ("", 0.0.0.0) and ::1 for
// "::". "localhost" is 127.0.0.1.
func (m MetricsAddr) Local() netip.AddrPort {
	a, err := netip.ParseAddr(m.Host)
	switch {
	case err != nil || (a.IsUnspecified() && a.Is4()):
		a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case a.IsUnspecified():
		a = netip.IPv6Loopback()
	}
	return netip.AddrPortFrom(a, m.Port)
}

// ValidateForPod checks what a static pod running the watchdog also needs:
// the CA file is mounted from the host, so its path is absolute (and clean),
// and the watchdog must keep running.
func (c Config) ValidateForPod() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.CAFile == "" || !path.IsAbs(c.CAFile) || path.Clean(c.CAFile) != c.CAFile {
		return fmt.Errorf("--ca-file %q: want an absolute, clean path on the host (it is mounted into the pod)", c.CAFile)
	}
	for _, f := range []struct{ flag, v string }{{"--cert-file", c.CertFile}, {"--key-file", c.KeyFile}} {
		if f.v != "" {
			return fmt.Errorf("%s %q: the watchdog's pod mounts no client certificate; leave it out", f.flag, f.v)
		}
	}
	for _, f := range []struct{ flag, v string }{{"--kubeconfig", c.Kubeconfig}, {"--state-file", c.StateFile}} {
		if f.v != "" && (!path.IsAbs(f.v) || path.Clean(f.v) != f.v || f.v == "/") {
			return fmt.Errorf("%s %q: want an absolute, clean path on the host (it is mounted into the pod), or empty", f.flag, f.v)
		}
	}
	if c.Once {
		return errors.New("--once: the watchdog's pod must keep running (a pod that exits is restarted in a loop)")
	}
	if c.MetricsAddr == "" {
		return errors.New(`--metrics-addr "": the kubelet probes the watchdog's /healthz and /readyz there`)
	}
	return nil
}
