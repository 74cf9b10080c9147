package kernel

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

func zapString(k, v string) zap.Field { return zap.String(k, v) }

// Watch returns a channel that receives a value whenever a link, address or
// route changes on the node, so that callers re-assert their state at once.
// Bursts are coalesced: the channel holds at most one pending value. It is
// closed when ctx ends or a subscription fails.
func (k *Kernel) Watch(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.LinkSubscribe(links, done); err != nil {
		close(done)
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, done); err != nil {
		close(done)
		return nil, fmt.Errorf("subscribe to address events: %w", err)
	}
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		close(done)
		return nil, fmt.Errorf("subscribe to route events: %w", err)
	}
	out := make(chan struct{}, 1)
	notify := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(out)
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-links:
				if !ok {
					return
				}
				notify()
			case _, ok := <-addrs:
				if !ok {
					return
				}
				notify()
			case _, ok := <-routes:
				if !ok {
					return
				}
				notify()
			}
		}
	}()
	return out, nil
}
