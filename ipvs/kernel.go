package ipvs

import (
	"context"
	"errors"
	"net/netip"

	"go.uber.org/zap"
)

// Kernel implements Table, Plumbing and ConnCloser on the running kernel
// through netlink.
type Kernel struct {
	log *zap.Logger
}

var errTODO = errors.New("not implemented yet")

// NewKernel opens netlink handles for IPVS and routing.
func NewKernel(log *zap.Logger) (*Kernel, error) { return &Kernel{log: log}, nil }

// Close releases the netlink handles.
func (k *Kernel) Close() error { return nil }

// Apply implements Table.
func (k *Kernel) Apply(ctx context.Context, d Desired) ([]Change, error) { return nil, errTODO }

// Get implements Table.
func (k *Kernel) Get(ctx context.Context, vip netip.AddrPort) (State, error) { return State{}, errTODO }

// Delete implements Table.
func (k *Kernel) Delete(ctx context.Context, vip netip.AddrPort) ([]Change, error) { return nil, errTODO }

// EnsureVIP implements Plumbing.
func (k *Kernel) EnsureVIP(ctx context.Context, c VIPConfig) ([]Change, error) { return nil, errTODO }

// RemoveVIP implements Plumbing.
func (k *Kernel) RemoveVIP(ctx context.Context, c VIPConfig) ([]Change, error) { return nil, errTODO }

// CloseConnections implements ConnCloser.
func (k *Kernel) CloseConnections(ctx context.Context, vip, rs netip.AddrPort) (int, error) {
	return 0, errTODO
}

// Watch returns a channel that receives a value whenever a link, address or
// route changes on the node, so that callers re-assert their state at once.
// The channel is closed when ctx ends.
func (k *Kernel) Watch(ctx context.Context) (<-chan struct{}, error) { return nil, errTODO }

// DetectNodeIP returns the source address the kernel picks to reach to.
func DetectNodeIP(ctx context.Context, to netip.Addr) (netip.Addr, error) {
	return netip.Addr{}, errTODO
}
