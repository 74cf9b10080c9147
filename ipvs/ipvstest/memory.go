// Package ipvstest holds in-memory implementations of the ipvs interfaces
// for the tests of packages that manage IPVS without a kernel.
package ipvstest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/vipctl/vipctl/ipvs"
)

// Memory is an in-memory ipvs.Table for tests of packages that manage IPVS
// without a kernel. It applies the same plan the kernel implementation does
// and counts the operations, so tests can assert that nothing was re-created.
type Memory struct {
	mu       sync.Mutex
	services map[netip.AddrPort]*ipvs.State
	// Ops counts every kernel-like operation performed, by kind of change
	// ("add virtual server", "update real server", ...).
	ops map[string]int
	// FailNext, when set, makes the next Apply or Delete return this error
	// without changing anything.
	failNext error
}

// NewMemory returns an empty in-memory table.
func NewMemory() *Memory {
	return &Memory{services: map[netip.AddrPort]*ipvs.State{}, ops: map[string]int{}}
}

// FailNext makes the next mutating call fail with err and change nothing.
func (m *Memory) FailNext(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failNext = err
}

// Ops returns how many operations of a kind ("add real server", ...) ran.
func (m *Memory) Ops(kind string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops[kind]
}

// Flush removes every service, like `ipvsadm -C` or kube-proxy's start-up.
func (m *Memory) Flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.services)
}

// SetConns sets the connection counters the table reports for a real server.
func (m *Memory) SetConns(vip, rs netip.AddrPort, active, inactive int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.services[vip]
	if s == nil {
		return
	}
	for i := range s.RealServers {
		if s.RealServers[i].Addr == rs {
			s.RealServers[i].ActiveConns = active
			s.RealServers[i].InactiveConns = inactive
		}
	}
}

// Apply implements ipvs.Table.
func (m *Memory) Apply(_ context.Context, d ipvs.Desired) ([]ipvs.Change, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.failNext; err != nil {
		m.failNext = nil
		return nil, fmt.Errorf("virtual server %s: %w", d.Service, err)
	}
	cur := m.services[d.Service.VIP]
	var curCopy *ipvs.State
	if cur != nil {
		c := cloneState(*cur)
		curCopy = &c
	}
	p := ipvs.MakePlan(curCopy, d)
	changes := p.Changes(curCopy, d)
	if cur == nil {
		cur = &ipvs.State{Service: d.Service}
		m.services[d.Service.VIP] = cur
	}
	cur.Service = d.Service
	for _, rs := range p.Delete {
		cur.RealServers = slices.DeleteFunc(cur.RealServers, func(x ipvs.RealServerStatus) bool { return x.Addr == rs.Addr })
	}
	for _, rs := range p.Update {
		for i := range cur.RealServers {
			if cur.RealServers[i].Addr == rs.Addr {
				cur.RealServers[i].Weight = rs.Weight
			}
		}
	}
	for _, rs := range p.Add {
		cur.RealServers = append(cur.RealServers, ipvs.RealServerStatus{RealServer: rs})
	}
	for _, c := range changes {
		m.ops[string(c.Op)+" "+c.Kind]++
	}
	return changes, nil
}

// Get implements ipvs.Table.
func (m *Memory) Get(_ context.Context, vip netip.AddrPort) (ipvs.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops["get"]++
	s := m.services[vip]
	if s == nil {
		return ipvs.State{}, fmt.Errorf("virtual server %s: %w", vip, ipvs.ErrNotFound)
	}
	return cloneState(*s), nil
}

// Present reports whether the virtual server vip exists, and its
// scheduler, like Kernel.Present.
func (m *Memory) Present(_ context.Context, vip netip.AddrPort) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops["present"]++
	s := m.services[vip]
	if s == nil {
		return "", false, nil
	}
	return s.Service.Scheduler, true, nil
}

// Delete implements ipvs.Table.
func (m *Memory) Delete(_ context.Context, vip netip.AddrPort) ([]ipvs.Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.failNext; err != nil {
		m.failNext = nil
		return nil, fmt.Errorf("virtual server %s: %w", vip, err)
	}
	if m.services[vip] == nil {
		return nil, nil
	}
	delete(m.services, vip)
	m.ops["delete virtual server"]++
	return []ipvs.Change{{Op: ipvs.OpDelete, Kind: "virtual server", Target: vip.String()}}, nil
}

func cloneState(s ipvs.State) ipvs.State {
	s.RealServers = slices.Clone(s.RealServers)
	return s
}

// MemoryPlumbing is an in-memory ipvs.Plumbing and ipvs.ConnCloser for
// tests. It records the VIPs in place and the connection resets asked for.
type MemoryPlumbing struct {
	mu     sync.Mutex
	vips   map[netip.Addr]ipvs.VIPConfig
	closed map[netip.AddrPort]int
	calls  map[netip.AddrPort]int
	// Conns, when set, tells CloseConnections how many sockets a real
	// server has to reset.
	Conns func(vip, rs netip.AddrPort) int
}

// NewMemoryPlumbing returns a MemoryPlumbing with no VIP in place.
func NewMemoryPlumbing() *MemoryPlumbing {
	return &MemoryPlumbing{vips: map[netip.Addr]ipvs.VIPConfig{}, closed: map[netip.AddrPort]int{}, calls: map[netip.AddrPort]int{}}
}

// EnsureVIP implements ipvs.Plumbing.
func (m *MemoryPlumbing) EnsureVIP(_ context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.vips[c.VIP]; ok && cur == c {
		return nil, nil
	}
	m.vips[c.VIP] = c
	return []ipvs.Change{{Op: ipvs.OpAdd, Kind: "interface", Target: c.Interface, Detail: string(c.Mode)}}, nil
}

// RemoveVIP implements ipvs.Plumbing.
func (m *MemoryPlumbing) RemoveVIP(_ context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vips[c.VIP]; !ok {
		return nil, nil
	}
	delete(m.vips, c.VIP)
	return []ipvs.Change{{Op: ipvs.OpDelete, Kind: "interface", Target: c.Interface}}, nil
}

// Has reports whether the VIP is in place as c describes.
func (m *MemoryPlumbing) Has(c ipvs.VIPConfig) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.vips[c.VIP]
	return ok && cur == c
}

// Drop forgets a VIP, as if someone deleted the interface behind vipctl's back.
func (m *MemoryPlumbing) Drop(vip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.vips, vip)
}

// CloseConnections implements ipvs.ConnCloser.
func (m *MemoryPlumbing) CloseConnections(_ context.Context, vip, rs netip.AddrPort) (int, error) {
	n := 0
	if m.Conns != nil {
		n = m.Conns(vip, rs)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed[rs] += n
	m.calls[rs]++
	return n, nil
}

// CloseCalls reports how many times CloseConnections was called for rs.
func (m *MemoryPlumbing) CloseCalls(rs netip.AddrPort) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[rs]
}

// Closed reports how many connections to rs were reset so far.
func (m *MemoryPlumbing) Closed(rs netip.AddrPort) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed[rs]
}
