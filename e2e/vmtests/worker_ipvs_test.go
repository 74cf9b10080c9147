package vmtests

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// checkIPVSMode checks kube-proxy's ipvs mode on the worker, once it is
// healthy: its own virtual servers are in the kernel beside the VIP's (the
// mode works), and through two more of its syncs, each of which deletes
// the virtual servers it did not make unless excludeCIDRs covers them, the
// VIP's virtual server is never without its masters. g is what the
// sampler saw from the join to kube-proxy healthy: unlike the nftables
// mode, the ipvs mode flushes nothing when it starts.
func (w *worker) checkIPVSMode(t *testing.T, kubectl func(...string) (string, error), g gapStats) {
	t.Helper()
	cm, err := kubectl("get", "configmap", "-n", "kube-system", "kube-proxy", "-o", "jsonpath={.data.config\\.conf}")
	require.NoError(t, err, cm)
	require.Contains(t, cm, lab.VIP.String()+"/32", "the VIP in kube-proxy's ipvs.excludeCIDRs")
	require.Zero(t, g.empty, "periods with the VIP's virtual server gone or empty since the join")

	// kube-proxy's ClusterIP service of the API, made by kube-proxy itself.
	ip, err := kubectl("get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}")
	require.NoError(t, err, ip)
	clusterIP := net.ParseIP(strings.TrimSpace(ip))
	require.NotNil(t, clusterIP, "the kubernetes Service's ClusterIP %q", ip)
	require.NoError(t, lab.Poll(time.Minute, func() bool { return hasVirtualServer(clusterIP, 443) }),
		"kube-proxy's virtual server %s:443 never appeared", clusterIP)

	// Two more syncs, sampled: kube-proxy's metrics count them.
	syncs := func() int {
		n, _ := kubeProxySyncs()
		return n
	}
	s := w.sampleIPVS()
	// Healthy comes before the first sync's end (a sync takes seconds
	// under emulation: every ipset and iptables-restore is a process):
	// the count shows once one has ended.
	var n0 int
	var lastErr error
	require.NoError(t, lab.Poll(3*time.Minute, func() bool {
		n0, lastErr = kubeProxySyncs()
		return lastErr == nil
	}), "kube-proxy's first sync never ended (metrics at 127.0.0.1:10249): %v", lastErr)
	// A Service made and deleted forces syncs, besides the periodic one.
	for _, a := range [][]string{
		{"create", "service", "clusterip", "vipctl-sync", "--tcp=80:80"},
		{"delete", "service", "vipctl-sync"},
	} {
		o, err := kubectl(a...)
		require.NoError(t, err, o)
	}
	require.NoError(t, lab.Poll(2*time.Minute, func() bool { return syncs() >= n0+2 }), "kube-proxy never synced twice more (from %d)", n0)
	after := s.stop()
	t.Logf("ipvs mode: kube-proxy synced %d times more; the VIP's table sampled every 20 ms: %d period(s) without every master (longest %s), %d without any",
		syncs()-n0, after.count, after.longest, after.empty)
	require.Zero(t, after.empty, "kube-proxy's syncs removed the VIP's virtual server or its real servers")
	require.True(t, w.allInIPVS(), "every master in the VIP's table")
	require.True(t, hasVirtualServer(clusterIP, 443), "kube-proxy's own virtual server kept")
}

// hasVirtualServer tells whether the kernel has the TCP virtual server ip:port.
func hasVirtualServer(ip net.IP, port uint16) bool {
	h, err := mobyipvs.New("")
	if err != nil {
		return false
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return false
	}
	for _, s := range svcs {
		if s.Protocol == syscall.IPPROTO_TCP && s.Port == port && s.Address.Equal(ip) {
			return true
		}
	}
	return false
}

// kubeProxySyncs reads how many times kube-proxy synced its IPv4 rules,
// from its metrics endpoint (127.0.0.1:10249 by default; it runs in the
// host network). In dual-stack mode the count is per family
// (`{ip_family="IPv4"}`); without the label it is the only one.
func kubeProxySyncs() (int, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:10249/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var seen []string // the sync metrics there are, for the error
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "kubeproxy_sync_proxy_rules") && len(seen) < 10 {
			seen = append(seen, sc.Text())
		}
		rest, ok := strings.CutPrefix(sc.Text(), "kubeproxy_sync_proxy_rules_duration_seconds_count")
		if !ok || (strings.HasPrefix(rest, "{") && !strings.Contains(rest, `ip_family="IPv4"`)) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("kube-proxy's sync count %q: %w", sc.Text(), err)
		}
		return int(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no kubeproxy_sync_proxy_rules_duration_seconds_count for IPv4 in kube-proxy's metrics (HTTP %d; its sync metrics: %q)", resp.StatusCode, seen)
}
