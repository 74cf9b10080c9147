package ipvstest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/ipvs"
)

var (
	vip = netip.MustParseAddrPort("10.103.97.2:6443")
	m1  = netip.MustParseAddrPort("192.0.2.11:6443")
	m2  = netip.MustParseAddrPort("192.0.2.12:6443")
)

func desired(sched string, rs ...ipvs.RealServer) ipvs.Desired {
	return ipvs.Desired{Service: ipvs.Service{VIP: vip, Protocol: ipvs.ProtocolTCP, Scheduler: sched}, RealServers: rs}
}

func TestMemoryApplyIsMinimal(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	ch, err := m.Apply(ctx, desired("rr", ipvs.RealServer{Addr: m1, Weight: 1}, ipvs.RealServer{Addr: m2, Weight: 1}))
	require.NoError(t, err)
	assert.Len(t, ch, 3)
	ch, err = m.Apply(ctx, desired("rr", ipvs.RealServer{Addr: m2, Weight: 1}, ipvs.RealServer{Addr: m1, Weight: 1}))
	require.NoError(t, err)
	assert.Empty(t, ch, "same set in another order changes nothing")
	ch, err = m.Apply(ctx, desired("rr", ipvs.RealServer{Addr: m1, Weight: 0}, ipvs.RealServer{Addr: m2, Weight: 1}))
	require.NoError(t, err)
	require.Len(t, ch, 1)
	assert.Equal(t, "update real server 10.103.97.2:6443 -> 192.0.2.11:6443 (weight 1 -> 0)", ch[0].String())
	assert.Equal(t, 0, m.Ops("delete real server"), "a weight change never deletes")
	st, err := m.Get(ctx, vip)
	require.NoError(t, err)
	assert.Len(t, st.RealServers, 2)

	_, err = m.Get(ctx, netip.MustParseAddrPort("10.0.0.1:1"))
	assert.ErrorIs(t, err, ipvs.ErrNotFound)
}
