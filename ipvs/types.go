// Package ipvs owns the kernel state behind vipctl's virtual IP: the IPVS
// virtual service and its real servers, and the plumbing that makes the VIP
// reachable for local clients (a dummy interface or a route).
//
// The API is declarative: callers describe the desired service and real
// servers, and Apply makes the kernel match with the fewest changes, never
// deleting and re-creating what is already right. Table and Plumbing are the
// interfaces other packages depend on; package ipvs/kernel implements them on
// the running kernel and package ipvs/ipvstest in memory for tests. This
// package itself never talks to the kernel.
package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is the transport protocol of a virtual service.
type Protocol string

// ProtocolTCP is the only protocol vipctl balances (the Kubernetes API).
const ProtocolTCP Protocol = "tcp"

// Schedulers lists the IPVS schedulers vipctl accepts.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}

// DefaultScheduler is round robin, as kube-proxy and lvscare use.
const DefaultScheduler = "rr"

// DefaultWeight is the weight given to a healthy real server.
const DefaultWeight = 1

// On a master the virtual server prefers the node's own apiserver (a real
// server whose address is local): MasterScheduler with LocalWeight for it
// and DefaultWeight for the others. wrr then sends LocalWeight new
// connections in a row to the local apiserver for each one to every other
// (with two others, 99.98 % local), spreads them over the others when the
// local one is at weight 0, and needs only the ip_vs_wrr module that
// every node loads (proven on the real kernel, both VIP modes, by the VM
// scenario TestMasterLocalRealServerBothModes; docs/join.md).
const (
	MasterScheduler = "wrr"
	LocalWeight     = 10000
)

// ErrNotFound is returned when the virtual service does not exist.
var ErrNotFound = errors.New("not found")

// Service is a virtual service: the VIP and port clients connect to.
type Service struct {
	VIP       netip.AddrPort `json:"vip"`
	Protocol  Protocol       `json:"protocol"`
	Scheduler string         `json:"scheduler"`
}

// String names the service the way error messages do: "10.103.97.2:6443".
func (s Service) String() string { return s.VIP.String() }

// RealServer is one backend of a virtual service. Forwarding is always
// masquerade (NAT), which works across subnets with no change on the masters.
type RealServer struct {
	Addr   netip.AddrPort `json:"address"`
	Weight int            `json:"weight"`
}

// Desired is the state Apply converges the kernel to.
type Desired struct {
	Service     Service      `json:"service"`
	RealServers []RealServer `json:"realServers"`
}

// RealServerStatus is a real server as the kernel reports it.
type RealServerStatus struct {
	RealServer
	ActiveConns   int `json:"activeConns"`
	InactiveConns int `json:"inactiveConns"`
}

// State is a virtual service as the kernel reports it.
type State struct {
	Service     Service            `json:"service"`
	RealServers []RealServerStatus `json:"realServers"`
}

// Op is what a Change did.
type Op string

// The operations Apply, Delete and the VIP plumbing report.
const (
	OpAdd    Op = "add"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Kind is what a Change changed.
type Kind string

// The kinds of things Apply, Delete and the VIP plumbing change.
const (
	KindVirtualServer Kind = "virtual server"
	KindRealServer    Kind = "real server"
	KindInterface     Kind = "interface"
	KindAddress       Kind = "address"
	KindRoute         Kind = "route"
)

// Change is one modification made to the kernel.
type Change struct {
	Op     Op     `json:"op"`
	Kind   Kind   `json:"kind"`
	Target string `json:"target"` // what was changed, e.g. "10.103.97.2:6443 -> 192.0.2.11:6443"
	Detail string `json:"detail,omitempty"`
}

func (c Change) String() string {
	s := fmt.Sprintf("%s %s %s", c.Op, c.Kind, c.Target)
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// Table manages IPVS virtual services.
type Table interface {
	// Apply makes the kernel's service for d.Service.VIP match d with the
	// fewest changes and reports them; an empty result means nothing changed.
	Apply(ctx context.Context, d Desired) ([]Change, error)
	// Get returns the service at vip, or an error wrapping ErrNotFound.
	Get(ctx context.Context, vip netip.AddrPort) (State, error)
	// Delete removes the service at vip and its real servers. Deleting a
	// service that does not exist is not an error and reports no change.
	Delete(ctx context.Context, vip netip.AddrPort) ([]Change, error)
}

// Validate checks d before anything is touched. Errors name the field and
// the value.
func (d Desired) Validate() error {
	if err := validateEndpoint("virtual server", d.Service.VIP); err != nil {
		return err
	}
	if d.Service.Protocol != ProtocolTCP {
		return fmt.Errorf("virtual server %s: protocol %q: only %q is supported", d.Service, d.Service.Protocol, ProtocolTCP)
	}
	if !slices.Contains(Schedulers, d.Service.Scheduler) {
		return fmt.Errorf("virtual server %s: scheduler %q: want one of %s", d.Service, d.Service.Scheduler, strings.Join(Schedulers, ", "))
	}
	seen := map[netip.AddrPort]bool{}
	for _, rs := range d.RealServers {
		if err := validateEndpoint("real server", rs.Addr); err != nil {
			return err
		}
		if rs.Addr.Addr().Is4() != d.Service.VIP.Addr().Is4() {
			return fmt.Errorf("real server %s: address family differs from virtual server %s", rs.Addr, d.Service)
		}
		if rs.Addr.Addr() == d.Service.VIP.Addr() {
			return fmt.Errorf("real server %s: same address as the virtual server %s", rs.Addr, d.Service)
		}
		if seen[rs.Addr] {
			return fmt.Errorf("real server %s: listed twice", rs.Addr)
		}
		seen[rs.Addr] = true
		if rs.Weight < 0 || rs.Weight > 65535 {
			return fmt.Errorf("real server %s: weight %d: want 0 to 65535", rs.Addr, rs.Weight)
		}
	}
	return nil
}

func validateEndpoint(kind string, ap netip.AddrPort) error {
	if !ap.IsValid() {
		return fmt.Errorf("%s %s: invalid address", kind, ap)
	}
	a := ap.Addr()
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return fmt.Errorf("%s %s: address %s cannot be used", kind, ap, a)
	}
	if a.Zone() != "" {
		return fmt.Errorf("%s %s: zoned addresses are not supported", kind, ap)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%s %s: port 0 is not allowed", kind, ap)
	}
	return nil
}
