// Package care is vipctl's watchdog: it health-checks every master's
// kube-apiserver and keeps the node's IPVS virtual server (and the VIP
// plumbing behind it) in line with the result, repairing anything that
// changes behind its back.
//
// The decisions live in package care/health (pure, table-tested), the probes
// in care/probe; this package runs the loop: it probes each master on its
// own schedule, feeds the outcomes to the decision core, reconciles the
// kernel on every decision, on every netlink event, every interval and on a
// cheap poll every resync period, and serves metrics, /healthz, /readyz and
// /status. It talks to the kernel only through the small interfaces below,
// which *kernel.Kernel satisfies in production and ipvstest.Memory in tests.
package care

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/ipvs"
)

// Dataplane is the IPVS table the watchdog converges.
type Dataplane interface {
	Apply(ctx context.Context, d ipvs.Desired) ([]ipvs.Change, error)
	Get(ctx context.Context, vip netip.AddrPort) (ipvs.State, error)
}

// Presence is what a Dataplane may also offer: a cheap check that a virtual
// server exists, and its scheduler. The resync poll then asks it instead of
// reading the whole service, and reconciles only when the answer is wrong.
type Presence interface {
	Present(ctx context.Context, vip netip.AddrPort) (scheduler string, ok bool, err error)
}

// Plumbing makes the VIP reachable for local clients.
type Plumbing interface {
	EnsureVIP(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error)
}

// ConnCloser resets the local connections IPVS forwards to a real server.
type ConnCloser interface {
	CloseConnections(ctx context.Context, vip, realServer netip.AddrPort) (int, error)
}

// EventSource reports changes of links, addresses and routes.
type EventSource interface {
	Watch(ctx context.Context) (<-chan struct{}, error)
}

// Prober checks one master once.
type Prober interface {
	Probe(ctx context.Context, target netip.AddrPort) probe.Result
}

// Sentinel holds an idle connection to a master and returns when it ends
// (see probe.Prober.Hold).
type Sentinel interface {
	Hold(ctx context.Context, target netip.AddrPort, idle func()) (established bool, err error)
}

// Defaults of the `vipctl care` flags.
const (
	DefaultHealthPath = "/readyz"
	// LivenessPath is what --liveness-path is typically set to: probed
	// before resetting a master's connections (see Deps.Liveness). Off by
	// default, see docs/care.md.
	LivenessPath        = "/livez"
	DefaultCAFile       = "/etc/kubernetes/pki/ca.crt"
	DefaultMetricsAddr  = "127.0.0.1:9282"
	DefaultResyncPeriod = 100 * time.Millisecond
	// DefaultProbeReuse is how long a probe connection that answered
	// healthy carries the next probes of its master: ten probes at the
	// default interval share one TCP and TLS handshake, which is most of a
	// probe's cost, while a fresh connection (and certificate check) still
	// happens every 10 s. See probe.Config.ReuseFor.
	DefaultProbeReuse = 10 * time.Second
	// MinResyncPeriod keeps the kernel poll from becoming a busy loop.
	MinResyncPeriod = 10 * time.Millisecond
)

// Config is the watchdog's validated configuration. Validate names the
// `vipctl care` flag behind each field.
type Config struct {
	// Service is the virtual service (--vip, --scheduler).
	Service ipvs.Service
	// Masters are the real servers to health-check (--master), in order.
	Masters []netip.AddrPort
	// VIP is the plumbing (--mode, --interface, --node-ip).
	VIP ipvs.VIPConfig
	// Health tunes the decisions (--rise, --fall, --interval,
	// --hold-down, --max-hold-down, --drain-timeout).
	Health health.Config
	// Timeout bounds one probe (--timeout); it must be shorter than the
	// interval.
	Timeout time.Duration
	// ResyncPeriod is how often the kernel's service is polled and repaired
	// (--resync-period): a flush of the IPVS table emits no event.
	ResyncPeriod time.Duration
	// Version is reported by /status.
	Version string
}

// Validate checks c before anything is touched. Errors name the flag and
// the value.
func (c Config) Validate() error {
	vip := c.Service.VIP
	if !vip.IsValid() || vip.Port() == 0 {
		return fmt.Errorf("--vip %q: want IP[:PORT]", vip)
	}
	if a := vip.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.Zone() != "" {
		return fmt.Errorf("--vip %s: address %s cannot be a virtual IP", vip, a)
	}
	if !slices.Contains(ipvs.Schedulers, c.Service.Scheduler) {
		return fmt.Errorf("--scheduler %q: want one of %s", c.Service.Scheduler, strings.Join(ipvs.Schedulers, ", "))
	}
	if len(c.Masters) == 0 {
		return fmt.Errorf("--master: at least one master is required")
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
		case m.Addr().IsUnspecified() || m.Addr().IsLoopback() || m.Addr().IsMulticast():
			return fmt.Errorf("--master %s: address %s cannot be a real server", m, m.Addr())
		case seen[m]:
			return fmt.Errorf("--master %s: listed twice", m)
		}
		seen[m] = true
	}
	h := c.Health
	switch {
	case h.Rise < 1:
		return fmt.Errorf("--rise %d: want at least 1", h.Rise)
	case h.Fall < 1:
		return fmt.Errorf("--fall %d: want at least 1", h.Fall)
	case h.Interval <= 0:
		return fmt.Errorf("--interval %s: want a positive duration", h.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout %s: want a positive duration", c.Timeout)
	case c.Timeout >= h.Interval:
		return fmt.Errorf("--timeout %s: must be shorter than --interval %s", c.Timeout, h.Interval)
	case c.ResyncPeriod < MinResyncPeriod:
		return fmt.Errorf("--resync-period %s: want at least %s", c.ResyncPeriod, MinResyncPeriod)
	case h.DrainTimeout < 0:
		return fmt.Errorf("--drain-timeout %s: want 0 or more", h.DrainTimeout)
	case h.HoldDown < 0:
		return fmt.Errorf("--hold-down %s: want 0 or more", h.HoldDown)
	case h.MaxHoldDown < h.HoldDown:
		return fmt.Errorf("--max-hold-down %s: shorter than --hold-down %s", h.MaxHoldDown, h.HoldDown)
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("health settings: %w", err)
	}
	switch c.VIP.Mode {
	case ipvs.ModeLink:
		if c.VIP.Interface == "" || len(c.VIP.Interface) > 15 || strings.ContainsAny(c.VIP.Interface, "/ \t") {
			return fmt.Errorf("--interface %q: want a name of 1 to 15 characters without / or spaces", c.VIP.Interface)
		}
	case ipvs.ModeRoute:
	default:
		return fmt.Errorf("--mode %q: want %s or %s", c.VIP.Mode, ipvs.ModeLink, ipvs.ModeRoute)
	}
	if c.VIP.VIP != vip.Addr() {
		return fmt.Errorf("--vip %s: differs from the plumbing's VIP %s", vip, c.VIP.VIP)
	}
	n := c.VIP.NodeIP
	switch {
	case !n.IsValid() || n.IsUnspecified() || n.IsMulticast():
		return fmt.Errorf("--node-ip %q: not a usable unicast address", n)
	case n == vip.Addr():
		return fmt.Errorf("--node-ip %s: equal to --vip", n)
	case n.Is4() != vip.Addr().Is4():
		return fmt.Errorf("--node-ip %s: address family differs from --vip %s", n, vip)
	}
	if err := c.VIP.Validate(); err != nil {
		return fmt.Errorf("VIP plumbing: %w", err)
	}
	d := ipvs.Desired{Service: c.Service}
	for _, m := range c.Masters {
		d.RealServers = append(d.RealServers, ipvs.RealServer{Addr: m, Weight: c.Health.Weight})
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("virtual service: %w", err)
	}
	return nil
}
