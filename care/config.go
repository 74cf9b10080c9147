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
	"time"

	"github.com/vipctl/vipctl/care/careconfig"
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

// FreshProber is a Prober that can also probe on a new connection, as a
// new client connects. The watchdog probes a master that may be flapping
// that way when its Prober offers it (probe.Prober does): a probe on a
// kept connection does not see a link that flaps every few hundred
// milliseconds, which new clients meet as lost connection attempts.
type FreshProber interface {
	Prober
	ProbeFresh(ctx context.Context, target netip.AddrPort) probe.Result
}

// Sentinel holds an idle connection to a master and returns when it ends
// (see probe.Prober.Hold).
type Sentinel interface {
	Hold(ctx context.Context, target netip.AddrPort, idle func()) (established bool, err error)
}

// Config is the watchdog loop's configuration, in the types it acts with.
// FromConfig derives it from the one configuration of the watchdog,
// careconfig.Config; Validate checks it with careconfig's rules and names
// the `vipctl care` flag behind each field.
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
	// ForgetAfter is how long a discovered master absent from the API and
	// unhealthy is kept (--forget-after); 0: forever.
	ForgetAfter time.Duration
	// Version is reported by /status.
	Version string
}

// FromConfig turns the watchdog's configuration, with its node IP known,
// into the loop's: the IPVS service, the VIP plumbing and the decision
// core's settings. version is reported by /status.
func FromConfig(c careconfig.Config, version string) (Config, error) {
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if err := c.ValidateNodeIP(); err != nil {
		return Config{}, err
	}
	h := health.DefaultConfig()
	h.Rise, h.Fall, h.Interval = c.Rise, c.Fall, c.Interval
	h.FastRetry = min(h.FastRetry, max(c.Interval/2, time.Millisecond))
	h.HoldDown, h.MaxHoldDown, h.DrainTimeout = c.HoldDown, c.MaxHoldDown, c.DrainTimeout
	cfg := Config{
		Service:      ipvs.Service{VIP: c.VIP, Protocol: ipvs.ProtocolTCP, Scheduler: c.Scheduler},
		Masters:      slices.Clone(c.Masters),
		VIP:          ipvs.VIPConfig{Mode: ipvs.Mode(c.Mode), Interface: c.Interface, VIP: c.VIP.Addr(), NodeIP: c.NodeIP},
		Health:       h,
		Timeout:      c.EffectiveTimeout(),
		ResyncPeriod: c.ResyncPeriod,
		ForgetAfter:  c.ForgetAfter,
		Version:      version,
	}
	return cfg, cfg.Validate()
}

// flags is c as the `vipctl care` flags it stands for, so that the rules
// of package careconfig check it.
func (c Config) flags() careconfig.Config {
	f := careconfig.Default()
	f.VIP, f.Masters, f.Scheduler = c.Service.VIP, c.Masters, c.Service.Scheduler
	f.Mode, f.Interface, f.NodeIP = careconfig.Mode(c.VIP.Mode), c.VIP.Interface, c.VIP.NodeIP
	f.Interval, f.Timeout, f.Rise, f.Fall = c.Health.Interval, c.Timeout, c.Health.Rise, c.Health.Fall
	f.HoldDown, f.MaxHoldDown, f.DrainTimeout = c.Health.HoldDown, c.Health.MaxHoldDown, c.Health.DrainTimeout
	f.ResyncPeriod, f.ForgetAfter = c.ResyncPeriod, c.ForgetAfter
	return f
}

// Validate checks c before anything is touched, with the rules of the
// `vipctl care` flags (package careconfig), so errors name the flag and the
// value; the node IP is required.
func (c Config) Validate() error {
	f := c.flags()
	if c.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: want a positive duration", c.Timeout)
	}
	if err := f.Validate(); err != nil {
		return err
	}
	if err := f.ValidateNodeIP(); err != nil {
		return err
	}
	if err := c.Health.Validate(); err != nil {
		return fmt.Errorf("health settings: %w", err)
	}
	if c.VIP.VIP != c.Service.VIP.Addr() {
		return fmt.Errorf("--vip %s: differs from the plumbing's VIP %s", c.Service.VIP, c.VIP.VIP)
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
