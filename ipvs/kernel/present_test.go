package kernel

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// attrs decodes a run of netlink attributes.
func attrs(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	out := map[uint16][]byte{}
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), 4)
		l, typ := int(binary.NativeEndian.Uint16(b[0:2])), binary.NativeEndian.Uint16(b[2:4])
		require.GreaterOrEqual(t, l, 4)
		require.LessOrEqual(t, l, len(b))
		out[typ&nlaTypeMask] = b[4:l]
		b = b[min(len(b), (l+3)&^3):]
	}
	return out
}

func TestGetServiceRequest(t *testing.T) {
	for _, tc := range []struct {
		vip  string
		af   uint16
		addr []byte
	}{
		{"10.103.97.2:6443", unix.AF_INET, append([]byte{10, 103, 97, 2}, make([]byte, 12)...)},
		{"[fd00::2]:443", unix.AF_INET6, netip.MustParseAddr("fd00::2").AsSlice()},
	} {
		req := getServiceRequest(0x1c, netip.MustParseAddrPort(tc.vip))
		require.Equal(t, len(req), int(binary.NativeEndian.Uint32(req[0:4])), "length")
		assert.EqualValues(t, 0x1c, binary.NativeEndian.Uint16(req[4:6]), "family")
		assert.EqualValues(t, unix.NLM_F_REQUEST, binary.NativeEndian.Uint16(req[6:8]), "a request, no dump, no ack")
		body := req[unix.NLMSG_HDRLEN:]
		assert.Equal(t, []byte{ipvsCmdGetService, ipvsGenlVersion, 0, 0}, body[:4])
		top := attrs(t, body[4:])
		svc := attrs(t, top[ipvsCmdAttrService])
		assert.Equal(t, tc.af, binary.NativeEndian.Uint16(svc[ipvsSvcAttrAF]), tc.vip)
		assert.EqualValues(t, unix.IPPROTO_TCP, binary.NativeEndian.Uint16(svc[ipvsSvcAttrProtocol]))
		assert.Equal(t, tc.addr, svc[ipvsSvcAttrAddr])
		assert.Equal(t, netip.MustParseAddrPort(tc.vip).Port(), binary.BigEndian.Uint16(svc[ipvsSvcAttrPort]), "port in network order")
	}
}

// message builds one netlink message.
func message(typ uint16, seq uint32, body []byte) []byte {
	m := make([]byte, unix.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(m[0:4], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(m[4:6], typ)
	binary.NativeEndian.PutUint32(m[8:12], seq)
	m = append(m, body...)
	for len(m)%4 != 0 {
		m = append(m, 0)
	}
	return m
}

func errMessage(seq uint32, errno syscall.Errno) []byte {
	body := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	return message(unix.NLMSG_ERROR, seq, append(body, make([]byte, unix.NLMSG_HDRLEN)...))
}

func serviceMessage(family uint16, seq uint32, sched string) []byte {
	svc := appendAttr(nil, ipvsSvcAttrAF, binary.NativeEndian.AppendUint16(nil, unix.AF_INET))
	svc = appendAttr(svc, ipvsSvcAttrSchedName, append([]byte(sched), 0))
	return message(family, seq, appendAttr([]byte{ipvsCmdGetService, 1, 0, 0}, ipvsCmdAttrService|unix.NLA_F_NESTED, svc))
}

func TestParseGetServiceReply(t *testing.T) {
	const fam, seq = 0x1c, 7
	for name, tc := range map[string]struct {
		in          []byte
		found, mine bool
		sched, err  string
	}{
		"service":                {in: serviceMessage(fam, seq, "wrr"), found: true, mine: true, sched: "wrr"},
		"no such service":        {in: errMessage(seq, unix.ESRCH), mine: true},
		"permission denied":      {in: errMessage(seq, unix.EPERM), mine: true, err: "operation not permitted"},
		"late answer, then ours": {in: append(serviceMessage(fam, seq-1, "rr"), errMessage(seq, unix.ESRCH)...), mine: true},
		"only a late answer":     {in: serviceMessage(fam, seq-1, "rr")},
		"malformed length":       {in: []byte{200, 0, 0, 0, 2, 0, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0}, mine: true, err: "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			found, sched, mine, err := parseGetServiceReply(tc.in, seq, fam)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, tc.found, found, "found")
			assert.Equal(t, tc.mine, mine, "mine")
			assert.Equal(t, tc.sched, sched)
		})
	}
}
