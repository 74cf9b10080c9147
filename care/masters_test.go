package care

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var mD = netip.MustParseAddrPort("192.0.2.14:6443")

func TestUsableRejectsWhatCannotBeAMaster(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.14:6443":    "",
		"127.0.0.1:6443":     "a loopback address",
		"0.0.0.0:6443":       "the unspecified address",
		"10.103.97.2:6443":   "the VIP itself",
		"[2001:db8::1]:6443": "another address family",
		"169.254.0.1:6443":   "not a routable unicast address",
		"192.0.2.14:0":       "not an IP:port",
	} {
		got := usable(netip.MustParseAddrPort(addr), vip)
		if want == "" {
			assert.Empty(t, got, addr)
		} else {
			assert.Contains(t, got, want, addr)
		}
	}
}

func TestMasterListForgetsOnlyWhatIsAbsentAndUnhealthyLongEnough(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newMasterList(vip, []netip.AddrPort{mA}, time.Hour)
	added, bad := l.seen([]netip.AddrPort{mA, mB, netip.MustParseAddrPort("127.0.0.1:6443")}, now)
	assert.Equal(t, []netip.AddrPort{mB}, added, "the seed is known already")
	require.Len(t, bad, 1)
	assert.Equal(t, []netip.AddrPort{mA, mB}, l.masters())

	healthy := map[netip.AddrPort]bool{}
	h := func(a netip.AddrPort) bool { return healthy[a] }
	// mB leaves the API, and the seed mA is down: neither goes yet.
	l.seen([]netip.AddrPort{mA}, now)
	assert.Empty(t, l.sweep(now, true, h))
	_, _, forgetAt := l.info(mB)
	assert.Equal(t, now.Add(time.Hour), forgetAt)
	// Healthy again resets the clock; so does a listing naming it.
	healthy[mB] = true
	assert.Empty(t, l.sweep(now.Add(30*time.Minute), true, h))
	healthy[mB] = false
	assert.Empty(t, l.sweep(now.Add(31*time.Minute), true, h))
	assert.Empty(t, l.sweep(now.Add(90*time.Minute), true, h), "59 min absent and unhealthy: not yet")
	// An untrusted listing (API down) forgets nothing and restarts the clock.
	assert.Empty(t, l.sweep(now.Add(2*time.Hour), false, h))
	assert.Empty(t, l.sweep(now.Add(2*time.Hour), true, h))
	assert.Equal(t, []netip.AddrPort{mB}, l.sweep(now.Add(3*time.Hour), true, h))
	assert.Equal(t, []netip.AddrPort{mA}, l.masters(), "seeds are never forgotten")
	src, _, _ := l.info(mA)
	assert.Equal(t, SourceSeed, src)
}

func TestMasterListNeverForgetsWithForgetAfterZero(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newMasterList(vip, []netip.AddrPort{mA}, 0)
	l.seen([]netip.AddrPort{mB}, now)
	l.seen(nil, now)
	assert.Empty(t, l.sweep(now.Add(1000*time.Hour), true, func(netip.AddrPort) bool { return false }))
}

func TestFileStoreRoundTrip(t *testing.T) {
	s := FileStore{Path: filepath.Join(t.TempDir(), "masters.json")}
	got, err := s.Load()
	require.NoError(t, err, "a missing file is an empty list")
	assert.Empty(t, got)
	want := []StoredMaster{{Address: mB, LastSeen: time.Unix(1000, 0).UTC()}, {Address: mD}}
	require.NoError(t, s.Save(want))
	got, err = s.Load()
	require.NoError(t, err)
	assert.Equal(t, want, got)
	fi, err := os.Stat(s.Path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	require.NoError(t, os.WriteFile(s.Path, []byte("{"), 0o644))
	_, err = s.Load()
	assert.ErrorContains(t, err, s.Path)
}

// fakeDiscovery reports what the test pushes.
type fakeDiscovery struct{ ch chan listing }

func (f *fakeDiscovery) Discover(ctx context.Context, report func([]netip.AddrPort, error)) {
	for {
		select {
		case l := <-f.ch:
			report(l.addrs, l.err)
		case <-ctx.Done():
			return
		}
	}
}

type memStore struct {
	mu    sync.Mutex
	saved []StoredMaster
}

func (m *memStore) Load() ([]StoredMaster, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saved, nil
}

func (m *memStore) Save(ms []StoredMaster) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saved = ms
	return nil
}

func (m *memStore) addrs() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []netip.AddrPort
	for _, s := range m.saved {
		out = append(out, s.Address)
	}
	return out
}

func TestDiscoveredMasterJoinsAndIsSaved(t *testing.T) {
	disc, store := &fakeDiscovery{ch: make(chan listing)}, &memStore{}
	r := newRig(t, testConfig(mA, mB), func(d *Deps) { d.Discovery, d.Store = disc, store })
	r.run(t)
	disc.ch <- listing{addrs: []netip.AddrPort{mA, mB, mC, netip.MustParseAddrPort("127.0.0.1:6443")}}
	require.Eventually(t, func() bool { return r.weights()[mC] == 1 }, 5*time.Second, time.Millisecond, "the discovered master serves")
	assert.Equal(t, []netip.AddrPort{mC}, store.addrs(), "saved, without the seeds")
	assert.Equal(t, 1, r.logs.FilterMessage("ignoring an address the API lists").Len())
	var src string
	for _, m := range r.w.Status().Masters {
		if m.Address == mC {
			src = m.Source
			assert.False(t, m.LastSeenInAPI.IsZero())
		}
	}
	assert.Equal(t, SourceAPI, src)

	// The API fails, then lists only the seeds: mC stays (it is healthy).
	disc.ch <- listing{err: context.DeadlineExceeded}
	disc.ch <- listing{addrs: []netip.AddrPort{mA, mB}}
	r.prober.set(mC, refused())
	require.Eventually(t, func() bool { _, ok := r.weights()[mC]; return !ok }, 5*time.Second, time.Millisecond, "down: out of the kernel")
	assert.Contains(t, metricsText(t, r.w), `vipctl_care_discovery_errors_total{stage="api"} 1`)
	assert.Len(t, r.w.Status().Masters, 3, "down and absent, but --forget-after is 0: kept")
}

func TestRestoredMastersServeWithoutTheAPI(t *testing.T) {
	store := &memStore{saved: []StoredMaster{{Address: mC}, {Address: netip.MustParseAddrPort("10.103.97.2:6443")}}}
	r := newRig(t, testConfig(mA), func(d *Deps) { d.Discovery, d.Store = &fakeDiscovery{ch: make(chan listing)}, store })
	require.NoError(t, r.w.Once(context.Background()))
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mC: 1}, r.weights(), "the saved master serves; the VIP is ignored")
	assert.Equal(t, 1, r.logs.FilterMessage("ignoring a saved master").Len())
}

func TestForgottenMasterIsDrainedAndDropped(t *testing.T) {
	disc, store := &fakeDiscovery{ch: make(chan listing)}, &memStore{}
	cfg := testConfig(mA)
	cfg.ForgetAfter = 300 * time.Millisecond
	r := newRig(t, cfg, func(d *Deps) { d.Discovery, d.Store = disc, store })
	r.run(t)
	disc.ch <- listing{addrs: []netip.AddrPort{mA, mD}}
	require.Eventually(t, func() bool { return r.weights()[mD] == 1 }, 5*time.Second, time.Millisecond)
	disc.ch <- listing{addrs: []netip.AddrPort{mA}}
	r.prober.set(mD, refused())
	require.Eventually(t, func() bool { return len(r.w.Status().Masters) == 1 }, 10*time.Second, 5*time.Millisecond, "forgotten")
	assert.Empty(t, store.addrs())
	_, ok := r.weights()[mD]
	assert.False(t, ok, "out of the kernel")
	assert.Equal(t, 1, r.logs.FilterMessageSnippet("master forgotten").Len())
	assert.NotContains(t, metricsText(t, r.w), `master="`+mD.String()+`"`, "its series are dropped")
}
