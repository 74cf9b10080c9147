package lab

import (
	"net"
	"net/netip"
	"sort"
	"syscall"
	"testing"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Observed is the kernel state a scenario checks, read with netlink
// independently of vipctl's own ipvs package.
type Observed struct {
	Services    []string          // "TCP 10.103.97.2:6443 rr"
	RealServers map[string]int    // "10.10.0.11:6443" -> weight, for the VIP's service
	Forwarding  map[string]uint32 // real server -> forwarding flags
	Link        bool              // vipctl0 exists
	LinkType    string
	LinkUp      bool
	VIPOnLink   bool   // VIP/32 on vipctl0
	LocalSrc    string // src of the VIP's route in the local table ("" if none)
	MainRoute   string // "dev br0 src 10.10.0.1" for a VIP/32 route in the main table
}

// Observe reads the kernel state of the IPv4 VIP.
func Observe(t testing.TB) Observed {
	t.Helper()
	return IPv4.Observe(t)
}

// Observe reads the kernel state of the family's VIP.
func (f Family) Observe(t testing.TB) Observed {
	t.Helper()
	VIP, VIPPort, fam := f.VIP, f.VIPPort(), netlink.FAMILY_V4
	if f.VIP.Is6() {
		fam = netlink.FAMILY_V6
	}
	o := Observed{RealServers: map[string]int{}, Forwarding: map[string]uint32{}}
	h, err := mobyipvs.New("")
	must(t, err, "ipvs handle")
	defer h.Close()
	svcs, err := h.GetServices()
	must(t, err, "list IPVS services")
	for _, s := range svcs {
		ap := netip.AddrPortFrom(addr(s.Address), s.Port)
		proto := "TCP"
		if s.Protocol != syscall.IPPROTO_TCP {
			proto = "OTHER"
		}
		o.Services = append(o.Services, proto+" "+ap.String()+" "+s.SchedName)
		if ap != VIPPort {
			continue
		}
		dests, err := h.GetDestinations(s)
		must(t, err, "list real servers")
		for _, d := range dests {
			k := netip.AddrPortFrom(addr(d.Address), d.Port).String()
			o.RealServers[k] = d.Weight
			o.Forwarding[k] = d.ConnectionFlags & mobyipvs.ConnFwdMask
		}
	}
	sort.Strings(o.Services)
	if lk, err := netlink.LinkByName("vipctl0"); err == nil {
		o.Link = true
		o.LinkType = lk.Type()
		o.LinkUp = lk.Attrs().Flags&net.FlagUp != 0
		addrs, _ := netlink.AddrList(lk, fam)
		for _, a := range addrs {
			ones, _ := a.Mask.Size()
			if addr(a.IP) == VIP && ones == VIP.BitLen() {
				o.VIPOnLink = true
			}
		}
	}
	for _, table := range []int{unix.RT_TABLE_LOCAL, unix.RT_TABLE_MAIN} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Table: table, Dst: prefix(VIP, VIP.BitLen())}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		must(t, err, "list routes")
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones != VIP.BitLen() {
				continue
			}
			if table == unix.RT_TABLE_LOCAL {
				// Every local route to the VIP, comma-separated, so that
				// a kernel route left beside vipctl's shows.
				if o.LocalSrc != "" {
					o.LocalSrc += ","
				}
				o.LocalSrc += addr(r.Src).String()
			} else {
				dev := ""
				if lk, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
					dev = lk.Attrs().Name
				}
				o.MainRoute = "dev " + dev + " src " + addr(r.Src).String()
			}
		}
	}
	return o
}

func addr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// FlushIPVS removes every IPVS service, like `ipvsadm -C` or kube-proxy in
// nftables mode starting up.
func FlushIPVS(t testing.TB) {
	t.Helper()
	h, err := mobyipvs.New("")
	must(t, err, "ipvs handle")
	defer h.Close()
	must(t, h.Flush(), "flush IPVS")
}

// SetScheduler changes the IPv4 VIP's service scheduler behind vipctl's back.
func SetScheduler(t testing.TB, sched string) {
	t.Helper()
	IPv4.SetScheduler(t, sched)
}

// SetScheduler changes the family's VIP service scheduler.
func (f Family) SetScheduler(t testing.TB, sched string) {
	t.Helper()
	h, err := mobyipvs.New("")
	must(t, err, "ipvs handle")
	defer h.Close()
	must(t, h.UpdateService(f.service(sched)), "set scheduler "+sched)
}
