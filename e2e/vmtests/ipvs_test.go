package vmtests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/ipvs/kernel"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func applyArgs(l *lab.Lab, mode string, masters ...*lab.Master) []string {
	args := []string{"ipvs", "apply", "--vip", l.VIPPort().String(), "--mode", mode, "-o", "json"}
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
	eachFamilyAndMode(t, func(t *testing.T, fam lab.Family, mode string) {
		l := lab.NewIn(t, fam, 3)
		first := apply(t, l, mode, l.Masters...)
		require.NotEmpty(t, first.Changes)
		s1 := l.Observe(t)
		second := apply(t, l, mode, l.Masters...)
		assert.Empty(t, second.Changes, "the second apply reports no change")
		assert.Equal(t, s1, l.Observe(t), "the kernel state is the same")
		out, err := l.Run("ipvs", "apply", "--vip", l.VIPPort().String(), "--mode", mode,
			"--master", l.Masters[0].Addr.String(), "--master", l.Masters[1].Addr.String(), "--master", l.Masters[2].Addr.String())
		require.NoError(t, err)
		assert.Contains(t, out, "no changes", "the text output says so too")
	})
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
	eachFamilyAndMode(t, func(t *testing.T, fam lab.Family, mode string) {
		l := lab.NewIn(t, fam, 2)
		apply(t, l, mode, l.Masters...)
		o := l.Observe(t)
		if mode == "route" {
			assert.False(t, o.Link, "route mode creates no interface")
			assert.Equal(t, "dev br0 src "+l.NodeIP.String(), o.MainRoute)
		} else {
			assert.Equal(t, l.NodeIP.String(), o.LocalSrc, "one local route to the VIP, with the node IP as source")
		}
		hits := l.HitVIP(20, 3*time.Second)
		for _, h := range hits {
			require.NoError(t, h.Err)
			assert.Equal(t, l.NodeIP, h.Src, "the master sees the node IP, not the VIP: no SNAT involved")
		}
		c := lab.Count(hits)
		assert.Equal(t, 10, c["master1"], "round robin: %v", c)
		assert.Equal(t, 10, c["master2"], "round robin: %v", c)
		assertNoIptables(t)
	})
}

// eachFamily runs f as a subtest per IP family ("ipv4", "ipv6").
func eachFamily(t *testing.T, f func(t *testing.T, fam lab.Family)) {
	for _, fam := range lab.Families {
		t.Run(fam.Name, func(t *testing.T) { f(t, fam) })
	}
}

// eachFamilyAndMode runs f as a subtest per IP family and VIP mode
// ("ipv4/link" ... "ipv6/route").
func eachFamilyAndMode(t *testing.T, f func(t *testing.T, fam lab.Family, mode string)) {
	eachFamily(t, func(t *testing.T, fam lab.Family) {
		for _, mode := range []string{"link", "route"} {
			t.Run(mode, func(t *testing.T) { f(t, fam, mode) })
		}
	})
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
	eachFamilyAndMode(t, func(t *testing.T, fam lab.Family, mode string) {
		l := lab.NewIn(t, fam, 2)
		clean := l.Observe(t)
		apply(t, l, mode, l.Masters...)
		require.NotEqual(t, clean, l.Observe(t))
		_, err := l.Run("ipvs", "delete", "--vip", l.VIPPort().String())
		require.NoError(t, err)
		assert.Equal(t, clean, l.Observe(t), "no service, interface, address or route is left")
		_, err = net.InterfaceByName("vipctl0")
		assert.Error(t, err, "vipctl0 is gone")
		out, err := l.Run("ipvs", "delete", "--vip", l.VIPPort().String())
		require.NoError(t, err, "deleting again is not an error")
		assert.Contains(t, out, "no changes")
	})
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
		{[]string{"--master", "10.10.0.11", "--master", "10.10.0.11:6443"}, "--master 10.10.0.11:6443: listed twice"},
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

// A node IP that has just been added is tentative while IPv6 duplicate
// address detection runs (about a second), and the kernel refuses it as a
// route's source: apply waits for DAD rather than fail. Both modes wait at
// the same place (EnsureVIP, before either); route mode is run here.
func TestApplyWaitsForIPv6DAD(t *testing.T) {
	for _, mode := range []string{"route"} {
		t.Run(mode, func(t *testing.T) {
			l := lab.NewIn(t, lab.IPv6, 2)
			br, err := netlink.LinkByName("br0")
			require.NoError(t, err)
			fresh := netip.MustParseAddr("fd00:10::2")
			require.NoError(t, netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: fresh.AsSlice(), Mask: net.CIDRMask(64, 128)}}))
			addrs, err := netlink.AddrList(br, netlink.FAMILY_V6)
			require.NoError(t, err)
			tentative := false
			for _, a := range addrs {
				if a.IP.Equal(fresh.AsSlice()) {
					tentative = a.Flags&unix.IFA_F_TENTATIVE != 0
				}
			}
			require.True(t, tentative, "the new address is tentative while DAD runs")
			_, err = l.Run(append(applyArgs(l, mode, l.Masters...), "--node-ip", fresh.String())...)
			require.NoError(t, err)
			for _, h := range l.HitVIP(4, 3*time.Second) {
				require.NoError(t, h.Err)
				assert.Equal(t, fresh, h.Src, "the masters see the new node IP")
			}
		})
	}
}
