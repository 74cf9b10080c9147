package vmtests

import (
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/vipctl/vipctl/e2e/lab"
)

// procRealServers reads the VIP's real servers and weights from
// /proc/net/ip_vs; nil when the virtual server (or IPVS) is not there.
//
// The worker scenario reads the kernel's table so, not through netlink:
// moby/ipvs resolves the IPVS generic netlink family once per process, and
// a reload of ip_vs (as the reboot once played on the running VM did) gives
// the family a new id: every netlink read of this process then fails and
// would read as an empty table; nor does reading /proc make the kernel
// load ip_vs.
func procRealServers() map[netip.AddrPort]int {
	b, err := os.ReadFile("/proc/net/ip_vs")
	if err != nil {
		return nil
	}
	return parseProcIPVS(string(b), lab.VIPPort)
}

// parseProcIPVS parses /proc/net/ip_vs for the TCP virtual server vip.
func parseProcIPVS(s string, vip netip.AddrPort) map[netip.AddrPort]int {
	var out map[netip.AddrPort]int
	in := false
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM"):
			a, ok := parseProcAddr(f[1])
			in = f[0] == "TCP" && ok && a == vip
			if in {
				out = map[netip.AddrPort]int{}
			}
		case in && len(f) >= 4 && f[0] == "->":
			a, ok := parseProcAddr(f[1])
			w, err := strconv.Atoi(f[3])
			if ok && err == nil {
				out[a] = w
			}
		}
	}
	return out
}

// parseProcAddr parses IPv4 "0A676102:192B" (hex address and port).
func parseProcAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return netip.AddrPort{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b)), uint16(port)), true
}

func TestParseProcIPVS(t *testing.T) {
	const table = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600001:01BB rr
  -> 0A1F000B:192B      Masq    1      0          0
TCP  0A676102:192B rr
  -> 0A1F000B:192B      Masq    1      3          0
  -> 0A1F000C:192B      Masq    0      1          2
`
	vip := netip.MustParseAddrPort("10.103.97.2:6443")
	assert.Equal(t, map[netip.AddrPort]int{
		netip.MustParseAddrPort("10.31.0.11:6443"): 1,
		netip.MustParseAddrPort("10.31.0.12:6443"): 0,
	}, parseProcIPVS(table, vip))
	assert.Nil(t, parseProcIPVS(table[:strings.Index(table, "TCP  0A676102")], vip), "no virtual server")
	assert.Equal(t, map[netip.AddrPort]int{}, parseProcIPVS("TCP  0A676102:192B rr\n", vip), "a virtual server without real servers")
}
