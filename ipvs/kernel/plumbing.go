package kernel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

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
//
// For IPv4 it replaces the kernel's own local route in place (same key), so
// it keeps the kernel's protocol. For IPv6 a replace cannot reach the
// kernel's route (metric 0, which a route added over netlink without a
// metric never gets), so vipctl's route is added beside it with protocol
// static, which tells the two apart, and the kernel's is deleted: see
// ensureLocalRoute.
func localRoute(c ipvs.VIPConfig, linkIndex int) *netlink.Route {
	proto := netlink.RouteProtocol(unix.RTPROT_KERNEL)
	if c.VIP.Is6() {
		proto = unix.RTPROT_STATIC
	}
	return &netlink.Route{
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  proto,
		Dst:       hostPrefix(c.VIP),
		Src:       net.IP(c.NodeIP.AsSlice()),
		LinkIndex: linkIndex,
	}
}

// vipRoute is route mode's VIP/32 (VIP/128) route: out of the node IP's
// interface with the node IP as source. IPVS catches the traffic in
// LOCAL_OUT. The scope matters to IPv4 only; IPv6 routes have none.
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
	routes, err := hostRoutes(table, a)
	if err != nil || len(routes) == 0 {
		return nil, err
	}
	return &routes[0], nil
}

// hostRoutes returns the routes in table whose destination is exactly a
// (a/32 or a/128), lowest metric first as the kernel lists them.
func hostRoutes(table int, a netip.Addr) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: table, Dst: hostPrefix(a)}
	routes, err := netlink.RouteListFiltered(family(a), filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("list routes to %s: %w", a, err)
	}
	var out []netlink.Route
	for _, r := range routes {
		if r.Dst != nil {
			ones, bits := r.Dst.Mask.Size()
			if ones == bits {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// linkOf returns the link holding address a.
func linkOf(a netip.Addr) (netlink.Link, error) {
	ad, err := nodeAddr(a)
	if err != nil {
		return nil, err
	}
	l, err := netlink.LinkByIndex(ad.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("link of %s: %w", a, err)
	}
	return l, nil
}

// nodeAddr returns the node's address a.
func nodeAddr(a netip.Addr) (netlink.Addr, error) {
	addrs, err := netlink.AddrList(nil, family(a))
	if err != nil {
		return netlink.Addr{}, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		if x, ok := netip.AddrFromSlice(ad.IP); ok && x.Unmap() == a {
			return ad, nil
		}
	}
	return netlink.Addr{}, fmt.Errorf("node IP %s: not an address of this node", a)
}

// dadWait is how long EnsureVIP waits for an IPv6 node IP's duplicate
// address detection (about a second with the kernel's defaults).
const dadWait = 5 * time.Second

// waitNodeIPSettled waits until the IPv6 node IP has passed duplicate
// address detection: the kernel refuses a tentative address as a route's
// source ("Invalid source address"), and a node that just got its address
// (a boot, a DHCPv6 lease) runs vipctl during DAD. An address that failed
// DAD is an error at once. IPv4 addresses have no DAD.
func waitNodeIPSettled(ctx context.Context, a netip.Addr) error {
	if !a.Is6() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, dadWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ad, err := nodeAddr(a)
		if err != nil {
			return err
		}
		switch {
		case ad.Flags&unix.IFA_F_DADFAILED != 0:
			return fmt.Errorf("node IP %s: failed duplicate address detection: another host has it", a)
		case ad.Flags&unix.IFA_F_TENTATIVE == 0:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node IP %s: still tentative (IPv6 duplicate address detection) after %s: %w", a, dadWait, ctx.Err())
		case <-tick.C:
		}
	}
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
	if err := waitNodeIPSettled(ctx, c.NodeIP); err != nil {
		return nil, err
	}
	if c.Mode == ipvs.ModeRoute {
		return ensureRoute(c)
	}
	return ensureLink(ctx, c)
}

func ensureLink(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
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
		if c.VIP.Is6() {
			// The kernel inserts an IPv6 address's local route from a work
			// queue once the address is up (no DAD here), after AddrAdd
			// returns: wait for it, or it would land after vipctl's fix
			// and win (metric 0) until the next repair.
			if err := waitKernelLocalRoute(ctx, c.VIP); err != nil {
				return changes, err
			}
		}
	}
	if c.VIP.Is6() {
		more, err := ensureLocalRoute6(c, link.Attrs().Index)
		return append(changes, more...), err
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

// ensureLocalRoute6 makes vipctl's local route (source the node IP) the
// only local route to an IPv6 VIP. IPv6 picks a source address for a local
// destination from the local route's preferred source, or else the
// destination itself: with the kernel's route (no source, metric 0) in
// place, clients on the node connect from the VIP, the masters answer to
// an address they have no route to, and every connection through the VIP
// hangs in SYN_RECV. The kernel's route cannot be replaced in place (see
// localRoute), so vipctl's is added first, then the kernel's deleted, so
// that the VIP is never without a local route. The kernel adds its route
// back whenever the address is added again (after a flush, a link down and
// up); the watchdog sees that route event and calls EnsureVIP again.
func ensureLocalRoute6(c ipvs.VIPConfig, linkIndex int) ([]ipvs.Change, error) {
	want := localRoute(c, linkIndex)
	routes, err := hostRoutes(unix.RT_TABLE_LOCAL, c.VIP)
	if err != nil {
		return nil, err
	}
	var changes []ipvs.Change
	have := false
	for _, r := range routes {
		if isOurLocalRoute6(r, c, linkIndex) {
			have = true
		}
	}
	target := "local " + want.Dst.String() + " dev " + c.Interface
	if !have {
		if err := netlink.RouteAdd(want); err != nil && !errors.Is(err, unix.EEXIST) {
			return changes, fmt.Errorf("route %s: add with src %s: %w", target, c.NodeIP, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpAdd, Kind: ipvs.KindRoute, Target: target, Detail: "src " + c.NodeIP.String()})
	}
	for _, r := range routes {
		if isOurLocalRoute6(r, c, linkIndex) || r.Type != unix.RTN_LOCAL {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return changes, fmt.Errorf("route local %s (proto %s, no src %s): delete: %w", r.Dst, r.Protocol, c.NodeIP, err)
		}
		changes = append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindRoute, Target: "local " + r.Dst.String() + " proto " + r.Protocol.String(),
			Detail: "without src " + c.NodeIP.String() + ", it would make the VIP the source"})
	}
	return changes, nil
}

// kernelRouteWait bounds waitKernelLocalRoute.
const kernelRouteWait = 2 * time.Second

// waitKernelLocalRoute waits until the kernel's own local route to the
// IPv6 address a is in the local table; not finding it within
// kernelRouteWait is no error (vipctl's route serves alone then).
func waitKernelLocalRoute(parent context.Context, a netip.Addr) error {
	ctx, cancel := context.WithTimeout(parent, kernelRouteWait)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		routes, err := hostRoutes(unix.RT_TABLE_LOCAL, a)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Protocol == unix.RTPROT_KERNEL && r.Type == unix.RTN_LOCAL {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return parent.Err() // nil when only the wait ran out
		case <-tick.C:
		}
	}
}

func isOurLocalRoute6(r netlink.Route, c ipvs.VIPConfig, linkIndex int) bool {
	return r.Type == unix.RTN_LOCAL && r.LinkIndex == linkIndex && sameIP(r.Src, c.NodeIP) && r.Protocol == unix.RTPROT_STATIC
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
		// IPv6 routes have no scope (the kernel reports universe).
		if r.Protocol != unix.RTPROT_STATIC || r.Gw != nil || (c.VIP.Is4() && r.Scope != netlink.SCOPE_LINK) {
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
	if c.VIP.Is6() {
		// vipctl's IPv6 local route is not the address's own: it outlives
		// the address, and would keep the VIP local, unless deleted.
		routes, err := hostRoutes(unix.RT_TABLE_LOCAL, c.VIP)
		if err != nil {
			return changes, err
		}
		for _, r := range routes {
			if r.LinkIndex != link.Attrs().Index || r.Protocol != unix.RTPROT_STATIC || r.Type != unix.RTN_LOCAL {
				continue
			}
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return changes, fmt.Errorf("route local %s dev %s: delete: %w", r.Dst, c.Interface, err)
			}
			changes = append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindRoute, Target: "local " + r.Dst.String() + " dev " + c.Interface})
		}
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

// IsLocalAddr reports whether a is an address of one of this node's
// interfaces: a master whose address is local is the node's own apiserver.
func IsLocalAddr(ctx context.Context, a netip.Addr) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("list the node's addresses: %w", err)
	}
	for _, x := range addrs {
		if b, ok := netip.AddrFromSlice(x.IP); ok && b.Unmap() == a.Unmap() {
			return true, nil
		}
	}
	return false, nil
}
