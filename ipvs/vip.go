package ipvs

import (
	"context"
	"fmt"
	"net/netip"
)

// Mode is how the VIP is made reachable for clients on the node.
type Mode string

const (
	// ModeLink binds VIP/32 to a dummy interface and rewrites the VIP's
	// local route so that its source address is the node IP (without that,
	// backends answer to the VIP and every connect times out).
	ModeLink Mode = "link"
	// ModeRoute adds no local address: a VIP/32 route via the node IP lets
	// IPVS catch locally generated traffic (lvscare's route mode).
	ModeRoute Mode = "route"
)

// ErrRouteModeLocal explains why a master cannot use ModeRoute: its own
// apiserver is a local real server, and in route mode no connection
// reaches a local real server (measured on the real kernel, both
// families: VM e2e TestMasterLocalRealServerBothModes).
const ErrRouteModeLocal = "a master's own apiserver is a local real server, which IPVS does not reach in route mode (measured on the real kernel, see docs/join.md): use --mode link on a master"

// DefaultInterface is the dummy interface vipctl creates in link mode.
const DefaultInterface = "vipctl0"

// VIPConfig describes the VIP plumbing on this node.
type VIPConfig struct {
	Mode      Mode       `json:"mode"`
	Interface string     `json:"interface"`
	VIP       netip.Addr `json:"vip"`
	NodeIP    netip.Addr `json:"nodeIP"`
}

// Validate checks c before anything is touched.
func (c VIPConfig) Validate() error {
	switch c.Mode {
	case ModeLink, ModeRoute:
	default:
		return fmt.Errorf("mode %q: want %q or %q", c.Mode, ModeLink, ModeRoute)
	}
	if c.Mode == ModeLink {
		if c.Interface == "" || len(c.Interface) > 15 {
			return fmt.Errorf("interface %q: want a name of 1 to 15 characters", c.Interface)
		}
	}
	if !c.VIP.IsValid() || c.VIP.IsUnspecified() || c.VIP.IsLoopback() || c.VIP.IsMulticast() {
		return fmt.Errorf("vip %q: not a usable unicast address", c.VIP)
	}
	if !c.NodeIP.IsValid() || c.NodeIP.IsUnspecified() || c.NodeIP.IsMulticast() {
		return fmt.Errorf("node IP %q: not a usable unicast address", c.NodeIP)
	}
	if c.NodeIP == c.VIP {
		return fmt.Errorf("node IP %s: equal to the vip", c.NodeIP)
	}
	if c.NodeIP.Is4() != c.VIP.Is4() {
		return fmt.Errorf("node IP %s: address family differs from vip %s", c.NodeIP, c.VIP)
	}
	return nil
}

// Plumbing makes the VIP reachable for local clients.
type Plumbing interface {
	// EnsureVIP creates or repairs the interface, address and route for c
	// and reports what it changed; nothing when all is in place.
	EnsureVIP(ctx context.Context, c VIPConfig) ([]Change, error)
	// RemoveVIP removes exactly what EnsureVIP creates.
	RemoveVIP(ctx context.Context, c VIPConfig) ([]Change, error)
	// SnapshotVIP reads what EnsureVIP may change for c (the interface,
	// its state, the VIP address and route) and returns a function that
	// puts exactly that back: what EnsureVIP added goes, what it replaced
	// returns. It changes nothing itself.
	SnapshotVIP(ctx context.Context, c VIPConfig) (restore func(context.Context) error, err error)
}

// ConnCloser resets the established local connections that IPVS forwards
// from a virtual service to one real server, so clients reconnect elsewhere
// at once instead of hanging.
type ConnCloser interface {
	CloseConnections(ctx context.Context, vip, realServer netip.AddrPort) (int, error)
}
