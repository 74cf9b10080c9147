package probe

import (
	"crypto/tls"
	"net"

	"golang.org/x/sys/unix"
)

// retransmits returns how many TCP segments the kernel has retransmitted
// on conn since it was opened (TCP_INFO tcpi_total_retrans), SYNs
// included; ok is false when conn is not a TCP connection or the kernel
// does not say.
func retransmits(conn net.Conn) (n uint32, ok bool) {
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		conn = tc.NetConn()
	}
	tcp, isTCP := conn.(*net.TCPConn)
	if !isTCP {
		return 0, false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false
	}
	return info.Total_retrans, true
}
