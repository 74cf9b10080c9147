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

// SnapshotVIP implements ipvs.Plumbing. In link mode it reads whether the
// interface exists, whether it is up, whether the VIP is on it and the VIP's
// local route; in route mode the VIP/32 route. The function it returns puts
// that back: an interface it did not find is deleted, an address it did not
// find is removed, a route is restored as found (or deleted when there was
// none) and an interface found down is set down again.
func (k *Kernel) SnapshotVIP(ctx context.Context, c ipvs.VIPConfig) (func(context.Context) error, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.Mode == ipvs.ModeRoute {
		r, err := findRoute(unix.RT_TABLE_MAIN, c.VIP)
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { return restoreRoute(unix.RT_TABLE_MAIN, c.VIP, r) }, nil
	}
	link, err := netlink.LinkByName(c.Interface)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return func(context.Context) error { return deleteLink(c.Interface) }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", c.Interface, err)
	}
	wasUp := link.Attrs().Flags&net.FlagUp != 0
	hadAddr, err := hasHostAddr(link, c.VIP)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", c.Interface, err)
	}
	local, err := findRoute(unix.RT_TABLE_LOCAL, c.VIP)
	if err != nil {
		return nil, err
	}
	return func(context.Context) error {
		link, err := netlink.LinkByName(c.Interface)
		if err != nil {
			return fmt.Errorf("interface %s: %w", c.Interface, err)
		}
		if !hadAddr {
			// Removing the address also removes the kernel's local route
			// to it.
			addr := &netlink.Addr{IPNet: hostPrefix(c.VIP)}
			if err := netlink.AddrDel(link, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("interface %s: delete address %s: %w", c.Interface, addr.IPNet, err)
			}
		}
		if err := restoreRoute(unix.RT_TABLE_LOCAL, c.VIP, local); err != nil {
			return err
		}
		if !wasUp {
			if err := netlink.LinkSetDown(link); err != nil {
				return fmt.Errorf("interface %s: set down: %w", c.Interface, err)
			}
		}
		return nil
	}, nil
}

// hasHostAddr reports whether link holds a/32 (or a/128).
func hasHostAddr(link netlink.Link, a netip.Addr) (bool, error) {
	addrs, err := netlink.AddrList(link, family(a))
	if err != nil {
		return false, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		ones, bits := ad.Mask.Size()
		if sameIP(ad.IP, a) && ones == bits {
			return true, nil
		}
	}
	return false, nil
}

// restoreRoute makes the route to a in table what was: a copy of the route
// found then, or nil when there was none.
func restoreRoute(table int, a netip.Addr, was *netlink.Route) error {
	cur, err := findRoute(table, a)
	if err != nil {
		return err
	}
	switch {
	case was == nil && cur == nil:
		return nil
	case was == nil:
		if err := netlink.RouteDel(cur); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("route %s: delete: %w", cur.Dst, err)
		}
		return nil
	case cur != nil && cur.LinkIndex == was.LinkIndex && cur.Src.Equal(was.Src) && cur.Gw.Equal(was.Gw) &&
		cur.Type == was.Type && cur.Scope == was.Scope && cur.Protocol == was.Protocol:
		return nil
	}
	if err := netlink.RouteReplace(was); err != nil {
		return fmt.Errorf("route %s: restore (dev index %d, src %s): %w", was.Dst, was.LinkIndex, was.Src, err)
	}
	return nil
}

// deleteLink deletes the dummy interface name if it exists: one that a run
// created.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if link.Type() != "dummy" {
		return fmt.Errorf("interface %s: is a %s, not vipctl's dummy: left in place", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("interface %s: delete: %w", name, err)
	}
	return nil
}
