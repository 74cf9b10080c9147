package probe

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// lossyLink is a veth pair from this network namespace to a new one that
// holds an HTTP server; Cut drops every packet to it until Mend.
type lossyLink struct {
	peer   netlink.Link
	h      *netlink.Handle
	server netip.AddrPort
}

func newLossyLink(t *testing.T) *lossyLink {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and a veth pair")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer orig.Close()
	ns, err := netns.New() // this thread is now in ns
	require.NoError(t, netns.Set(orig))
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	t.Cleanup(h.Close)

	const name, peerName = "vprobe0", "vprobe1"
	if l, err := netlink.LinkByName(name); err == nil {
		_ = netlink.LinkDel(l) // left by a killed run
	}
	require.NoError(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName}))
	host, err := netlink.LinkByName(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = netlink.LinkDel(host) })
	peer, err := netlink.LinkByName(peerName)
	require.NoError(t, err)
	require.NoError(t, netlink.LinkSetNsFd(peer, int(ns)))
	peer, err = h.LinkByName(peerName)
	require.NoError(t, err)
	hostAddr, _ := netlink.ParseAddr("10.199.7.1/30")
	peerAddr, _ := netlink.ParseAddr("10.199.7.2/30")
	require.NoError(t, netlink.AddrAdd(host, hostAddr))
	require.NoError(t, h.AddrAdd(peer, peerAddr))
	require.NoError(t, netlink.LinkSetUp(host))
	require.NoError(t, h.LinkSetUp(peer))
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo))

	// Both ends carry packets before the first probe: a SYN sent earlier
	// would be lost and retransmitted.
	require.Eventually(t, func() bool {
		a, err1 := netlink.LinkByName(name)
		b, err2 := h.LinkByName(peerName)
		return err1 == nil && err2 == nil && a.Attrs().OperState == netlink.OperUp && b.Attrs().OperState == netlink.OperUp
	}, 5*time.Second, 10*time.Millisecond, "the veth pair up")

	// The server's socket is made in ns and stays there.
	require.NoError(t, netns.Set(ns))
	ln, err := net.Listen("tcp", "10.199.7.2:0")
	require.NoError(t, netns.Set(orig))
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &lossyLink{peer: peer, h: h, server: netip.MustParseAddrPort(ln.Addr().String())}
}

// Cut takes the server's end of the link down: packets to it are dropped,
// the routes and sockets stay.
func (l *lossyLink) Cut(t *testing.T) { require.NoError(t, l.h.LinkSetDown(l.peer)) }

// Mend brings it back.
func (l *lossyLink) Mend(t *testing.T) { require.NoError(t, l.h.LinkSetUp(l.peer)) }

// A link that drops packets for a moment delays a probe on the kept
// connection instead of failing it (TCP retransmits the request): the
// result says so, while the same probe over a sound link says none.
func TestProbeCountsRetransmissions(t *testing.T) {
	l := newLossyLink(t)
	p, err := New(Config{Scheme: HTTP, Path: "/readyz", Statuses: []int{200}, Timeout: 5 * time.Second, ReuseFor: time.Minute})
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()

	r := p.Probe(ctx, l.server)
	require.True(t, r.OK, r.Reason)
	assert.Zero(t, r.Retransmits, "a new connection over a sound link")
	r = p.Probe(ctx, l.server)
	require.True(t, r.OK, r.Reason)
	assert.Zero(t, r.Retransmits, "the kept connection over a sound link")

	l.Cut(t)
	done := make(chan Result, 1)
	go func() { done <- p.Probe(ctx, l.server) }()
	time.Sleep(500 * time.Millisecond) // the outage: longer than TCP's 200 ms minimum retransmission timeout
	l.Mend(t)
	r = <-done
	require.True(t, r.OK, "the request retransmitted after the outage is answered: %s", r.Reason)
	assert.NotZero(t, r.Retransmits, "the request was lost and retransmitted: %+v", r)

	r = p.Probe(ctx, l.server)
	require.True(t, r.OK, r.Reason)
	assert.Zero(t, r.Retransmits, "counted per probe: the next one over the mended link needs none")
}
