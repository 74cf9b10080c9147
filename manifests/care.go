// Package manifests renders the static pod that runs the vipctl watchdog
// (`vipctl care`) on every node and writes it where the kubelet picks it up.
//
// The pod is built from k8s.io/api/core/v1 types. It runs with the host's
// network, as root but not privileged: its only added capability is
// NET_ADMIN, enough to program IPVS, the dummy interface, routes and to reset
// connections over netlink. It cannot load kernel modules or write sysctls
// (/proc/sys is read-only in the container): the installer loads ip_vs and
// friends (and persists them in /etc/modules-load.d) and sets any sysctl
// before the pod starts. /lib/modules is mounted read-only so the watchdog can
// tell a missing module from a built-in one in its error messages.
//
// This package does not import the care package: the care command line is
// described by [Care], a plain struct of the flags the user gave.
package manifests

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMetricsPort is the port of the watchdog's metrics and health
// endpoints (/metrics, /healthz, /readyz) when --metrics-addr is not given.
// No Kubernetes component uses it (kubelet 10248/10250, kube-proxy
// 10249/10256, scheduler 10259, controller-manager 10257, etcd 2379-2381,
// apiserver 6443) and it is outside the NodePort range (30000-32767).
const DefaultMetricsPort = 9282

// DefaultMetricsAddr is where the watchdog serves /metrics, /healthz and
// /readyz when the user gives no --metrics-addr: loopback only, like
// kube-proxy's metrics; the kubelet probes it on 127.0.0.1.
const DefaultMetricsAddr = "127.0.0.1:9282"

// DefaultCAFile is the cluster CA written by kubeadm on masters and workers.
const DefaultCAFile = "/etc/kubernetes/pki/ca.crt"

// Care is the `vipctl care` command line of the static pod. Empty strings and
// zero numbers mean "flag not given": the watchdog's own default applies and
// the flag is left out of the pod's command. Only CAFile and MetricsAddr are
// always written (with DefaultCAFile and DefaultMetricsAddr when empty),
// because the pod's volume and probes must match them.
type Care struct {
	VIP          string        // --vip IP[:PORT], required
	Masters      []string      // --master IP[:PORT], one or more
	Mode         string        // --mode link|route
	Interface    string        // --interface
	NodeIP       string        // --node-ip
	Scheduler    string        // --scheduler
	HealthPath   string        // --health-path
	HealthScheme string        // --health-scheme https|http|tcp
	CAFile       string        // --ca-file
	Interval     time.Duration // --interval
	Timeout      time.Duration // --timeout
	Rise         int           // --rise
	Fall         int           // --fall
	MetricsAddr  string        // --metrics-addr IP:PORT
	// Extra are further `vipctl care` flags, such as --hold-down=5s, passed
	// as they are after the others. They may not repeat a flag modelled above.
	Extra []string
}

// Validate checks the flags the manifest depends on, naming the flag and the
// value on error. The watchdog validates everything again when it starts.
func (c Care) Validate() error {
	if err := checkEndpoint("--vip", c.VIP); err != nil {
		return err
	}
	if len(c.Masters) == 0 {
		return fmt.Errorf("--master: give at least one master address IP[:PORT]")
	}
	seen := make(map[string]bool, len(c.Masters))
	for _, m := range c.Masters {
		if err := checkEndpoint("--master", m); err != nil {
			return err
		}
		if seen[m] {
			return fmt.Errorf("--master %q: given twice", m)
		}
		seen[m] = true
	}
	if c.Mode != "" && c.Mode != "link" && c.Mode != "route" {
		return fmt.Errorf("--mode %q: want link or route", c.Mode)
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return fmt.Errorf("--node-ip %q: not an IP address", c.NodeIP)
	}
	switch c.HealthScheme {
	case "", "https", "http", "tcp":
	default:
		return fmt.Errorf("--health-scheme %q: want https, http or tcp", c.HealthScheme)
	}
	if c.HealthPath != "" && c.HealthPath[0] != '/' {
		return fmt.Errorf("--health-path %q: want a path starting with /", c.HealthPath)
	}
	if c.CAFile != "" && c.CAFile[0] != '/' {
		return fmt.Errorf("--ca-file %q: want an absolute path on the host", c.CAFile)
	}
	if c.Interval < 0 {
		return fmt.Errorf("--interval %s: must be positive", c.Interval)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("--timeout %s: must be positive", c.Timeout)
	}
	if c.Rise < 0 {
		return fmt.Errorf("--rise %d: must be positive", c.Rise)
	}
	if c.Fall < 0 {
		return fmt.Errorf("--fall %d: must be positive", c.Fall)
	}
	if c.MetricsAddr != "" {
		if _, _, err := splitMetricsAddr(c.MetricsAddr); err != nil {
			return err
		}
	}
	// The flags of Care's fields, plus --log-format which the pod sets.
	modelled := []string{"vip", "master", "mode", "interface", "node-ip", "scheduler", "health-path",
		"health-scheme", "ca-file", "interval", "timeout", "rise", "fall", "metrics-addr", "log-format"}
	for _, e := range c.Extra {
		name, _, _ := strings.Cut(strings.TrimLeft(e, "-"), "=")
		if !strings.HasPrefix(e, "--") || name == "" {
			return fmt.Errorf("extra care argument %q: want --flag=value", e)
		}
		if slices.Contains(modelled, name) {
			return fmt.Errorf("extra care argument %q: use the --%s flag itself", e, name)
		}
	}
	return nil
}

// Args returns the arguments after `vipctl care`, in a fixed order, as
// --flag=value items, ending with --log-format=json.
func (c Care) Args() []string {
	args := []string{"--vip=" + c.VIP}
	for _, m := range c.Masters {
		args = append(args, "--master="+m)
	}
	str := func(flag, v string) {
		if v != "" {
			args = append(args, "--"+flag+"="+v)
		}
	}
	dur := func(flag string, v time.Duration) {
		if v != 0 {
			args = append(args, "--"+flag+"="+v.String())
		}
	}
	num := func(flag string, v int) {
		if v != 0 {
			args = append(args, "--"+flag+"="+strconv.Itoa(v))
		}
	}
	str("mode", c.Mode)
	str("interface", c.Interface)
	str("node-ip", c.NodeIP)
	str("scheduler", c.Scheduler)
	str("health-path", c.HealthPath)
	str("health-scheme", c.HealthScheme)
	str("ca-file", c.caFile())
	dur("interval", c.Interval)
	dur("timeout", c.Timeout)
	num("rise", c.Rise)
	num("fall", c.Fall)
	str("metrics-addr", c.metricsAddr())
	args = append(args, c.Extra...)
	return append(args, "--log-format=json")
}

func (c Care) caFile() string {
	if c.CAFile == "" {
		return DefaultCAFile
	}
	return c.CAFile
}

func (c Care) metricsAddr() string {
	if c.MetricsAddr == "" {
		return DefaultMetricsAddr
	}
	return c.MetricsAddr
}

// probeTarget returns where the kubelet reaches the health endpoints: the
// metrics address's host, or 127.0.0.1 when it listens on every address.
func (c Care) probeTarget() (host string, port int, err error) {
	host, port, err = splitMetricsAddr(c.metricsAddr())
	if err != nil {
		return "", 0, err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return host, port, nil
}

func splitMetricsAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("--metrics-addr %q: want IP:PORT, e.g. %s: %w", addr, DefaultMetricsAddr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("--metrics-addr %q: port %q is not in 1-65535", addr, p)
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("--metrics-addr %q: host %q is not an IP address", addr, host)
	}
	return host, port, nil
}

// checkEndpoint accepts IP or IP:PORT ([IPv6]:PORT), like `vipctl care`.
func checkEndpoint(flag, v string) error {
	if _, err := netip.ParseAddr(strings.Trim(v, "[]")); err == nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		return fmt.Errorf("%s %q: want IP or IP:PORT, e.g. 10.103.97.2:6443", flag, v)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%s %q: port 0", flag, v)
	}
	return nil
}
