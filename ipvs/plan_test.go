package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	vip = netip.MustParseAddrPort("10.103.97.2:6443")
	m1  = netip.MustParseAddrPort("192.0.2.11:6443")
	m2  = netip.MustParseAddrPort("192.0.2.12:6443")
	m3  = netip.MustParseAddrPort("192.0.2.13:6443")
)

func desired(sched string, rs ...RealServer) Desired {
	return Desired{Service: Service{VIP: vip, Protocol: ProtocolTCP, Scheduler: sched}, RealServers: rs}
}

func state(sched string, rs ...RealServer) *State {
	st := &State{Service: Service{VIP: vip, Protocol: ProtocolTCP, Scheduler: sched}}
	for _, r := range rs {
		st.RealServers = append(st.RealServers, RealServerStatus{RealServer: r})
	}
	return st
}

func TestMakePlan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		current *State
		want    Desired
		plan    Plan
	}{
		{"create", nil, desired("rr", RealServer{m1, 1}, RealServer{m2, 1}),
			Plan{CreateService: true, Add: []RealServer{{m1, 1}, {m2, 1}}}},
		{"nothing to do", state("rr", RealServer{m2, 1}, RealServer{m1, 1}), desired("rr", RealServer{m1, 1}, RealServer{m2, 1}),
			Plan{}},
		{"weight change is an update", state("rr", RealServer{m1, 1}, RealServer{m2, 1}), desired("rr", RealServer{m1, 0}, RealServer{m2, 1}),
			Plan{Update: []RealServer{{m1, 0}}}},
		{"scheduler change edits the service in place", state("rr", RealServer{m1, 1}), desired("wrr", RealServer{m1, 1}),
			Plan{UpdateService: true}},
		{"add and delete", state("rr", RealServer{m1, 1}, RealServer{m2, 1}), desired("rr", RealServer{m1, 1}, RealServer{m3, 1}),
			Plan{Add: []RealServer{{m3, 1}}, Delete: []RealServer{{m2, 1}}}},
		{"empty desired deletes all real servers but keeps the service", state("rr", RealServer{m1, 1}), desired("rr"),
			Plan{Delete: []RealServer{{m1, 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := MakePlan(tc.current, tc.want)
			assert.Equal(t, tc.plan, p)
			assert.Equal(t, tc.plan.Empty(), len(p.Changes(tc.current, tc.want)) == 0)
		})
	}
}

func TestValidate(t *testing.T) {
	ok := desired("rr", RealServer{m1, 1})
	require.NoError(t, ok.Validate())
	for _, tc := range []struct {
		name string
		d    Desired
		want string
	}{
		{"port 0", Desired{Service: Service{VIP: netip.MustParseAddrPort("10.103.97.2:0"), Protocol: ProtocolTCP, Scheduler: "rr"}}, "port 0"},
		{"udp", Desired{Service: Service{VIP: vip, Protocol: "udp", Scheduler: "rr"}}, `protocol "udp"`},
		{"scheduler", desired("fastest"), `scheduler "fastest"`},
		{"duplicate", desired("rr", RealServer{m1, 1}, RealServer{m1, 1}), "listed twice"},
		{"vip as master", desired("rr", RealServer{netip.AddrPortFrom(vip.Addr(), 1), 1}), "same address as the virtual server"},
		{"weight", desired("rr", RealServer{m1, -1}), "weight -1"},
		{"family", desired("rr", RealServer{netip.MustParseAddrPort("[2001:db8::1]:6443"), 1}), "address family"},
		{"loopback", desired("rr", RealServer{netip.MustParseAddrPort("127.0.0.1:6443"), 1}), "cannot be used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.d.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestMemoryApplyIsMinimal(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	ch, err := m.Apply(ctx, desired("rr", RealServer{m1, 1}, RealServer{m2, 1}))
	require.NoError(t, err)
	assert.Len(t, ch, 3)
	ch, err = m.Apply(ctx, desired("rr", RealServer{m2, 1}, RealServer{m1, 1}))
	require.NoError(t, err)
	assert.Empty(t, ch, "same set in another order changes nothing")
	ch, err = m.Apply(ctx, desired("rr", RealServer{m1, 0}, RealServer{m2, 1}))
	require.NoError(t, err)
	require.Len(t, ch, 1)
	assert.Equal(t, "update real server 10.103.97.2:6443 -> 192.0.2.11:6443 (weight 1 -> 0)", ch[0].String())
	assert.Equal(t, 0, m.Ops("delete real server"), "a weight change never deletes")
	st, err := m.Get(ctx, vip)
	require.NoError(t, err)
	assert.Len(t, st.RealServers, 2)

	_, err = m.Get(ctx, netip.MustParseAddrPort("10.0.0.1:1"))
	assert.ErrorIs(t, err, ErrNotFound)
}

func TestConvergeRollsBackOnFailure(t *testing.T) {
	ctx := context.Background()
	c := VIPConfig{Mode: ModeLink, Interface: DefaultInterface, VIP: vip.Addr(), NodeIP: netip.MustParseAddr("192.0.2.20")}

	t.Run("new service", func(t *testing.T) {
		tbl, pl := NewMemory(), NewMemoryPlumbing()
		tbl.FailNext(errors.New("boom"))
		_, err := Converge(ctx, tbl, pl, c, desired("rr", RealServer{m1, 1}))
		require.ErrorContains(t, err, "boom")
		_, err = tbl.Get(ctx, vip)
		assert.ErrorIs(t, err, ErrNotFound, "no service is left behind")
		assert.False(t, pl.Has(c), "the VIP plumbing created by this run is removed")
	})
	t.Run("existing service", func(t *testing.T) {
		tbl, pl := NewMemory(), NewMemoryPlumbing()
		_, err := Converge(ctx, tbl, pl, c, desired("rr", RealServer{m1, 1}))
		require.NoError(t, err)
		tbl.FailNext(errors.New("boom"))
		_, err = Converge(ctx, tbl, pl, c, desired("rr", RealServer{m2, 1}))
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
		_, err := Converge(ctx, NewMemory(), NewMemoryPlumbing(), c2, desired("rr"))
		assert.ErrorContains(t, err, "differs")
	})
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":         "192.0.2.1:6443",
		"192.0.2.1:443":     "192.0.2.1:443",
		"[2001:db8::1]:443": "[2001:db8::1]:443",
		"2001:db8::1":       "[2001:db8::1]:6443",
		" 192.0.2.1 ":       "192.0.2.1:6443",
	} {
		got, err := ParseEndpoint(in, 6443)
		require.NoError(t, err, in)
		assert.Equal(t, want, got.String())
	}
	for in, want := range map[string]string{
		"":              "empty",
		"host:6443":     `"host" is not an IP`,
		"192.0.2.1:0":   `port "0"`,
		"192.0.2.1:1e5": `port "1e5"`,
		"192.0.2.1:x":   `port "x"`,
		"nonsense":      "not an IP address",
	} {
		_, err := ParseEndpoint(in, 6443)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
	}
}

func TestParseConnTable(t *testing.T) {
	in := strings.Join([]string{
		"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData",
		"TCP 0A0A0001 A1B2 0A676102 192B 0A0A000B 192B ESTABLISHED 899",
		"TCP 0A0A0001 A1B3 0A676102 192B 0A0A000C 192B TIME_WAIT   100",
		"TCP 2001:0db8:0000:0000:0000:0000:0000:0001 1F90 2001:0db8:0000:0000:0000:0000:0000:0002 192B 2001:0db8:0000:0000:0000:0000:0000:000b 192B ESTABLISHED 10",
		"garbage line",
	}, "\n")
	conns, err := ParseConnTable(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, conns, 3)
	assert.Equal(t, Conn{Protocol: "TCP", From: netip.MustParseAddrPort("10.10.0.1:41394"), To: netip.MustParseAddrPort("10.103.97.2:6443"),
		Dest: netip.MustParseAddrPort("10.10.0.11:6443"), State: "ESTABLISHED"}, conns[0])
	assert.Equal(t, "TIME_WAIT", conns[1].State)
	assert.Equal(t, netip.MustParseAddrPort("[2001:db8::b]:6443"), conns[2].Dest)
	assert.True(t, closable(conns[0].State))
	assert.False(t, closable(conns[1].State))
}
