// Package ipvstest holds in-memory implementations of the ipvs interfaces
// for the tests of packages that manage IPVS without a kernel.
package ipvstest

import (
	"context"
	"fmt"
	"maps"
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
		m.ops[string(c.Op)+" "+string(c.Kind)]++
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
	return []ipvs.Change{{Op: ipvs.OpDelete, Kind: ipvs.KindVirtualServer, Target: vip.String()}}, nil
}

func cloneState(s ipvs.State) ipvs.State {
	s.RealServers = slices.Clone(s.RealServers)
	return s
}

// MemoryPlumbing is an in-memory ipvs.Plumbing and ipvs.ConnCloser for
// tests. It models what the kernel implementation touches: dummy
// interfaces (up or down) with their addresses, the local route the kernel
// adds with each address (route source unset), and route mode's routes. It
// also records the connection resets asked for.
type MemoryPlumbing struct {
	mu    sync.Mutex
	links map[string]*memLink
	// local is the local table's route to each address: its interface and
	// source (invalid when unset).
	local map[netip.Addr]memRoute
	// routes is route mode's VIP/32 route in the main table, by VIP.
	routes map[netip.Addr]memRoute
	closed map[netip.AddrPort]int
	calls  map[netip.AddrPort]int
	// Conns, when set, tells CloseConnections how many sockets a real
	// server has to reset.
	Conns func(vip, rs netip.AddrPort) int
}

type memLink struct {
	up    bool
	addrs map[netip.Addr]bool
}

func (l *memLink) clone() *memLink {
	if l == nil {
		return nil
	}
	return &memLink{up: l.up, addrs: maps.Clone(l.addrs)}
}

type memRoute struct {
	dev string
	src netip.Addr
}

// NewMemoryPlumbing returns a MemoryPlumbing with no VIP in place.
func NewMemoryPlumbing() *MemoryPlumbing {
	return &MemoryPlumbing{links: map[string]*memLink{}, local: map[netip.Addr]memRoute{}, routes: map[netip.Addr]memRoute{},
		closed: map[netip.AddrPort]int{}, calls: map[netip.AddrPort]int{}}
}

// routeDev is the interface a route-mode route leaves through.
const routeDev = "eth0"

// EnsureVIP implements ipvs.Plumbing.
func (m *MemoryPlumbing) EnsureVIP(_ context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Mode == ipvs.ModeRoute {
		want := memRoute{dev: routeDev, src: c.NodeIP}
		cur, ok := m.routes[c.VIP]
		if ok && cur == want {
			return nil, nil
		}
		m.routes[c.VIP] = want
		op := ipvs.OpAdd
		if ok {
			op = ipvs.OpUpdate
		}
		return []ipvs.Change{{Op: op, Kind: ipvs.KindRoute, Target: c.VIP.String() + "/32 dev " + routeDev, Detail: "src " + c.NodeIP.String()}}, nil
	}
	var changes []ipvs.Change
	l := m.links[c.Interface]
	if l == nil {
		// A new interface comes up with the VIP and its route, reported as
		// one change (the kernel reports each step).
		m.links[c.Interface] = &memLink{up: true, addrs: map[netip.Addr]bool{c.VIP: true}}
		m.local[c.VIP] = memRoute{dev: c.Interface, src: c.NodeIP}
		return []ipvs.Change{{Op: ipvs.OpAdd, Kind: ipvs.KindInterface, Target: c.Interface, Detail: "dummy"}}, nil
	}
	if !l.up {
		l.up = true
		changes = append(changes, ipvs.Change{Op: ipvs.OpUpdate, Kind: ipvs.KindInterface, Target: c.Interface, Detail: "up"})
	}
	if !l.addrs[c.VIP] {
		l.addrs[c.VIP] = true
		m.local[c.VIP] = memRoute{dev: c.Interface}
		changes = append(changes, ipvs.Change{Op: ipvs.OpAdd, Kind: ipvs.KindAddress, Target: c.VIP.String() + " dev " + c.Interface})
	}
	if want := (memRoute{dev: c.Interface, src: c.NodeIP}); m.local[c.VIP] != want {
		m.local[c.VIP] = want
		changes = append(changes, ipvs.Change{Op: ipvs.OpUpdate, Kind: ipvs.KindRoute, Target: "local " + c.VIP.String() + " dev " + c.Interface, Detail: "src " + c.NodeIP.String()})
	}
	return changes, nil
}

// RemoveVIP implements ipvs.Plumbing.
func (m *MemoryPlumbing) RemoveVIP(_ context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Mode == ipvs.ModeRoute {
		if _, ok := m.routes[c.VIP]; !ok {
			return nil, nil
		}
		delete(m.routes, c.VIP)
		return []ipvs.Change{{Op: ipvs.OpDelete, Kind: ipvs.KindRoute, Target: c.VIP.String() + "/32"}}, nil
	}
	l := m.links[c.Interface]
	if l == nil {
		return nil, nil
	}
	var changes []ipvs.Change
	if l.addrs[c.VIP] {
		delete(l.addrs, c.VIP)
		delete(m.local, c.VIP)
		changes = append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindAddress, Target: c.VIP.String() + " dev " + c.Interface})
	}
	if len(l.addrs) == 0 {
		delete(m.links, c.Interface)
		changes = append(changes, ipvs.Change{Op: ipvs.OpDelete, Kind: ipvs.KindInterface, Target: c.Interface})
	}
	return changes, nil
}

// SnapshotVIP implements ipvs.Plumbing.
func (m *MemoryPlumbing) SnapshotVIP(_ context.Context, c ipvs.VIPConfig) (func(context.Context) error, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	link := m.links[c.Interface].clone()
	local, hadLocal := m.local[c.VIP]
	route, hadRoute := m.routes[c.VIP]
	return func(context.Context) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if c.Mode == ipvs.ModeRoute {
			restore(m.routes, c.VIP, route, hadRoute)
			return nil
		}
		if link == nil {
			delete(m.links, c.Interface)
		} else {
			m.links[c.Interface] = link.clone()
		}
		restore(m.local, c.VIP, local, hadLocal)
		return nil
	}, nil
}

func restore[K comparable, V any](m map[K]V, k K, v V, had bool) {
	if had {
		m[k] = v
	} else {
		delete(m, k)
	}
}

// AddLink adds an interface that is up, holding addrs (each with its local
// route, source unset), as if someone else had made it.
func (m *MemoryPlumbing) AddLink(name string, addrs ...netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := &memLink{up: true, addrs: map[netip.Addr]bool{}}
	for _, a := range addrs {
		l.addrs[a] = true
		m.local[a] = memRoute{dev: name}
	}
	m.links[name] = l
}

// Link reports whether the interface exists and its addresses, sorted.
func (m *MemoryPlumbing) Link(name string) ([]netip.Addr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.links[name]
	if l == nil {
		return nil, false
	}
	return slices.SortedFunc(maps.Keys(l.addrs), netip.Addr.Compare), true
}

// Has reports whether the VIP is in place as c describes.
func (m *MemoryPlumbing) Has(c ipvs.VIPConfig) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Mode == ipvs.ModeRoute {
		return m.routes[c.VIP] == memRoute{dev: routeDev, src: c.NodeIP}
	}
	l := m.links[c.Interface]
	return l != nil && l.up && l.addrs[c.VIP] && m.local[c.VIP] == memRoute{dev: c.Interface, src: c.NodeIP}
}

// Drop forgets a VIP, as if someone deleted the interface holding it (or
// its route) behind vipctl's back.
func (m *MemoryPlumbing) Drop(vip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, l := range m.links {
		if l.addrs[vip] {
			for a := range l.addrs {
				delete(m.local, a)
			}
			delete(m.links, name)
		}
	}
	delete(m.routes, vip)
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
