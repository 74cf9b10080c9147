package kernel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// destroySocket resets the local TCP socket from local to remote with
// SOCK_DESTROY (tcp_diag, CAP_NET_ADMIN). netlink.SocketDestroy handles
// IPv4 only (it answers ErrNotImplemented for IPv6), so IPv6 sockets get
// the same request built here.
func destroySocket(local, remote netip.AddrPort) error {
	if local.Addr().Is4() {
		return netlink.SocketDestroy(&net.TCPAddr{IP: net.IP(local.Addr().AsSlice()), Port: int(local.Port())},
			&net.TCPAddr{IP: net.IP(remote.Addr().AsSlice()), Port: int(remote.Port())})
	}
	req := nl.NewNetlinkRequest(nl.SOCK_DESTROY, unix.NLM_F_ACK)
	req.AddRawData(inetDiagReq6(local, remote))
	if _, err := req.Execute(unix.NETLINK_INET_DIAG, 0); err != nil {
		return fmt.Errorf("SOCK_DESTROY %s -> %s: %w", local, remote, err)
	}
	return nil
}

// inetDiagReq6 is a struct inet_diag_req_v2 (linux/inet_diag.h) naming
// the IPv6 TCP socket local -> remote: family, protocol, ext, pad, states,
// then inet_diag_sockid: ports (network order), source and destination
// addresses (16 bytes each), interface, cookie (host order; no cookie).
func inetDiagReq6(local, remote netip.AddrPort) []byte {
	b := make([]byte, 56)
	b[0], b[1] = unix.AF_INET6, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], 0xfff) // every TCP state
	binary.BigEndian.PutUint16(b[8:], local.Port())
	binary.BigEndian.PutUint16(b[10:], remote.Port())
	src, dst := local.Addr().As16(), remote.Addr().As16()
	copy(b[12:28], src[:])
	copy(b[28:44], dst[:])
	binary.NativeEndian.PutUint32(b[44:], 0) // any interface
	binary.NativeEndian.PutUint32(b[48:], nl.TCPDIAG_NOCOOKIE)
	binary.NativeEndian.PutUint32(b[52:], nl.TCPDIAG_NOCOOKIE)
	return b
}
