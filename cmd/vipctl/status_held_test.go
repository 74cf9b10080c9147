package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/ipvs"
)

// A healthy master kept out by the flap hold-down shows as held-down, with
// the watchdog's reason under the table.
func TestStatusHeldDown(t *testing.T) {
	st := watchdogStatus()
	b := &st.Masters[1]
	b.Successes, b.Flaps, b.HoldUntil, b.HeldDown = 2, 3, stNow.Add(7*time.Second), true
	b.HeldReason = "healthy but held down until 2026-11-21T12:00:07Z after 3 recent falls; back then if it stays healthy, or as soon as fewer than 2 of the 3 masters serve"
	w := &statusWorld{watchdog: st, kernel: kernelWith(t, ipvs.RealServer{Addr: stA, Weight: 1})}
	out, err := runStatusCmd(t, w)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 6, out)
	assert.Regexp(t, `^192\.0\.2\.12:6443\s+held-down\s+1m0s\s+removed\s+absent`, lines[4])
	assert.Equal(t, "192.0.2.12:6443: "+b.HeldReason, lines[5])

	out, err = runStatusCmd(t, w, "-o", "json")
	require.NoError(t, err)
	assert.Contains(t, out, `"heldDown": true`)
	assert.Contains(t, out, `"heldDownReason": "healthy but held down until 2026-11-21T12:00:07Z after 3 recent falls`)
}
