package kernel

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The request is a struct inet_diag_req_v2: 56 bytes, ports in network
// order, the 16-byte addresses after them, no cookie. The VM e2e proves
// the kernel finds and resets the socket.
func TestInetDiagReq6Layout(t *testing.T) {
	local := netip.MustParseAddrPort("[fd00:10::1]:41234")
	remote := netip.MustParseAddrPort("[fd00:103:97::2]:6443")
	b := inetDiagReq6(local, remote)
	require.Len(t, b, 56)
	assert.Equal(t, byte(10), b[0], "AF_INET6")
	assert.Equal(t, byte(6), b[1], "IPPROTO_TCP")
	assert.Equal(t, []byte{0xa1, 0x12}, b[8:10], "source port 41234, big endian")
	assert.Equal(t, []byte{0x19, 0x2b}, b[10:12], "destination port 6443, big endian")
	src, dst := local.Addr().As16(), remote.Addr().As16()
	assert.Equal(t, src[:], b[12:28])
	assert.Equal(t, dst[:], b[28:44])
	assert.Equal(t, uint32(0xffffffff), binary.NativeEndian.Uint32(b[48:]))
	assert.Equal(t, uint32(0xffffffff), binary.NativeEndian.Uint32(b[52:]))
}
