package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	mobyipvs "github.com/moby/ipvs"
	"go.uber.org/zap"
)

// Kernel implements Table, Plumbing and ConnCloser on the running kernel
// through netlink (generic netlink for IPVS, rtnetlink for links, addresses
// and routes, sock_diag for connection resets).
type Kernel struct {
	log *zap.Logger
	mu  sync.Mutex // moby/ipvs handles are not safe for concurrent use
	h   *mobyipvs.Handle
	// connTable is the kernel's IPVS connection table; a field so tests
	// can point it elsewhere.
	connTable string
	// presence is the cheap existence check (see Present); nil when its
	// socket could not be opened.
	presence *presence
}

// NewKernel opens a netlink handle for IPVS in the current network
// namespace. The ip_vs module must be loadable (moby/ipvs runs modprobe).
func NewKernel(log *zap.Logger) (*Kernel, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		return nil, fmt.Errorf("IPVS is not available in this kernel (load the ip_vs module: modprobe ip_vs): %w", err)
	}
	h, err := mobyipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink handle (is the ip_vs module loaded?): %w", err)
	}
	k := &Kernel{log: log, h: h, connTable: "/proc/net/ip_vs_conn"}
	// A failing query here means the kernel has no IPVS at all: say so now
	// rather than on the first Apply.
	if _, err := h.GetServices(); err != nil {
		h.Close()
		return nil, fmt.Errorf("query IPVS (is the ip_vs module loaded?): %w", err)
	}
	if k.presence, err = newPresence(); err != nil {
		log.Warn("no cheap IPVS presence check; polls read the whole virtual server", zap.Error(err))
	}
	return k, nil
}

// Close releases the netlink handle.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.h != nil {
		k.h.Close()
		k.h = nil
	}
	if k.presence != nil {
		k.presence.close()
	}
	return nil
}

func toMobyService(s Service) *mobyipvs.Service {
	fam := uint16(syscall.AF_INET)
	mask := uint32(0xffffffff)
	if s.VIP.Addr().Is6() {
		fam = syscall.AF_INET6
		mask = 128
	}
	return &mobyipvs.Service{
		Address:       net.IP(s.VIP.Addr().AsSlice()),
		Protocol:      syscall.IPPROTO_TCP,
		Port:          s.VIP.Port(),
		SchedName:     s.Scheduler,
		Netmask:       mask,
		AddressFamily: fam,
	}
}

func toMobyDest(rs RealServer) *mobyipvs.Destination {
	fam := uint16(syscall.AF_INET)
	if rs.Addr.Addr().Is6() {
		fam = syscall.AF_INET6
	}
	return &mobyipvs.Destination{
		Address:         net.IP(rs.Addr.Addr().AsSlice()),
		Port:            rs.Addr.Port(),
		Weight:          rs.Weight,
		ConnectionFlags: mobyipvs.ConnFwdMasq,
		AddressFamily:   fam,
	}
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// isNotExist reports whether an IPVS netlink error means "no such service
// or destination".
func isNotExist(err error) bool {
	// moby/ipvs reports an empty answer to a service query as an error of
	// its own rather than an errno.
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) ||
		(err != nil && strings.Contains(err.Error(), "obtained=0"))
}

// get reads the service at vip; the caller holds k.mu. The second result
// is false when there is no such service.
func (k *Kernel) get(vip netip.AddrPort) (State, bool, error) {
	if k.h == nil {
		return State{}, false, errors.New("IPVS handle is closed")
	}
	// Two netlink requests: the service (does it exist, which scheduler),
	// then its real servers. The watchdog's frequent poll asks only
	// Present; this full read serves its reconciles.
	ms := toMobyService(Service{VIP: vip, Protocol: ProtocolTCP})
	svc, err := k.h.GetService(ms)
	if err != nil {
		if isNotExist(err) {
			return State{}, false, nil
		}
		return State{}, false, fmt.Errorf("virtual server %s: get: %w", vip, err)
	}
	dests, err := k.h.GetDestinations(ms)
	if err != nil && !isNotExist(err) {
		return State{}, false, fmt.Errorf("virtual server %s: list real servers: %w", vip, err)
	}
	st := State{Service: Service{VIP: vip, Protocol: ProtocolTCP, Scheduler: svc.SchedName}}
	for _, d := range dests {
		st.RealServers = append(st.RealServers, RealServerStatus{
			RealServer:    RealServer{Addr: addrPort(d.Address, d.Port), Weight: d.Weight},
			ActiveConns:   d.ActiveConnections,
			InactiveConns: d.InactiveConnections,
		})
		if d.ConnectionFlags&mobyipvs.ConnFwdMask != mobyipvs.ConnFwdMasq {
			// Another forwarding method: make the planner see a difference
			// so the real server is rewritten as masquerade.
			st.RealServers[len(st.RealServers)-1].Weight = -1
		}
	}
	slices.SortFunc(st.RealServers, func(a, b RealServerStatus) int { return a.Addr.Compare(b.Addr) })
	return st, true, nil
}

// Get implements Table.
func (k *Kernel) Get(ctx context.Context, vip netip.AddrPort) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st, ok, err := k.get(vip)
	if err != nil {
		return State{}, err
	}
	if !ok {
		return State{}, fmt.Errorf("virtual server %s: %w", vip, ErrNotFound)
	}
	return st, nil
}

// Apply implements Table. It reads the service, plans the fewest changes
// and carries them out: the service is created or edited in place, real
// servers are added, re-weighted or deleted one by one. When a step fails
// the changes already made are reported together with the error.
func (k *Kernel) Apply(ctx context.Context, d Desired) ([]Change, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st, ok, err := k.get(d.Service.VIP)
	if err != nil {
		return nil, err
	}
	var cur *State
	if ok {
		cur = &st
	}
	p := MakePlan(cur, d)
	if p.Empty() {
		return nil, nil
	}
	all := p.Changes(cur, d)
	var done []Change
	ms := toMobyService(d.Service)
	// The changes come out of Plan.Changes in the order they are made here.
	next := func() { done = append(done, all[len(done)]) }
	if p.CreateService {
		if err := k.h.NewService(ms); err != nil {
			return done, fmt.Errorf("virtual server %s: create: %w", d.Service, err)
		}
		next()
	}
	if p.UpdateService {
		if err := k.h.UpdateService(ms); err != nil {
			return done, fmt.Errorf("virtual server %s: set scheduler %s: %w", d.Service, d.Service.Scheduler, err)
		}
		next()
	}
	for _, rs := range p.Delete {
		if err := k.h.DelDestination(ms, toMobyDest(rs)); err != nil && !isNotExist(err) {
			return done, fmt.Errorf("virtual server %s: delete real server %s: %w", d.Service, rs.Addr, err)
		}
		next()
	}
	for _, rs := range p.Add {
		if err := k.h.NewDestination(ms, toMobyDest(rs)); err != nil {
			return done, fmt.Errorf("virtual server %s: add real server %s: %w", d.Service, rs.Addr, err)
		}
		next()
	}
	for _, rs := range p.Update {
		if err := k.h.UpdateDestination(ms, toMobyDest(rs)); err != nil {
			return done, fmt.Errorf("virtual server %s: update real server %s: %w", d.Service, rs.Addr, err)
		}
		next()
	}
	return done, nil
}

// Delete implements Table.
func (k *Kernel) Delete(ctx context.Context, vip netip.AddrPort) ([]Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.h == nil {
		return nil, errors.New("IPVS handle is closed")
	}
	err := k.h.DelService(toMobyService(Service{VIP: vip, Protocol: ProtocolTCP}))
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("virtual server %s: delete: %w", vip, err)
	}
	return []Change{{Op: OpDelete, Kind: "virtual server", Target: vip.String()}}, nil
}
