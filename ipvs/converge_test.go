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
		_, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.ErrorContains(t, err, "boom")
		_, err = tbl.Get(ctx, vip)
		assert.ErrorIs(t, err, ipvs.ErrNotFound, "no service is left behind")
		assert.False(t, pl.Has(c), "the VIP plumbing created by this run is removed")
	})
	t.Run("existing service", func(t *testing.T) {
		tbl, pl := ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing()
		_, err := ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}))
		require.NoError(t, err)
		tbl.FailNext(errors.New("boom"))
		_, err = ipvs.Converge(ctx, tbl, pl, c, desired("rr", ipvs.RealServer{Addr: m2, Weight: 1}))
		require.ErrorContains(t, err, "boom")
		st, err := tbl.Get(ctx, vip)
		require.NoError(t, err)
		require.Len(t, st.RealServers, 1)
		assert.Equal(t, m1, st.RealServers[0].Addr, "the previous real servers are kept")
		assert.True(t, pl.Has(c), "plumbing that existed before stays")
	})
	t.Run("vip mismatch", func(t *testing.T) {
		c2 := c
		c2.VIP = netip.MustParseAddr("10.103.97.3")
		_, err := ipvs.Converge(ctx, ipvstest.NewMemory(), ipvstest.NewMemoryPlumbing(), c2, desired("rr"))
		assert.ErrorContains(t, err, "differs")
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
