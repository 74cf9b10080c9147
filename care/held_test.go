package care

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"
)

// A healthy master kept out by the flap hold-down says so in /status and
// in vipctl_care_held_down_seconds, and is put back as soon as fewer than a
// majority of the masters serve.
func TestHeldDownInStatusAndMetrics(t *testing.T) {
	cfg := testConfig(mA, mB, mC)
	clock := testingclock.NewFakeClock(time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC))
	r := newRig(t, cfg, func(d *Deps) { d.Clock = clock })
	require.NoError(t, r.w.Once(context.Background()))
	// A falls twice within a few seconds, then answers healthily.
	for range 2 {
		clock.Step(time.Second)
		r.w.observe(mA, refused())
		r.w.observe(mA, refused())
		clock.Step(time.Second)
		r.w.observe(mA, healthy())
		clock.Step(time.Second)
		r.w.observe(mA, healthy())
	}
	st := r.w.Status().Masters[0]
	require.True(t, st.HeldDown, "healthy but held down")
	assert.Equal(t, 2, st.Flaps)
	assert.Contains(t, st.HeldReason, "after 2 recent falls")
	left := st.HoldUntil.Sub(clock.Now())
	require.Positive(t, left)

	srv := httptest.NewServer(r.w.Handler())
	defer srv.Close()
	metrics := func() string {
		resp, err := http.Get(srv.URL + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	assert.Contains(t, metrics(), `vipctl_care_held_down_seconds{master="192.0.2.11:6443"} `+strconv.FormatFloat(left.Seconds(), 'g', -1, 64))
	assert.Contains(t, metrics(), `vipctl_care_held_down_seconds{master="192.0.2.12:6443"} 0`)

	// B falls: only C would serve, so A is back at once.
	r.w.observe(mB, refused())
	changed := r.w.observe(mB, refused())
	assert.True(t, changed, "a reconcile follows")
	require.NoError(t, r.w.reconcile(context.Background(), "probe", false))
	st = r.w.Status().Masters[0]
	assert.False(t, st.HeldDown)
	assert.Equal(t, 1, r.weights()[mA], "A back in service")
	assert.Contains(t, metrics(), `vipctl_care_held_down_seconds{master="192.0.2.11:6443"} 0`)
}
