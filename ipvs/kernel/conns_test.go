package kernel

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConnTable(t *testing.T) {
	in := strings.Join([]string{
		"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData",
		"TCP 0A0A0001 A1B2 0A676102 192B 0A0A000B 192B ESTABLISHED 899",
		"TCP 0A0A0001 A1B3 0A676102 192B 0A0A000C 192B TIME_WAIT   100",
		"TCP 2001:0db8:0000:0000:0000:0000:0000:0001 1F90 2001:0db8:0000:0000:0000:0000:0000:0002 192B 2001:0db8:0000:0000:0000:0000:0000:000b 192B ESTABLISHED 10",
		"garbage line",
	}, "\n")
	conns, err := ParseConnTable(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, conns, 3)
	assert.Equal(t, Conn{Protocol: "TCP", From: netip.MustParseAddrPort("10.10.0.1:41394"), To: netip.MustParseAddrPort("10.103.97.2:6443"),
		Dest: netip.MustParseAddrPort("10.10.0.11:6443"), State: "ESTABLISHED"}, conns[0])
	assert.Equal(t, "TIME_WAIT", conns[1].State)
	assert.Equal(t, netip.MustParseAddrPort("[2001:db8::b]:6443"), conns[2].Dest)
	assert.True(t, closable(conns[0].State))
	assert.False(t, closable(conns[1].State))
}
