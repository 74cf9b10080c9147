package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/ipvs"
)

// parseCareLocal is parseCare on a node whose own addresses are local.
func parseCareLocal(t *testing.T, local []string, args ...string) (careSetup, error) {
	t.Helper()
	w := newCareWorld()
	env := w.careEnv()
	env.isLocal = func(_ context.Context, a netip.Addr) (bool, error) {
		for _, l := range local {
			if a == netip.MustParseAddr(l) {
				return true, nil
			}
		}
		return false, nil
	}
	var f careFlags
	cmd := &cobra.Command{Use: "care"}
	f.register(cmd.Flags())
	require.NoError(t, cmd.ParseFlags(args))
	return f.build(context.Background(), env)
}

func TestCareDetectsTheLocalMaster(t *testing.T) {
	ca := testCA(t)
	args := []string{"--master", "192.0.2.11", "--master", "192.0.2.12", "--ca-file", ca, "--node-ip", "192.0.2.12"}
	s, err := parseCareLocal(t, []string{"192.0.2.12"}, args...)
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddrPort("192.0.2.12:6443"), s.cfg.Health.Local, "the master on one of the node's addresses is local, no flag needed")
	assert.Equal(t, ipvs.LocalWeight, s.cfg.Health.LocalWeight)
	assert.Equal(t, ipvs.MasterScheduler, s.cfg.Service.Scheduler, "rr ignores weights: a master uses wrr")
	require.Len(t, s.warnings, 1)
	assert.Contains(t, s.warnings[0], "192.0.2.12:6443 is this node's own apiserver")

	s, err = parseCareLocal(t, []string{"192.0.2.12"}, append(args, "--scheduler", "wlc")...)
	require.NoError(t, err)
	assert.Equal(t, "wlc", s.cfg.Service.Scheduler, "a weighted scheduler the user chose is kept")

	s, err = parseCareLocal(t, []string{"192.0.2.20"}, "--master", "192.0.2.11", "--ca-file", ca, "--node-ip", "192.0.2.20")
	require.NoError(t, err)
	assert.False(t, s.cfg.Health.Local.IsValid(), "a worker has no local master")
	assert.Equal(t, "rr", s.cfg.Service.Scheduler)
}

func TestStatusLocalLine(t *testing.T) {
	a := netip.MustParseAddrPort("192.0.2.12:6443")
	ms := []carestatus.Master{{Address: netip.MustParseAddrPort("192.0.2.11:6443"), Membership: carestatus.InService, Weight: 1},
		{Address: a, Local: true, Membership: carestatus.InService, Weight: ipvs.LocalWeight, Kernel: &carestatus.Kernel{Weight: ipvs.LocalWeight}}}
	assert.Equal(t, "local apiserver: 192.0.2.12:6443; traffic local: yes", localLine(ms))
	ms[1].Membership, ms[1].Weight, ms[1].Phase = carestatus.Draining, 0, carestatus.Down
	assert.True(t, strings.HasPrefix(localLine(ms), "local apiserver: 192.0.2.12:6443; traffic local: no"), localLine(ms))
	assert.Empty(t, localLine(ms[:1]), "a worker's status has no local line")
}

func TestCareRefusesRouteModeWithALocalMaster(t *testing.T) {
	ca := testCA(t)
	_, err := parseCareLocal(t, []string{"192.0.2.12"}, "--master", "192.0.2.11", "--master", "192.0.2.12", "--ca-file", ca,
		"--node-ip", "192.0.2.12", "--mode", "route")
	require.ErrorContains(t, err, "--mode route: --master 192.0.2.12:6443 is this node's own apiserver")
	_, err = parseCareLocal(t, nil, "--master", "192.0.2.11", "--ca-file", ca, "--node-ip", "192.0.2.20", "--mode", "route")
	require.NoError(t, err, "a worker may use route mode")
}
