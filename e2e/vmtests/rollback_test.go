package vmtests

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/kernel"
)

// failingTable is the kernel's IPVS table with an Apply that fails, so that
// Converge has to undo the VIP plumbing it changed on the real kernel.
type failingTable struct{ *kernel.Kernel }

func (failingTable) Apply(context.Context, ipvs.Desired) ([]ipvs.Change, error) {
	return nil, errors.New("injected failure")
}

// A failed Converge leaves the plumbing exactly as it found it: an address
// it added to an existing interface goes, a route it replaced comes back,
// an interface found down is down again.
func TestFailedConvergeRestoresThePlumbingItFound(t *testing.T) {
	otherNodeIP := netip.MustParseAddr("10.10.0.50") // a second address on the lab bridge
	otherAddr := netip.MustParseAddr("10.103.97.9")
	host := func(a netip.Addr) *net.IPNet { return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)} }
	dummy := func(t *testing.T, up bool, addrs ...netip.Addr) {
		t.Helper()
		require.NoError(t, netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: ipvs.DefaultInterface}}))
		lk, err := netlink.LinkByName(ipvs.DefaultInterface)
		require.NoError(t, err)
		for _, a := range addrs {
			require.NoError(t, netlink.AddrAdd(lk, &netlink.Addr{IPNet: host(a)}))
		}
		if up {
			require.NoError(t, netlink.LinkSetUp(lk))
		}
	}
	for _, tc := range []struct {
		name  string
		mode  ipvs.Mode
		setup func(t *testing.T, k *kernel.Kernel, c ipvs.VIPConfig)
	}{
		{"nothing in place", ipvs.ModeLink, func(*testing.T, *kernel.Kernel, ipvs.VIPConfig) {}},
		{"address added to an existing interface", ipvs.ModeLink, func(t *testing.T, _ *kernel.Kernel, _ ipvs.VIPConfig) {
			dummy(t, true, otherAddr)
		}},
		{"interface found down", ipvs.ModeLink, func(t *testing.T, _ *kernel.Kernel, _ ipvs.VIPConfig) {
			dummy(t, false)
		}},
		{"local route replaced", ipvs.ModeLink, func(t *testing.T, k *kernel.Kernel, c ipvs.VIPConfig) {
			c.NodeIP = otherNodeIP
			_, err := k.EnsureVIP(context.Background(), c)
			require.NoError(t, err)
		}},
		{"route replaced", ipvs.ModeRoute, func(t *testing.T, k *kernel.Kernel, c ipvs.VIPConfig) {
			c.NodeIP = otherNodeIP
			_, err := k.EnsureVIP(context.Background(), c)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.New(t, 1)
			br, err := netlink.LinkByName("br0")
			require.NoError(t, err)
			require.NoError(t, netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(otherNodeIP.AsSlice()), Mask: net.CIDRMask(24, 32)}}))
			t.Cleanup(func() {
				if lk, err := netlink.LinkByName(ipvs.DefaultInterface); err == nil {
					netlink.LinkDel(lk)
				}
			})
			k, err := kernel.New(nil)
			require.NoError(t, err)
			defer k.Close()
			c := ipvs.VIPConfig{Mode: tc.mode, Interface: ipvs.DefaultInterface, VIP: lab.VIP, NodeIP: lab.NodeIP}
			tc.setup(t, k, c)
			var addrsBefore []netlink.Addr
			if lk, err := netlink.LinkByName(ipvs.DefaultInterface); err == nil {
				addrsBefore, err = netlink.AddrList(lk, netlink.FAMILY_V4)
				require.NoError(t, err)
			}
			before := lab.Observe(t)

			d := ipvs.Desired{Service: ipvs.Service{VIP: lab.VIPPort, Protocol: ipvs.ProtocolTCP, Scheduler: ipvs.DefaultScheduler},
				RealServers: []ipvs.RealServer{{Addr: l.Masters[0].Addr, Weight: 1}}}
			_, _, err = ipvs.Converge(context.Background(), failingTable{k}, k, c, d)
			require.ErrorContains(t, err, "injected failure")
			assert.NotContains(t, err.Error(), "undoing", "the undo itself succeeded")

			assert.Equal(t, before, lab.Observe(t), "the interface, address and routes are as before")
			if lk, err := netlink.LinkByName(ipvs.DefaultInterface); err == nil {
				addrs, err := netlink.AddrList(lk, netlink.FAMILY_V4)
				require.NoError(t, err)
				assert.Equal(t, len(addrsBefore), len(addrs), "the interface keeps exactly its addresses")
			}
		})
	}
}
