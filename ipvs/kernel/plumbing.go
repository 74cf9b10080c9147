package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vipctl/vipctl/ipvs"
)

func hostPrefix(a netip.Addr) *net.IPNet {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)}
}

func family(a netip.Addr) int {
	if a.Is6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// localRoute is the VIP's route in the local table with its source set to
// the node IP, so local clients connect from the node IP and masters can
// answer without a route back to the VIP.
func localRoute(c ipvs.VIPConfig, linkIndex int) *netlink.Route {
	return &netlink.Route{
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  unix.RTPROT_KERNEL,
		Dst:       hostPrefix(c.VIP),
		Src:       net.IP(c.NodeIP.AsSlice()),
		LinkIndex: linkIndex,
	}
}

// vipRoute is route mode's VIP/32 route: out of the node IP's interface
// with the node IP as source. IPVS catches the traffic in LOCAL_OUT.
func vipRoute(c ipvs.VIPConfig, linkIndex int) *netlink.Route {
	return &netlink.Route{
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.SCOPE_LINK,
		Protocol:  unix.RTPROT_STATIC,
		Dst:       hostPrefix(c.VIP),
		Src:       net.IP(c.NodeIP.AsSlice()),
		LinkIndex: linkIndex,
	}
}

// findRoute returns the route in table with destination dst, if any.
func findRoute(table int, a netip.Addr) (*netlink.Route, error) {
	filter := &netlink.Route{Table: table, Dst: hostPrefix(a)}
	routes, err := netlink.RouteListFiltered(family(a), filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", a, err)
	}
	for i := range routes {
		if routes[i].Dst != nil {
			ones, bits := routes[i].Dst.Mask.Size()
			if ones == bits {
				return &routes[i], nil
			}
		}
	}
	return nil, nil
}

// linkOf returns the link holding address a.
func linkOf(a netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, family(a))
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		if x, ok := netip.AddrFromSlice(ad.IP); ok && x.Unmap() == a {
			l, err := netlink.LinkByIndex(ad.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("link of %s: %w", a, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("node IP %s: not an address of this node", a)
}

func sameIP(a net.IP, b netip.Addr) bool {
	x, ok := netip.AddrFromSlice(a)
	return ok && x.Unmap() == b
}

// EnsureVIP implements ipvs.Plumbing. It creates or repairs, in link mode, the
// dummy interface (up), VIP/32 on it and the VIP's local route with source
// the node IP; in route mode the VIP/32 route. Only what is missing or wrong
// is changed.
func (k *Kernel) EnsureVIP(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.Mode == ipvs.ModeRoute {
		return ensureRoute(c)
	}
	return ensureLink(c)
}

func ensureLink(c ipvs.VIPConfig) ([]ipvs.Change, error) {
	var changes []ipvs.Change
	link, err := netlink.LinkByName(c.Interface)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: c.Interface}}
		if err := netlink.LinkAdd(d); err != nil {
			return changes, fmt.Errorf("interface %s: create dummy: %w", c.Interface, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpAdd, Kind: ipvs.KindInterface, Target: c.Interface, Detail: "dummy"})
		if link, err = netlink.LinkByName(c.Interface); err != nil {
			return changes, fmt.Errorf("interface %s: %w", c.Interface, err)
		}
	case err != nil:
		return nil, fmt.Errorf("interface %s: %w", c.Interface, err)
	case link.Type() != "dummy":
		return nil, fmt.Errorf("interface %s: exists and is a %s, not a dummy interface vipctl can own", c.Interface, link.Type())
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return changes, fmt.Errorf("interface %s: set up: %w", c.Interface, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpUpdate, Kind: ipvs.KindInterface, Target: c.Interface, Detail: "up"})
	}
	addrs, err := netlink.AddrList(link, family(c.VIP))
	if err != nil {
		return changes, fmt.Errorf("interface %s: list addresses: %w", c.Interface, err)
	}
	has := false
	for _, a := range addrs {
		ones, bits := a.Mask.Size()
		if sameIP(a.IP, c.VIP) && ones == bits {
			has = true
		}
	}
	if !has {
		addr := &netlink.Addr{IPNet: hostPrefix(c.VIP)}
		if c.VIP.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return changes, fmt.Errorf("interface %s: add address %s: %w", c.Interface, addr.IPNet, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpAdd, Kind: ipvs.KindAddress, Target: hostPrefix(c.VIP).String() + " dev " + c.Interface})
	}
	r, err := findRoute(unix.RT_TABLE_LOCAL, c.VIP)
	if err != nil {
		return changes, err
	}
	if r == nil || !sameIP(r.Src, c.NodeIP) || r.LinkIndex != link.Attrs().Index {
		want := localRoute(c, link.Attrs().Index)
		if err := netlink.RouteReplace(want); err != nil {
			return changes, fmt.Errorf("route local %s: set src %s: %w", want.Dst, c.NodeIP, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpUpdate, Kind: ipvs.KindRoute, Target: "local " + want.Dst.String() + " dev " + c.Interface, Detail: "src " + c.NodeIP.String()})
	}
	return changes, nil
}

func ensureRoute(c ipvs.VIPConfig) ([]ipvs.Change, error) {
	link, err := linkOf(c.NodeIP)
	if err != nil {
		return nil, err
	}
	r, err := findRoute(unix.RT_TABLE_MAIN, c.VIP)
	if err != nil {
		return nil, err
	}
	if r != nil && sameIP(r.Src, c.NodeIP) && r.LinkIndex == link.Attrs().Index && r.Gw == nil {
		return nil, nil
	}
	want := vipRoute(c, link.Attrs().Index)
	if err := netlink.RouteReplace(want); err != nil {
		return nil, fmt.Errorf("route %s dev %s src %s: %w", want.Dst, link.Attrs().Name, c.NodeIP, err)
	}
	op := ipvs.OpAdd
	if r != nil {
		op = ipvs.OpUpdate
	}
	return []ipvs.Change{{Op: op, Kind: ipvs.KindRoute, Target: want.Dst.String() + " dev " + link.Attrs().Name, Detail: "src " + c.NodeIP.String()}}, nil
}

// RemoveVIP implements ipvs.Plumbing. In link mode it removes the VIP address
// and deletes the dummy interface when no other address remains on it; in
// route mode it deletes the VIP/32 route if it is vipctl's (source the node
// IP). Nothing else is touched; removing what is absent is not an error.
func (k *Kernel) RemoveVIP(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.Mode == ipvs.ModeRoute {
		r, err := findRoute(unix.RT_TABLE_MAIN, c.VIP)
		if err != nil || r == nil {
			return nil, err
		}
		if r.Protocol != unix.RTPROT_STATIC || r.Gw != nil || r.Scope != netlink.SCOPE_LINK {
			return nil, fmt.Errorf("route %s: not vipctl's (proto %d, via %s, scope %s): left in place", r.Dst, r.Protocol, r.Gw, r.Scope)
		}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("route %s: delete: %w", r.Dst, err)
		}
		return []ipvs.Change{{Op: ipvs.OpDelete, Kind: ipvs.KindRoute, Target: r.Dst.String()}}, nil
	}
	link, err := netlink.LinkByName(c.Interface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", c.Interface, err)
	}
	if link.Type() != "dummy" {
		return nil, fmt.Errorf("interface %s: is a %s, not vipctl's dummy: left in place", c.Interface, link.Type())
	}
	var changes []ipvs.Change
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("interface %s: list addresses: %w", c.Interface, err)
	}
	others := 0
	for _, a := range addrs {
		if c.VIP.IsValid() && sameIP(a.IP, c.VIP) {
			if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return changes, fmt.Errorf("interface %s: delete address %s: %w", c.Interface, a.IPNet, err)
			}
			changes = append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindAddress, Target: a.IPNet.String() + " dev " + c.Interface})
			continue
		}
		if a.IP.IsLinkLocalUnicast() {
			continue // the kernel's own IPv6 link-local address
		}
		others++
	}
	if others > 0 {
		k.log.Warn("interface keeps other addresses: not deleted", zapString("interface", c.Interface))
		return changes, nil
	}
	if err := netlink.LinkDel(link); err != nil {
		return changes, fmt.Errorf("interface %s: delete: %w", c.Interface, err)
	}
	return append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindInterface, Target: c.Interface}), nil
}

// DetectNodeIP returns the source address the kernel picks to reach to:
// the node IP as the masters see it.
func DetectNodeIP(ctx context.Context, to netip.Addr) (netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return netip.Addr{}, err
	}
	routes, err := netlink.RouteGet(net.IP(to.AsSlice()))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("detect node IP: route to %s: %w", to, err)
	}
	for _, r := range routes {
		if a, ok := netip.AddrFromSlice(r.Src); ok && a.IsValid() && !a.IsUnspecified() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("detect node IP: the route to %s has no source address; pass --node-ip", to)
}
