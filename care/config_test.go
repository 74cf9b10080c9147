package care

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/health"
	"github.com/vipctl/vipctl/ipvs"
)

// The flags' rules and defaults (package careconfig, free of netlink) agree
// with the kernel's and the decision core's.
func TestCareconfigAgreesWithIPVSAndHealth(t *testing.T) {
	assert.Equal(t, ipvs.Schedulers, careconfig.Schedulers)
	assert.Equal(t, ipvs.DefaultScheduler, careconfig.DefaultScheduler)
	assert.Equal(t, ipvs.DefaultInterface, careconfig.DefaultInterface)
	assert.Equal(t, string(ipvs.ModeLink), string(careconfig.ModeLink))
	assert.Equal(t, string(ipvs.ModeRoute), string(careconfig.ModeRoute))
	h := health.DefaultConfig()
	c := careconfig.Default()
	assert.Equal(t, []any{h.Rise, h.Fall, h.Interval, h.HoldDown, h.MaxHoldDown, h.DrainTimeout},
		[]any{c.Rise, c.Fall, c.Interval, c.HoldDown, c.MaxHoldDown, c.DrainTimeout})
}

func TestFromConfig(t *testing.T) {
	c := careconfig.Default()
	c.Masters = testConfig(mA, mB).Masters
	_, err := FromConfig(c, "test")
	assert.ErrorContains(t, err, "--node-ip", "the node IP is required by then")
	c.NodeIP = testConfig(mA).VIP.NodeIP
	cfg, err := FromConfig(c, "test")
	if assert.NoError(t, err) {
		assert.Equal(t, c.EffectiveTimeout(), cfg.Timeout)
		assert.Equal(t, c.Interval, cfg.Health.Interval)
		assert.NoError(t, cfg.Validate())
	}
}
