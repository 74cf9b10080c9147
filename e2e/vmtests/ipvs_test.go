package vmtests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/ipvs/kernel"
)

func applyArgs(l *lab.Lab, mode string, masters ...*lab.Master) []string {
	args := []string{"ipvs", "apply", "--vip", lab.VIPPort.String(), "--mode", mode, "-o", "json"}
	for _, m := range masters {
		args = append(args, "--master", m.Addr.String())
	}
	return args
}

type applyOut struct {
	Changes []struct{ Op, Kind, Target, Detail string } `json:"changes"`
}

func apply(t *testing.T, l *lab.Lab, mode string, masters ...*lab.Master) applyOut {
	t.Helper()
	out, err := l.Run(applyArgs(l, mode, masters...)...)
	require.NoError(t, err)
	var a applyOut
	require.NoError(t, json.Unmarshal([]byte(out), &a), out)
	return a
}

// The node IP is detected from the route to the first master, so no
// --node-ip is passed anywhere in these scenarios.
func TestApplyCreatesExactlyTheDesiredState(t *testing.T) {
	l := lab.New(t, 3)
	before := lab.Observe(t)
	require.Empty(t, before.Services, "a fresh lab has no IPVS service")

	a := apply(t, l, "link", l.Masters...)
	assert.NotEmpty(t, a.Changes)

	o := lab.Observe(t)
	assert.Equal(t, []string{"TCP " + lab.VIPPort.String() + " rr"}, o.Services)
	want := map[string]int{}
	for _, m := range l.Masters {
		want[m.Addr.String()] = 1
		assert.Equal(t, uint32(0), o.Forwarding[m.Addr.String()], "masquerade forwarding for %s", m.Name)
	}
	assert.Equal(t, want, o.RealServers)
	assert.True(t, o.Link, "vipctl0 exists")
	assert.Equal(t, "dummy", o.LinkType)
	assert.True(t, o.LinkUp, "vipctl0 is up")
	assert.True(t, o.VIPOnLink, "VIP/32 on vipctl0")
	assert.Equal(t, lab.NodeIP.String(), o.LocalSrc, "the VIP's local route has the node IP as source")
	assert.Empty(t, o.MainRoute, "link mode adds no main-table route")
}

func TestApplyTwiceChangesNothing(t *testing.T) {
	for _, mode := range []string{"link", "route"} {
		t.Run(mode, func(t *testing.T) {
			l := lab.New(t, 3)
			first := apply(t, l, mode, l.Masters...)
			require.NotEmpty(t, first.Changes)
			s1 := lab.Observe(t)
			second := apply(t, l, mode, l.Masters...)
			assert.Empty(t, second.Changes, "the second apply reports no change")
			assert.Equal(t, s1, lab.Observe(t), "the kernel state is the same")
			out, err := l.Run("ipvs", "apply", "--vip", lab.VIPPort.String(), "--mode", mode,
				"--master", l.Masters[0].Addr.String(), "--master", l.Masters[1].Addr.String(), "--master", l.Masters[2].Addr.String())
			require.NoError(t, err)
			assert.Contains(t, out, "no changes", "the text output says so too")
		})
	}
}

func TestWeightChangeIsAnUpdateNotARecreate(t *testing.T) {
	l := lab.New(t, 2)
	apply(t, l, "link", l.Masters...)
	// Hold a connection open through the VIP to master1 or master2.
	c := l.Client(2 * time.Second)
	resp, err := c.Get("https://" + lab.VIPPort.String() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	out, err := l.Run("ipvs", "apply", "--vip", lab.VIPPort.String(), "--scheduler", "wrr",
		"--master", l.Masters[0].Addr.String(), "--master", l.Masters[1].Addr.String(), "-o", "json")
	require.NoError(t, err)
	var a applyOut
	require.NoError(t, json.Unmarshal([]byte(out), &a))
	require.Len(t, a.Changes, 1, "only the scheduler changes: %s", out)
	assert.Equal(t, "update", a.Changes[0].Op)
	assert.Equal(t, "virtual server", a.Changes[0].Kind)
	assert.Equal(t, []string{"TCP " + lab.VIPPort.String() + " wrr"}, lab.Observe(t).Services)
}

func TestLocalClientReachesEveryMasterThroughTheVIP(t *testing.T) {
	for _, mode := range []string{"link", "route"} {
		t.Run(mode, func(t *testing.T) {
			l := lab.New(t, 2)
			apply(t, l, mode, l.Masters...)
			o := lab.Observe(t)
			if mode == "route" {
				assert.False(t, o.Link, "route mode creates no interface")
				assert.Equal(t, "dev br0 src "+lab.NodeIP.String(), o.MainRoute)
			}
			hits := l.HitVIP(20, 3*time.Second)
			for _, h := range hits {
				require.NoError(t, h.Err)
				assert.Equal(t, lab.NodeIP, h.Src, "the master sees the node IP, not the VIP: no SNAT involved")
			}
			c := lab.Count(hits)
			assert.Equal(t, 10, c["master1"], "round robin: %v", c)
			assert.Equal(t, 10, c["master2"], "round robin: %v", c)
			assertNoIptables(t)
		})
	}
}

// assertNoIptables shows that no NAT rules are involved: the VM's kernel has
// no iptables/nftables modules loaded at all.
func assertNoIptables(t *testing.T) {
	t.Helper()
	mods, err := readFile("/proc/modules")
	require.NoError(t, err)
	for _, m := range []string{"iptable_nat", "nf_nat", "nf_tables", "ip_tables"} {
		assert.NotRegexp(t, "(?m)^"+m+" ", mods, "module %s is loaded", m)
	}
}

func TestRemovingAMasterMovesNewConnectionsToTheRest(t *testing.T) {
	l := lab.New(t, 3)
	apply(t, l, "link", l.Masters...)
	require.Len(t, lab.Count(l.HitVIP(9, 3*time.Second)), 3, "all three masters answer at first")

	a := apply(t, l, "link", l.Masters[0], l.Masters[2])
	require.Len(t, a.Changes, 1)
	assert.Equal(t, "delete", a.Changes[0].Op)
	assert.Equal(t, "real server", a.Changes[0].Kind)
	hits := l.HitVIP(20, 3*time.Second)
	c := lab.Count(hits)
	assert.Equal(t, 0, c["master2"], "no new connection reaches the removed master: %v", c)
	assert.Equal(t, 0, c[""], "no request failed: %v", c)
	assert.Equal(t, 10, c["master1"])
	assert.Equal(t, 10, c["master3"])
}

func TestDeleteLeavesNothingBehind(t *testing.T) {
	for _, mode := range []string{"link", "route"} {
		t.Run(mode, func(t *testing.T) {
			l := lab.New(t, 2)
			clean := lab.Observe(t)
			apply(t, l, mode, l.Masters...)
			require.NotEqual(t, clean, lab.Observe(t))
			_, err := l.Run("ipvs", "delete", "--vip", lab.VIPPort.String())
			require.NoError(t, err)
			assert.Equal(t, clean, lab.Observe(t), "no service, interface, address or route is left")
			_, err = net.InterfaceByName("vipctl0")
			assert.Error(t, err, "vipctl0 is gone")
			out, err := l.Run("ipvs", "delete", "--vip", lab.VIPPort.String())
			require.NoError(t, err, "deleting again is not an error")
			assert.Contains(t, out, "no changes")
		})
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	l := lab.New(t, 2)
	clean := lab.Observe(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--master", "10.10.0.11:0"}, `--master "10.10.0.11:0"`},
		{[]string{"--master", "10.10.0.11:70000"}, `--master "10.10.0.11:70000"`},
		{[]string{"--master", "10.10.0.11", "--master", "10.10.0.11:6443"}, "duplicate"},
		{[]string{"--master", lab.VIP.String()}, "same address as --vip"},
		{[]string{"--master", "10.10.0.11", "--scheduler", "fastest"}, `--scheduler "fastest"`},
		{[]string{"--master", "not-an-ip"}, `--master "not-an-ip"`},
		{[]string{"--master", "10.10.0.11", "--mode", "bgp"}, `--mode "bgp"`},
	} {
		args := append([]string{"ipvs", "apply", "--vip", lab.VIPPort.String()}, tc.args...)
		_, err := l.Run(args...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want, fmt.Sprint(tc.args))
		assert.Equal(t, clean, lab.Observe(t), "nothing changed after %v", tc.args)
	}
}

// The watchdog's cheap poll (one IPVS_CMD_GET_SERVICE) agrees with the
// kernel: absent, present with its scheduler, changed, deleted.
func TestPresenceCheckFollowsTheKernel(t *testing.T) {
	l := lab.New(t, 2)
	k, err := kernel.New(nil)
	require.NoError(t, err)
	defer k.Close()
	ctx := context.Background()
	present := func() (string, bool) {
		t.Helper()
		sched, ok, err := k.Present(ctx, lab.VIPPort)
		require.NoError(t, err)
		return sched, ok
	}
	_, ok := present()
	assert.False(t, ok, "no service yet")
	apply(t, l, "link", l.Masters...)
	sched, ok := present()
	assert.True(t, ok)
	assert.Equal(t, "rr", sched)
	_, err = l.Run(append(applyArgs(l, "link", l.Masters...), "--scheduler", "wrr")...)
	require.NoError(t, err)
	sched, ok = present()
	assert.True(t, ok)
	assert.Equal(t, "wrr", sched)
	_, err = l.Run("ipvs", "delete", "--vip", lab.VIPPort.String())
	require.NoError(t, err)
	_, ok = present()
	assert.False(t, ok, "deleted")
}
