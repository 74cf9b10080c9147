package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Converge brings the VIP plumbing and then the virtual service to the
// desired state. When a step fails, what this call changed is undone (the
// service is restored to what it was, a VIP interface or route it created
// is removed) so a failed run leaves the node as it found it.
func Converge(ctx context.Context, t Table, p Plumbing, c VIPConfig, d Desired) ([]Change, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if c.VIP != d.Service.VIP.Addr() {
		return nil, fmt.Errorf("vip %s: differs from the virtual server %s", c.VIP, d.Service)
	}
	before, err := t.Get(ctx, d.Service.VIP)
	existed := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	vipChanges, err := p.EnsureVIP(ctx, c)
	undoVIP := func() error {
		for _, ch := range vipChanges {
			if ch.Op == OpAdd && (ch.Kind == "interface" || ch.Kind == "route") {
				_, err := p.RemoveVIP(context.WithoutCancel(ctx), c)
				return err
			}
		}
		return nil
	}
	if err != nil {
		return nil, errors.Join(err, undoVIP())
	}
	svcChanges, err := t.Apply(ctx, d)
	if err != nil {
		rctx := context.WithoutCancel(ctx)
		var rerr error
		if len(svcChanges) > 0 || !existed {
			if existed {
				prev := Desired{Service: before.Service}
				for _, rs := range before.RealServers {
					prev.RealServers = append(prev.RealServers, rs.RealServer)
				}
				_, rerr = t.Apply(rctx, prev)
			} else {
				_, rerr = t.Delete(rctx, d.Service.VIP)
			}
		}
		if rerr != nil {
			rerr = fmt.Errorf("roll back virtual server %s: %w", d.Service, rerr)
		}
		return nil, errors.Join(err, rerr, undoVIP())
	}
	return append(vipChanges, svcChanges...), nil
}

// ParseEndpoint parses "IP:PORT", "[IPv6]:PORT" or a bare IP, which gets
// defaultPort. The error names what was wrong with s.
func ParseEndpoint(s string, defaultPort uint16) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.AddrPort{}, errors.New("empty address")
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		if defaultPort == 0 {
			return netip.AddrPort{}, errors.New("a port is required")
		}
		return netip.AddrPortFrom(a.Unmap(), defaultPort), nil
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return netip.AddrPort{}, errors.New("not an IP address or IP:PORT")
	}
	host, port := strings.Trim(s[:i], "[]"), s[i+1:]
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return netip.AddrPort{}, fmt.Errorf("port %q: want 1 to 65535", port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n)), nil
}
