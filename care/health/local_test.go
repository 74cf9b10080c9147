package health

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The local master gets LocalWeight in service, is drained like any
// other when it falls, and is back with its preference after Rise probes.
func TestLocalMasterPreferredAndDrainedLikeOthers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Local, cfg.LocalWeight = mB, 100
	f := newFixture(t, cfg, mA, mB, mC)
	for range cfg.Rise {
		f.probe(mA, ok()).probe(mB, ok()).probe(mC, ok())
	}
	assert.Equal(t, map[netip.AddrPort]int{mA: 1, mB: 100, mC: 1}, weights(f.reconcile()))
	snap := f.tr.Snapshot()
	require.Len(t, snap, 3)
	assert.True(t, snap[1].Local, "the local master is marked")
	assert.Equal(t, 100, snap[1].Weight)
	assert.False(t, snap[0].Local || snap[2].Local, "only the local one is marked")

	f.advance(cfg.Interval)
	for range cfg.Fall {
		f.probe(mB, refused())
	}
	p := f.reconcile()
	assert.Equal(t, 0, weights(p)[mB], "down: weight 0 like any other master")
	assert.Contains(t, p.Close, mB, "its connections are reset like any other's")

	f.advance(cfg.Interval)
	for range cfg.Rise {
		f.probe(mB, ok())
	}
	assert.Equal(t, 100, weights(f.reconcile())[mB], "back with its preference after %d probes", cfg.Rise)
}

func TestLocalWeightValidated(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Local, cfg.LocalWeight = mA, 70000
	_, err := NewTracker(cfg, []netip.AddrPort{mA})
	require.ErrorContains(t, err, "local weight 70000")
}
