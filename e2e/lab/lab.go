// Package lab builds, inside the e2e VM, a node and its masters: the node is
// the root network namespace (10.10.0.1 on bridge br0, like a host NIC);
// each master is a network namespace joined to br0 by a veth pair, with a
// fake kube-apiserver process serving HTTPS on :6443 with a certificate from
// a lab CA. Masters have no route back to the VIP, as in a real cluster.
//
// It only works as root on a kernel with IPVS, netns, veth and bridge: the
// e2e VM. Nothing here sends traffic outside the VM.
package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Family is a lab's address plan: the node, its masters and the VIP, all
// in one IP family, the masters on the node's subnet.
type Family struct {
	Name   string // "ipv4" or "ipv6": subtest names, measurement suffixes
	NodeIP netip.Addr
	VIP    netip.Addr
	Bits   int                    // prefix length of the node's subnet
	master func(i int) netip.Addr // the address of master i (1-based)
}

// The lab's two address plans. The IPv6 one mirrors the IPv4 one in
// unique-local addresses (RFC 4193), with the VIP outside the node's subnet
// as in IPv4.
var (
	IPv4 = Family{Name: "ipv4", NodeIP: netip.MustParseAddr("10.10.0.1"), VIP: netip.MustParseAddr("10.103.97.2"), Bits: 24,
		master: func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 10, 0, byte(10 + i)}) }}
	IPv6 = Family{Name: "ipv6", NodeIP: netip.MustParseAddr("fd00:10::1"), VIP: netip.MustParseAddr("fd00:103:97::2"), Bits: 64,
		master: func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd00:10::%d", 10+i)) }}
	// Families are both, IPv4 first: the scenarios that run in each.
	Families = []Family{IPv4, IPv6}
)

// VIPPort is the family's VIP with the apiserver port.
func (f Family) VIPPort() netip.AddrPort { return netip.AddrPortFrom(f.VIP, 6443) }

// Master is the address of master i (1-based).
func (f Family) Master(i int) netip.Addr { return f.master(i) }

// Measure is name for this family's measurements: unchanged for IPv4 (the
// names docs/benchmarks.md has always had), name_ipv6 for IPv6.
func (f Family) Measure(name string) string {
	if f.Name == IPv4.Name {
		return name
	}
	return name + "_" + f.Name
}

// Addresses of the IPv4 lab, which most scenarios use.
var (
	NodeIP  = IPv4.NodeIP
	VIP     = IPv4.VIP
	VIPPort = IPv4.VIPPort()
	bridge  = "br0"
)

// Lab is a node with n masters.
type Lab struct {
	t       testing.TB
	Dir     string // CA, certificates, status files
	CAFile  string
	Masters []*Master
	Vipctl  string // path of the vipctl binary under test
	self    string // this test binary, re-executed as the fake apiservers
	// Family is the lab's address plan: l.NodeIP, l.VIP, l.VIPPort(),
	// l.Observe and the other kernel readers are the family's.
	Family
	// Local is the node's own stand-in apiserver in a master lab
	// (NewMaster): it listens on the node IP in the root namespace, so
	// the node is itself a master. nil in a worker lab.
	Local *Master
}

// Master is one master: a network namespace and a fake apiserver process.
type Master struct {
	lab        *Lab
	Name       string
	IP         netip.Addr
	Addr       netip.AddrPort
	NSPath     string
	HostVeth   string // the bridge port in the root namespace
	CertFile   string
	KeyFile    string
	statusFile string
	proc       *exec.Cmd
	exited     chan struct{}
}

// Need skips the test unless it runs inside the e2e VM.
func Need(t testing.TB) {
	t.Helper()
	if os.Getenv("VIPCTL_E2E_VM") != "1" {
		t.Skip("runs inside the e2e VM (VIPCTL_E2E_VM=1); started by the e2e package's TestVM on the host")
	}
}

// New builds the IPv4 lab with n masters, all healthy, and removes it (and
// any vipctl state left in the kernel) when the test ends.
func New(t testing.TB, n int) *Lab {
	t.Helper()
	return NewIn(t, IPv4, n)
}

// NewIn is New with the addresses of family f. Addresses are added without
// duplicate address detection (IPv6 DAD), like the long-settled addresses
// of a real node and its masters: a tentative address can be no source.
func NewIn(t testing.TB, f Family, n int) *Lab {
	t.Helper()
	return newLab(t, f, n, false)
}

// NewMaster is NewIn on a node that is itself a master: besides the n
// remote masters, Local is a stand-in apiserver on the node's own address
// (root namespace, NodeIP:6443), as on a control-plane node.
func NewMaster(t testing.TB, f Family, n int) *Lab {
	t.Helper()
	return newLab(t, f, n, true)
}

// AllMasters is Local (when there is one) then Masters: every real server
// of a master lab's virtual service.
func (l *Lab) AllMasters() []*Master {
	if l.Local == nil {
		return l.Masters
	}
	return append([]*Master{l.Local}, l.Masters...)
}

func newLab(t testing.TB, f Family, n int, local bool) *Lab {
	t.Helper()
	Need(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vipctl := os.Getenv("VIPCTL_BIN")
	if vipctl == "" {
		t.Fatal("VIPCTL_BIN is not set")
	}
	l := &Lab{t: t, Dir: t.TempDir(), Vipctl: vipctl, self: self, Family: f}
	l.CAFile = filepath.Join(l.Dir, "ca.crt")
	t.Cleanup(l.teardown)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}
	must(t, netlink.LinkAdd(br), "add bridge")
	must(t, netlink.AddrAdd(br, settled(prefix(f.NodeIP, f.Bits))), "node IP")
	must(t, netlink.LinkSetUp(br), "bridge up")
	for i := 1; i <= n; i++ {
		m := &Master{lab: l, Name: fmt.Sprintf("master%d", i), IP: f.Master(i)}
		m.Addr = netip.AddrPortFrom(m.IP, 6443)
		m.HostVeth = fmt.Sprintf("vm%d", i)
		m.statusFile = filepath.Join(l.Dir, m.Name+".status")
		l.Masters = append(l.Masters, m)
		m.setupNetwork(t)
	}
	if local {
		l.Local = &Master{lab: l, Name: "local", IP: f.NodeIP, Addr: netip.AddrPortFrom(f.NodeIP, 6443),
			statusFile: filepath.Join(l.Dir, "local.status")}
	}
	must(t, writePKI(l.Dir, l.VIP, l.AllMasters()), "lab PKI")
	for _, m := range l.AllMasters() {
		m.Start()
	}
	for _, m := range l.AllMasters() {
		m.WaitServing()
	}
	return l
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("lab: %s: %v", what, err)
	}
}

func prefix(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, a.BitLen())}
}

// settled is the address a without duplicate address detection for IPv6.
func settled(a *net.IPNet) *netlink.Addr {
	addr := &netlink.Addr{IPNet: a}
	if a.IP.To4() == nil {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

func (m *Master) setupNetwork(t testing.TB) {
	t.Helper()
	// NewNamed switches the calling thread into the new namespace: do it on
	// a locked thread and switch back before anything else runs on it.
	runtime.LockOSThread()
	root, err := netns.Get()
	must(t, err, "root netns")
	defer root.Close()
	ns, err := netns.NewNamed(m.Name)
	if err == nil {
		err = netns.Set(root)
	}
	runtime.UnlockOSThread()
	must(t, err, "netns "+m.Name)
	defer ns.Close()
	m.NSPath = "/var/run/netns/" + m.Name
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: m.HostVeth, MasterIndex: mustLink(t, bridge).Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	must(t, netlink.LinkAdd(veth), "veth "+m.HostVeth)
	must(t, netlink.LinkSetUp(mustLink(t, m.HostVeth)), "veth up")
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(t, err, "netlink in "+m.Name)
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	must(t, err, "eth0 in "+m.Name)
	must(t, h.AddrAdd(eth, settled(prefix(m.IP, m.lab.Family.Bits))), "address in "+m.Name)
	must(t, h.LinkSetUp(eth), "eth0 up")
	lo, err := h.LinkByName("lo")
	must(t, err, "lo in "+m.Name)
	must(t, h.LinkSetUp(lo), "lo up")
}

func mustLink(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	must(t, err, "link "+name)
	return l
}

// Start starts the master's fake apiserver (again). It does not wait for it
// to listen: see WaitServing.
func (m *Master) Start() {
	t := m.lab.t
	t.Helper()
	cmd := exec.Command(m.lab.self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=apiserver", envNS+"="+m.NSPath, envListen+"="+m.Addr.String(), envName+"="+m.Name,
		envCert+"="+m.CertFile, envKey+"="+m.KeyFile, envStatus+"="+m.statusFile)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	must(t, cmd.Start(), "start "+m.Name)
	m.proc = cmd
	m.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(cmd, m.exited)
}

// WaitServing polls the master's /livez (from inside its namespace's
// network, through the bridge) until it answers.
func (m *Master) WaitServing() {
	t := m.lab.t
	t.Helper()
	c := m.lab.Client(500 * time.Millisecond)
	err := Poll(10*time.Second, func() bool {
		resp, err := c.Get("https://" + m.Addr.String() + "/livez")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	must(t, err, m.Name+" serving")
}

// Kill SIGKILLs the fake apiserver, like a crashing kube-apiserver, and
// waits for the process to be gone.
func (m *Master) Kill() {
	if m.proc == nil {
		return
	}
	m.proc.Process.Signal(syscall.SIGKILL)
	<-m.exited
	m.proc = nil
}

// SetStatus makes the master's health endpoints answer code.
func (m *Master) SetStatus(code int) {
	must(m.lab.t, os.WriteFile(m.statusFile, []byte(strconv.Itoa(code)), 0o644), "status file")
}

// LinkDown takes the master off the network without a trace (packets to it
// are dropped: no RST, no ICMP), like a cut cable or a dead host.
func (m *Master) LinkDown() {
	must(m.lab.t, netlink.LinkSetDown(mustLink(m.lab.t, m.HostVeth)), "link down "+m.Name)
}

// LinkUp reconnects the master.
func (m *Master) LinkUp() {
	must(m.lab.t, netlink.LinkSetUp(mustLink(m.lab.t, m.HostVeth)), "link up "+m.Name)
}

func (l *Lab) teardown() {
	for _, m := range l.AllMasters() {
		m.Kill()
	}
	// Leave no vipctl state behind for the next scenario.
	exec.Command(l.Vipctl, "ipvs", "delete", "--vip", l.VIPPort().String()).Run()
	for _, m := range l.Masters {
		if lk, err := netlink.LinkByName(m.HostVeth); err == nil {
			netlink.LinkDel(lk)
		}
		netns.DeleteNamed(m.Name)
	}
	if lk, err := netlink.LinkByName(bridge); err == nil {
		netlink.LinkDel(lk)
	}
}

// Client returns an HTTPS client that trusts the lab CA and opens a new
// connection for every request, like a client that just started.
func (l *Lab) Client(timeout time.Duration) *http.Client {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(l.CAFile)
	if err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{Timeout: timeout}).DialContext,
		},
	}
}

// Hit is one request through the VIP: which master answered and which
// source address it saw.
type Hit struct {
	Master string
	Src    netip.Addr
	// SrcPort is the client port the master saw.
	SrcPort uint16
	Err     error
}

// HitVIP makes n requests to https://VIP:6443/ on new connections.
func (l *Lab) HitVIP(n int, timeout time.Duration) []Hit {
	c := l.Client(timeout)
	hits := make([]Hit, 0, n)
	for range n {
		hits = append(hits, hit(c, l.VIPURL("/")))
	}
	return hits
}

// VIPURL is https://VIP:6443 with path, the VIP bracketed when IPv6.
func (l *Lab) VIPURL(path string) string { return "https://" + l.VIPPort().String() + path }

// HitWith makes one request to https://VIP:6443/ with c.
func (l *Lab) HitWith(c *http.Client) Hit { return hit(c, l.VIPURL("/")) }

func hit(c *http.Client, url string) Hit {
	resp, err := c.Get(url)
	if err != nil {
		return Hit{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Hit{Err: err}
	}
	// "master1 saw 10.10.0.1:41234"
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return Hit{Err: fmt.Errorf("unexpected answer %q", b)}
	}
	ap, err := netip.ParseAddrPort(f[2])
	if err != nil {
		return Hit{Err: err}
	}
	return Hit{Master: f[0], Src: ap.Addr(), SrcPort: ap.Port()}
}

// Count tallies hits by master ("" for errors).
func Count(hits []Hit) map[string]int {
	c := map[string]int{}
	for _, h := range hits {
		c[h.Master]++
	}
	return c
}

// Run runs vipctl with args and returns its stdout; stderr goes to the test log.
func (l *Lab) Run(args ...string) (string, error) {
	cmd := exec.Command(l.Vipctl, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if errb.Len() > 0 {
		l.t.Logf("vipctl %s: stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	if err != nil {
		return out.String(), fmt.Errorf("vipctl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// Poll calls cond every 20 ms until it returns true or timeout passes.
func Poll(timeout time.Duration, cond func() bool) error {
	return PollEvery(timeout, 20*time.Millisecond, cond)
}

// PollEvery calls cond every period until it returns true or timeout
// passes. A condition that starts a process (kubectl, ctr) wants a period
// of a second or so: under emulation each start costs the guest a second
// or more of CPU, which a 20 ms poll takes from the node it watches.
func PollEvery(timeout, period time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tk := time.NewTicker(period)
	defer tk.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("condition not met within " + timeout.String())
		case <-tk.C:
		}
	}
}
