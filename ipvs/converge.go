package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vipctl/vipctl/internal/rollback"
)

// Converge brings the VIP plumbing and then the virtual service to the
// desired state and reports the changes. It records, as it makes them, how
// to put back each change on a rollback stack: the VIP plumbing as it was
// (an interface, address or route added goes, one replaced returns) and the
// virtual service as it was (restored, or deleted when it did not exist).
//
// When a step fails, Converge undoes what it changed before returning, so a
// failed run leaves the node as it found it; the error then also tells
// whether undoing failed. On success it returns the stack, so that a caller
// whose later step fails can undo this run too (see rollback.Stack.Adopt).
func Converge(ctx context.Context, t Table, p Plumbing, c VIPConfig, d Desired) (changes []Change, undo *rollback.Stack, err error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, nil, err
	}
	if c.VIP != d.Service.VIP.Addr() {
		return nil, nil, fmt.Errorf("vip %s: differs from the virtual server %s", c.VIP, d.Service)
	}
	before, err := t.Get(ctx, d.Service.VIP)
	existed := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	restoreVIP, err := p.SnapshotVIP(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	stack := &rollback.Stack{}
	defer func() {
		if err != nil {
			if _, uerr := stack.Undo(ctx, nil); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing this run's changes failed, the node is not as before: %w", uerr))
			}
		}
	}()
	vipChanges, err := p.EnsureVIP(ctx, c)
	if len(vipChanges) > 0 || err != nil {
		// Restore even after an error: some of it may have been changed.
		stack.Push("VIP plumbing of "+c.VIP.String()+" restored", restoreVIP)
	}
	if err != nil {
		return nil, nil, err
	}
	svcChanges, err := t.Apply(ctx, d)
	if len(svcChanges) > 0 || (err != nil && !existed) {
		if existed {
			prev := Desired{Service: before.Service}
			for _, rs := range before.RealServers {
				prev.RealServers = append(prev.RealServers, rs.RealServer)
			}
			stack.Push("virtual server "+d.Service.String()+" restored", func(ctx context.Context) error {
				_, err := t.Apply(ctx, prev)
				return err
			})
		} else {
			stack.Push("virtual server "+d.Service.String()+" deleted", func(ctx context.Context) error {
				_, err := t.Delete(ctx, d.Service.VIP)
				return err
			})
		}
	}
	if err != nil {
		return nil, nil, err
	}
	return append(vipChanges, svcChanges...), stack, nil
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
