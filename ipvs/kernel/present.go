package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPVS generic netlink constants (include/uapi/linux/ip_vs.h).
const (
	ipvsGenlVersion      = 1
	ipvsCmdGetService    = 4
	ipvsCmdAttrService   = 1
	ipvsSvcAttrAF        = 1
	ipvsSvcAttrProtocol  = 2
	ipvsSvcAttrAddr      = 3
	ipvsSvcAttrPort      = 4
	ipvsSvcAttrSchedName = 6
	nlaHeaderLen         = 4
	genlHeaderLen        = 4
	nlaTypeMask          = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

// presence answers "does this virtual server exist?" with one generic
// netlink request and one reply on a socket of its own: a pre-encoded
// IPVS_CMD_GET_SERVICE for one service, without the dump of its real
// servers that Get reads. The resync poll asks it ten times a second, so it
// allocates nothing per call and bypasses Go's netpoller (the kernel
// answers a generic netlink request before sendto returns).
type presence struct {
	mu     sync.Mutex
	fd     int
	family uint16
	seq    uint32
	reqs   map[netip.AddrPort][]byte
	buf    []byte
}

func newPresence() (*presence, error) {
	fam, err := netlink.GenlFamilyGet("IPVS")
	if err != nil {
		return nil, fmt.Errorf("look up the IPVS generic netlink family: %w", err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("open a generic netlink socket: %w", err)
	}
	// A reply is queued before sendto returns; the timeout only bounds a
	// kernel that never answers.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set the generic netlink socket's receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind a generic netlink socket: %w", err)
	}
	return &presence{fd: fd, family: fam.ID, reqs: map[netip.AddrPort][]byte{}, buf: make([]byte, 8192)}, nil
}

func (p *presence) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// present reports whether the TCP virtual server vip exists, and its
// scheduler when it does.
func (p *presence) present(vip netip.AddrPort) (bool, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return false, "", errors.New("IPVS presence socket closed")
	}
	req, ok := p.reqs[vip]
	if !ok {
		req = getServiceRequest(p.family, vip)
		p.reqs[vip] = req
	}
	p.seq++
	binary.NativeEndian.PutUint32(req[8:12], p.seq)
	if err := unix.Sendto(p.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, "", fmt.Errorf("send IPVS_CMD_GET_SERVICE for %s: %w", vip, err)
	}
	for {
		n, _, err := unix.Recvfrom(p.fd, p.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, "", fmt.Errorf("receive the IPVS answer for %s: %w", vip, err)
		}
		found, sched, mine, err := parseGetServiceReply(p.buf[:n], p.seq, p.family)
		if mine {
			return found, sched, err
		}
		// A late answer to an earlier, timed-out request: read on.
	}
}

// getServiceRequest encodes IPVS_CMD_GET_SERVICE for the TCP service vip
// (sequence number left 0, set per send).
func getServiceRequest(family uint16, vip netip.AddrPort) []byte {
	af, addr := uint16(unix.AF_INET), make([]byte, 16)
	if vip.Addr().Is6() {
		af = unix.AF_INET6
	}
	copy(addr, vip.Addr().AsSlice())
	var svc []byte
	svc = appendAttr(svc, ipvsSvcAttrAF, binary.NativeEndian.AppendUint16(nil, af))
	svc = appendAttr(svc, ipvsSvcAttrProtocol, binary.NativeEndian.AppendUint16(nil, unix.IPPROTO_TCP))
	svc = appendAttr(svc, ipvsSvcAttrAddr, addr)
	svc = appendAttr(svc, ipvsSvcAttrPort, binary.BigEndian.AppendUint16(nil, vip.Port()))
	payload := appendAttr([]byte{ipvsCmdGetService, ipvsGenlVersion, 0, 0}, ipvsCmdAttrService|unix.NLA_F_NESTED, svc)
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:6], family)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST)
	return append(msg, payload...)
}

// appendAttr appends a netlink attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, val []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(nlaHeaderLen+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// parseGetServiceReply reads the netlink messages in b. mine tells whether
// one of them answers request seq; found whether it described the service
// (an IPVS message) rather than an error, and sched its scheduler. ESRCH,
// the kernel's "no such service", is not an error.
func parseGetServiceReply(b []byte, seq uint32, family uint16) (found bool, sched string, mine bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, "", true, fmt.Errorf("malformed netlink message (length %d of %d bytes)", l, len(b))
		}
		typ, s := binary.NativeEndian.Uint16(b[4:6]), binary.NativeEndian.Uint32(b[8:12])
		body := b[unix.NLMSG_HDRLEN:l]
		b = b[min(len(b), (l+3)&^3):]
		if s != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return false, "", true, errors.New("short netlink error message")
			}
			errno := -int32(binary.NativeEndian.Uint32(body[0:4]))
			if errno == 0 || errno == int32(unix.ESRCH) || errno == int32(unix.ENOENT) {
				return false, "", true, nil
			}
			return false, "", true, fmt.Errorf("IPVS_CMD_GET_SERVICE: %w", syscall.Errno(errno))
		case family:
			return true, schedName(body), true, nil
		}
	}
	return false, "", false, nil
}

// schedName finds the scheduler attribute in a GET_SERVICE answer's body
// (generic netlink header, then the nested service attribute).
func schedName(body []byte) string {
	if len(body) < genlHeaderLen {
		return ""
	}
	for attrs := body[genlHeaderLen:]; len(attrs) >= nlaHeaderLen; {
		l, typ := int(binary.NativeEndian.Uint16(attrs[0:2])), binary.NativeEndian.Uint16(attrs[2:4])&nlaTypeMask
		if l < nlaHeaderLen || l > len(attrs) {
			return ""
		}
		if typ == ipvsCmdAttrService {
			for in := attrs[nlaHeaderLen:l]; len(in) >= nlaHeaderLen; {
				il, it := int(binary.NativeEndian.Uint16(in[0:2])), binary.NativeEndian.Uint16(in[2:4])&nlaTypeMask
				if il < nlaHeaderLen || il > len(in) {
					return ""
				}
				if it == ipvsSvcAttrSchedName {
					v := in[nlaHeaderLen:il]
					for len(v) > 0 && v[len(v)-1] == 0 {
						v = v[:len(v)-1]
					}
					return string(v)
				}
				in = in[min(len(in), (il+3)&^3):]
			}
		}
		attrs = attrs[min(len(attrs), (l+3)&^3):]
	}
	return ""
}

// Present reports whether the virtual server vip exists in the kernel, and
// its scheduler: one netlink round trip, without reading its real servers.
// The watchdog's resync poll uses it to notice a flush or a changed
// scheduler cheaply; anything else calls for a full Get.
func (k *Kernel) Present(ctx context.Context, vip netip.AddrPort) (scheduler string, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	if k.presence == nil {
		return "", false, errors.New("IPVS presence check unavailable")
	}
	ok, scheduler, err = k.presence.present(vip)
	return scheduler, ok, err
}
