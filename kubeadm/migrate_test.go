package kubeadm

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/ipvs"
)

// migrateWorld is a master joined the old way: the name maps to its own
// address, no VIP, no watchdog; it is the second of three masters.
func migrateWorld(t *testing.T) (*world, JoinOptions) {
	w := newWorld(t)
	_, err := w.hosts.File.Set(context.Background(), ControlPlaneHost, testNodeIP)
	require.NoError(t, err)
	o := w.masterOpts()
	self := netip.AddrPortFrom(testNodeIP, 6443)
	o.Service = desired(testMasters[0], self, testMasters[2])
	o.KubeadmArgs = nil
	return w, o
}

// verifyDial makes the fake's Dial call f when the VIP is dialled.
type verifyDial struct {
	*fakeInspector
	f func() error
}

func (v verifyDial) Dial(ctx context.Context, a netip.AddrPort, d time.Duration) error {
	if a == testVIP {
		return v.f()
	}
	return v.fakeInspector.Dial(ctx, a, d)
}

func TestMigrateMaster(t *testing.T) {
	w, o := migrateWorld(t)
	var atVerify []hosts.Mapping
	var serviceAtVerify string
	j := w.joiner()
	j.Inspector = verifyDial{w.insp, func() error {
		atVerify = w.hostsMapping()
		serviceAtVerify = w.state().Service
		return nil
	}}
	require.NoError(t, j.MigrateMaster(context.Background(), o))

	require.Len(t, atVerify, 1)
	assert.Equal(t, testNodeIP, atVerify[0].Addr, "the name keeps its old address until the VIP answers")
	assert.NotEmpty(t, serviceAtVerify, "the VIP is in place first")
	after := w.hostsMapping()
	require.Len(t, after, 1)
	assert.Equal(t, testVIP.Addr(), after[0].Addr, "then the name maps to the VIP")
	assert.Equal(t, 1, w.hosts.writes, "the hosts file is written once, last")
	st, err := w.dp.Get(context.Background(), testVIP)
	require.NoError(t, err)
	weights := map[netip.AddrPort]int{}
	for _, rs := range st.RealServers {
		weights[rs.Addr] = rs.Weight
	}
	assert.Equal(t, map[netip.AddrPort]int{testMasters[0]: 1, netip.AddrPortFrom(testNodeIP, 6443): ipvs.LocalWeight, testMasters[2]: 1}, weights,
		"this master's own apiserver is preferred")
	s := w.state()
	assert.Equal(t, testManifest, s.Files["etc/kubernetes/manifests/vipctl-care.yaml"])
	assert.NotEmpty(t, s.Files["etc/modules-load.d/vipctl.conf"])
	assert.Empty(t, w.runner.kubeadmCalls(), "kubeadm is not run")
}

func TestMigrateMasterFailuresLeaveTheNodeAsBefore(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(w *world, o *JoinOptions, j *Joiner)
		step string
		want string
	}{
		{"the VIP does not answer", func(w *world, _ *JoinOptions, j *Joiner) {
			j.Inspector = verifyDial{w.insp, func() error { return errors.New("connection refused") }}
		}, StepVerify, "connect to the VIP 10.103.97.2:6443"},
		{"hosts write fails", func(w *world, _ *JoinOptions, _ *Joiner) {
			w.hosts.setErr, w.hosts.setWritesThenFails = errors.New("sync failed"), true
		}, StepHosts, "sync failed"},
		{"manifest write fails", func(w *world, _ *JoinOptions, _ *Joiner) {
			w.files.writeErr[w.manifestPath()] = errors.New("read-only file system")
		}, StepManifest, "read-only file system"},
		{"own apiserver down", func(w *world, _ *JoinOptions, _ *Joiner) {
			w.insp.unreachable[netip.AddrPortFrom(testNodeIP, 6443)] = true
		}, StepPreflight, "this master's own apiserver does not accept connections"},
		{"not among the masters", func(_ *world, o *JoinOptions, _ *Joiner) {
			o.Service = desired(testMasters...)
		}, StepValidate, "none is this master's own address 192.0.2.20"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, o := migrateWorld(t)
			before := w.state()
			j := w.joiner()
			tc.edit(w, &o, j)
			err := j.MigrateMaster(context.Background(), o)
			var je *JoinError
			require.ErrorAs(t, err, &je)
			assert.Equal(t, tc.step, je.Step)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), `migrate failed at step "`+tc.step+`"`)
			assert.Equal(t, before, w.state(), "the node is as before: %v", err)
		})
	}
}
