package ipvs

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Plan is the set of operations that turns a current state into a desired one.
type Plan struct {
	// CreateService is set when the service does not exist yet.
	CreateService bool
	// UpdateService is set when the service exists with other settings
	// (scheduler); it is edited in place, never deleted and re-created.
	UpdateService bool
	Add           []RealServer
	Update        []RealServer
	Delete        []RealServer
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool {
	return !p.CreateService && !p.UpdateService && len(p.Add)+len(p.Update)+len(p.Delete) == 0
}

// MakePlan compares current (nil when the service does not exist) with
// desired. Real servers are matched by address and port; a weight change is
// an update, never a delete and add. Lists come out sorted by address.
func MakePlan(current *State, desired Desired) Plan {
	var p Plan
	have := map[netip.AddrPort]RealServer{}
	if current == nil {
		p.CreateService = true
	} else {
		if current.Service.Scheduler != desired.Service.Scheduler {
			p.UpdateService = true
		}
		for _, rs := range current.RealServers {
			have[rs.Addr] = rs.RealServer
		}
	}
	want := map[netip.AddrPort]bool{}
	for _, rs := range desired.RealServers {
		want[rs.Addr] = true
		cur, ok := have[rs.Addr]
		switch {
		case !ok:
			p.Add = append(p.Add, rs)
		case cur.Weight != rs.Weight:
			p.Update = append(p.Update, rs)
		}
	}
	for addr, rs := range have {
		if !want[addr] {
			p.Delete = append(p.Delete, rs)
		}
	}
	for _, l := range [][]RealServer{p.Add, p.Update, p.Delete} {
		slices.SortFunc(l, func(a, b RealServer) int { return cmp.Compare(a.Addr.String(), b.Addr.String()) })
	}
	return p
}

// Changes describes the plan as the Change list Apply reports. current is
// consulted for old values (weights, scheduler) and may be nil.
func (p Plan) Changes(current *State, d Desired) []Change {
	var out []Change
	svc := d.Service.String()
	if p.CreateService {
		out = append(out, Change{Op: OpAdd, Kind: KindVirtualServer, Target: svc, Detail: "scheduler " + d.Service.Scheduler})
	}
	if p.UpdateService && current != nil {
		out = append(out, Change{Op: OpUpdate, Kind: KindVirtualServer, Target: svc,
			Detail: fmt.Sprintf("scheduler %s -> %s", current.Service.Scheduler, d.Service.Scheduler)})
	}
	old := map[netip.AddrPort]int{}
	if current != nil {
		for _, rs := range current.RealServers {
			old[rs.Addr] = rs.Weight
		}
	}
	for _, rs := range p.Delete {
		out = append(out, Change{Op: OpDelete, Kind: KindRealServer, Target: svc + " -> " + rs.Addr.String()})
	}
	for _, rs := range p.Add {
		out = append(out, Change{Op: OpAdd, Kind: KindRealServer, Target: svc + " -> " + rs.Addr.String(), Detail: fmt.Sprintf("weight %d", rs.Weight)})
	}
	for _, rs := range p.Update {
		out = append(out, Change{Op: OpUpdate, Kind: KindRealServer, Target: svc + " -> " + rs.Addr.String(),
			Detail: fmt.Sprintf("weight %d -> %d", old[rs.Addr], rs.Weight)})
	}
	return out
}
