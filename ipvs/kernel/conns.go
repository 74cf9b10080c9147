package kernel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Conn is one entry of the kernel's IPVS connection table.
type Conn struct {
	Protocol string         // "TCP"
	From     netip.AddrPort // the client
	To       netip.AddrPort // the virtual service
	Dest     netip.AddrPort // the real server
	State    string         // "ESTABLISHED", "SYN_RECV", ...
}

// ParseConnTable parses /proc/net/ip_vs_conn. IPv4 addresses there are
// hexadecimal (0A0A0001), IPv6 ones are printed in colon form; ports are
// hexadecimal. Lines that do not parse are skipped.
func ParseConnTable(r io.Reader) ([]Conn, error) {
	var out []Conn
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		from, err1 := parseConnEndpoint(f[1], f[2])
		to, err2 := parseConnEndpoint(f[3], f[4])
		dest, err3 := parseConnEndpoint(f[5], f[6])
		if err := errors.Join(err1, err2, err3); err != nil {
			continue
		}
		out = append(out, Conn{Protocol: f[0], From: from, To: to, Dest: dest, State: f[7]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read IPVS connection table: %w", err)
	}
	return out, nil
}

func parseConnEndpoint(addr, port string) (netip.AddrPort, error) {
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var a netip.Addr
	if strings.Contains(addr, ":") {
		a, err = netip.ParseAddr(addr)
		if err != nil {
			return netip.AddrPort{}, err
		}
	} else {
		b, err := hex.DecodeString(addr)
		if err != nil || len(b) != 4 {
			return netip.AddrPort{}, fmt.Errorf("bad address %q", addr)
		}
		a = netip.AddrFrom4([4]byte(b)) // printed as %08X of the address in network order
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// closable reports whether a connection in this IPVS state still has a
// socket worth resetting on the client side.
func closable(state string) bool {
	switch state {
	case "ESTABLISHED", "SYN_SENT", "SYN_RECV", "CLOSE_WAIT", "FIN_WAIT":
		return true
	}
	return false
}

// CloseConnections implements ipvs.ConnCloser. It finds, in the kernel's IPVS
// connection table, the connections from vip to realServer, and destroys
// the local client sockets among them (SOCK_DESTROY): the client sees
// ECONNABORTED at once and reconnects through the VIP, where IPVS picks a
// live real server. Connections from other hosts or pods are not local
// sockets and are left to expire. It returns how many sockets it reset.
func (k *Kernel) CloseConnections(ctx context.Context, vip, realServer netip.AddrPort) (int, error) {
	data, err := os.ReadFile(k.connTable)
	if err != nil {
		return 0, fmt.Errorf("real server %s: read %s: %w", realServer, k.connTable, err)
	}
	conns, err := ParseConnTable(bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	local, err := localAddrs()
	if err != nil {
		return 0, fmt.Errorf("real server %s: %w", realServer, err)
	}
	closed := 0
	var errs []error
	for _, c := range conns {
		if err := ctx.Err(); err != nil {
			return closed, err
		}
		if c.To != vip || c.Dest != realServer || !closable(c.State) {
			continue
		}
		src := &net.TCPAddr{IP: net.IP(c.From.Addr().AsSlice()), Port: int(c.From.Port())}
		dst := &net.TCPAddr{IP: net.IP(c.To.Addr().AsSlice()), Port: int(c.To.Port())}
		err := destroySocket(c.From, c.To)
		switch {
		case err == nil:
			closed++
		case errors.Is(err, unix.ENOENT) && !local[c.From.Addr()]:
			// Not a local socket (a pod or another host): nothing to reset.
		case errors.Is(err, unix.ENOENT) && local[realServer.Addr()]:
			// A master's own apiserver (a local real server): when it dies
			// the kernel resets its local peers at once, while IPVS keeps
			// the entry; the socket is gone already (seen in the VM e2e).
		case errors.Is(err, unix.ENOENT):
			// A local client whose socket the kernel cannot find: either it
			// closed meanwhile, or sock_diag (tcp_diag) is not available.
			errs = append(errs, fmt.Errorf("reset %s -> %s: socket not found (is the tcp_diag module available?): %w", src, dst, err))
		default:
			errs = append(errs, fmt.Errorf("reset %s -> %s: %w", src, dst, err))
		}
	}
	if len(errs) > 0 {
		k.log.Warn("some connections could not be reset", zap.Stringer("realServer", realServer), zap.Error(errors.Join(errs...)))
		return closed, fmt.Errorf("real server %s: %w", realServer, errors.Join(errs...))
	}
	return closed, nil
}

// localAddrs is the set of addresses assigned on this node.
func localAddrs() (map[netip.Addr]bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok {
			out[x.Unmap()] = true
		}
	}
	return out, nil
}
