package ipvs

import (
	"net/netip"
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
