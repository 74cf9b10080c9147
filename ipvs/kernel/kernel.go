package kernel

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

	"github.com/vipctl/vipctl/ipvs"
)

// Kernel implements ipvs.Table, ipvs.Plumbing and ipvs.ConnCloser through
// netlink (generic netlink for IPVS, rtnetlink for links, addresses and
// routes, sock_diag for connection resets).
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

// New opens a netlink handle for IPVS in the current network
// namespace. The ip_vs module must be loadable (moby/ipvs runs modprobe).
func New(log *zap.Logger) (*Kernel, error) {
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

// NewPlumbing returns the VIP plumbing of the running kernel alone: links,
// addresses and routes through rtnetlink, which need no IPVS module (reset
// removes a VIP where IPVS is not loaded).
func NewPlumbing(log *zap.Logger) ipvs.Plumbing {
	if log == nil {
		log = zap.NewNop()
	}
	return &Kernel{log: log}
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

func toMobyService(s ipvs.Service) *mobyipvs.Service {
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

func toMobyDest(rs ipvs.RealServer) *mobyipvs.Destination {
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
func (k *Kernel) get(vip netip.AddrPort) (ipvs.State, bool, error) {
	if k.h == nil {
		return ipvs.State{}, false, errors.New("IPVS handle is closed")
	}
	// Two netlink requests: the service (does it exist, which scheduler),
	// then its real servers. The watchdog's frequent poll asks only
	// Present; this full read serves its reconciles.
	ms := toMobyService(ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP})
	svc, err := k.h.GetService(ms)
	if err != nil {
		if isNotExist(err) {
			return ipvs.State{}, false, nil
		}
		return ipvs.State{}, false, fmt.Errorf("virtual server %s: get: %w", vip, err)
	}
	dests, err := k.h.GetDestinations(ms)
	if err != nil && !isNotExist(err) {
		return ipvs.State{}, false, fmt.Errorf("virtual server %s: list real servers: %w", vip, err)
	}
	st := ipvs.State{Service: ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: svc.SchedName}}
	for _, d := range dests {
		st.RealServers = append(st.RealServers, ipvs.RealServerStatus{
			RealServer:    ipvs.RealServer{Addr: addrPort(d.Address, d.Port), Weight: d.Weight},
			ActiveConns:   d.ActiveConnections,
			InactiveConns: d.InactiveConnections,
		})
		if d.ConnectionFlags&mobyipvs.ConnFwdMask != mobyipvs.ConnFwdMasq {
			// Another forwarding method: make the planner see a difference
			// so the real server is rewritten as masquerade.
			st.RealServers[len(st.RealServers)-1].Weight = -1
		}
	}
	slices.SortFunc(st.RealServers, func(a, b ipvs.RealServerStatus) int { return a.Addr.Compare(b.Addr) })
	return st, true, nil
}

// Get implements ipvs.Table.
func (k *Kernel) Get(ctx context.Context, vip netip.AddrPort) (ipvs.State, error) {
	if err := ctx.Err(); err != nil {
		return ipvs.State{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st, ok, err := k.get(vip)
	if err != nil {
		return ipvs.State{}, err
	}
	if !ok {
		return ipvs.State{}, fmt.Errorf("virtual server %s: %w", vip, ipvs.ErrNotFound)
	}
	return st, nil
}

// Apply implements ipvs.Table. It reads the service, plans the fewest changes
// and carries them out: the service is created or edited in place, real
// servers are added, re-weighted or deleted one by one. When a step fails
// the changes already made are reported together with the error.
func (k *Kernel) Apply(ctx context.Context, d ipvs.Desired) ([]ipvs.Change, error) {
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
	var cur *ipvs.State
	if ok {
		cur = &st
	}
	p := ipvs.MakePlan(cur, d)
	if p.Empty() {
		return nil, nil
	}
	all := p.Changes(cur, d)
	var done []ipvs.Change
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

// Delete implements ipvs.Table.
func (k *Kernel) Delete(ctx context.Context, vip netip.AddrPort) ([]ipvs.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.h == nil {
		return nil, errors.New("IPVS handle is closed")
	}
	err := k.h.DelService(toMobyService(ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP}))
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("virtual server %s: delete: %w", vip, err)
	}
	return []ipvs.Change{{Op: ipvs.OpDelete, Kind: ipvs.KindVirtualServer, Target: vip.String()}}, nil
}
