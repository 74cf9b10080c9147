package ipvs_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

func TestConvergeRollsBackOnFailure(t *testing.T) {
	ctx := context.Background()
	c := ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: ipvs.DefaultInterface, VIP: vip.Addr(), NodeIP: netip.MustParseAddr("192.0.2.20")}

	t.Run("new service", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		tbl.FailNext(errors.New("boom"))
		_, _, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.ErrorContains(t, err, "boom")
		_, err = tbl.Get(ctx, vip)
		assert.ErrorIs(t, err, ipvs.ErrNotFound, "no service is left behind")
		assert.False(t, pl.Has(c), "the VIP plumbing created by this run is removed")
	})
	t.Run("existing service", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		_, _, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		tbl.FailNext(errors.New("boom"))
		_, _, err = ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m2, Weight: 1}))
		require.ErrorContains(t, err, "boom")
		st, err := tbl.Get(ctx, vip)
		require.NoError(t, err)
		require.Len(t, st.RealServers, 1)
		assert.Equal(t, m1, st.RealServers[0].Addr, "the previous real servers are kept")
		assert.True(t, pl.Has(c), "plumbing that existed before stays")
	})
	t.Run("address added to an existing interface", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		other := netip.MustParseAddr("10.103.97.9")
		pl.AddLink(c.Interface, other)
		tbl.FailNext(errors.New("boom"))
		_, _, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.ErrorContains(t, err, "boom")
		addrs, ok := pl.Link(c.Interface)
		assert.True(t, ok, "the interface found in place stays")
		assert.Equal(t, []netip.Addr{other}, addrs, "the VIP address this run added is removed")
	})
	for _, mode := range []ipvs.Mode{ipvs.ModeLink, ipvs.ModeRoute} {
		t.Run("route replaced in "+string(mode)+" mode", func(t *testing.T) {
			tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
			was := c
			was.Mode = mode
			was.NodeIP = netip.MustParseAddr("192.0.2.99")
			_, err := pl.EnsureVIP(ctx, was)
			require.NoError(t, err)
			now := was
			now.NodeIP = c.NodeIP
			tbl.FailNext(errors.New("boom"))
			_, _, err = ipvs.Converge(ctx, tbl, pl, now, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
			require.ErrorContains(t, err, "boom")
			assert.True(t, pl.Has(was), "the route is back with its old source")
			assert.False(t, pl.Has(now))
		})
	}
	t.Run("vip mismatch", func(t *testing.T) {
		c2 := c
		c2.VIP = netip.MustParseAddr("10.103.97.3")
		_, _, err := ipvs.Converge(ctx, ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing(), c2, desired("rr"))
		assert.ErrorContains(t, err, "differs")
	})
}

func TestConvergeReturnsItsUndo(t *testing.T) {
	ctx := context.Background()
	c := ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: ipvs.DefaultInterface, VIP: vip.Addr(), NodeIP: netip.MustParseAddr("192.0.2.20")}

	t.Run("new service and plumbing", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		changes, undo, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		require.NotEmpty(t, changes)
		require.True(t, pl.Has(c))
		done, err := undo.Undo(ctx, nil)
		require.NoError(t, err)
		assert.Len(t, done, 2)
		_, err = tbl.Get(ctx, vip)
		assert.ErrorIs(t, err, ipvs.ErrNotFound, "the service this run created is deleted")
		_, ok := pl.Link(c.Interface)
		assert.False(t, ok, "the interface this run created is deleted")
	})
	t.Run("existing service", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		_, _, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		_, undo, err := ipvs.Converge(ctx, tbl, pl, c, desired("wrr", ipvs.RealServer{Addr: m2, Weight: 1}))
		require.NoError(t, err)
		_, err = undo.Undo(ctx, nil)
		require.NoError(t, err)
		st, err := tbl.Get(ctx, vip)
		require.NoError(t, err)
		assert.Equal(t, "rr", st.Service.Scheduler)
		require.Len(t, st.RealServers, 1)
		assert.Equal(t, m1, st.RealServers[0].Addr)
		assert.True(t, pl.Has(c), "plumbing this run did not change stays")
	})
	t.Run("nothing to change records nothing", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		_, _, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		changes, undo, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		assert.Empty(t, changes)
		assert.Zero(t, undo.Len())
	})
}

var (
	vip = netip.MustParseAddrPort("10.103.97.2:6443")
	m1  = netip.MustParseAddrPort("192.0.2.11:6443")
	m2  = netip.MustParseAddrPort("192.0.2.12:6443")
)

func desired(sched string, rs ...ipvs.RealServer) ipvs.Desired {
	return ipvs.Desired{Service: ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: sched}, RealServers: rs}
}
