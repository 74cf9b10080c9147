package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care"
	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

var (
	stVIP = netip.MustParseAddrPort("10.103.97.2:6443")
	stA   = netip.MustParseAddrPort("192.0.2.11:6443")
	stB   = netip.MustParseAddrPort("192.0.2.12:6443")
	stX   = netip.MustParseAddrPort("192.0.2.99:6443")
)

var stNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// statusWorld fakes the watchdog's /status and the kernel's table.
type statusWorld struct {
	watchdog    *care.Status
	watchdogErr error
	kernel      *ipvstest.Memory
	kernelErr   error
	fetchedAddr string
	// manifestAddr is the manifest's --metrics-addr; "" for no manifest.
	manifestAddr string
}

func (w *statusWorld) env() statusEnv {
	return statusEnv{
		fetch: func(_ context.Context, addr string) (care.Status, error) {
			w.fetchedAddr = addr
			if w.watchdogErr != nil {
				return care.Status{}, w.watchdogErr
			}
			return *w.watchdog, nil
		},
		openIPVS: func(*zap.Logger) (statusGetter, func() error, error) {
			if w.kernelErr != nil {
				return nil, nil, w.kernelErr
			}
			return w.kernel, func() error { return nil }, nil
		},
		manifestMetricsAddr: func() (string, bool, error) { return w.manifestAddr, w.manifestAddr != "", nil },
		now:                 func() time.Time { return stNow },
	}
}

func runStatusCmd(t *testing.T, w *statusWorld, args ...string) (string, error) {
	t.Helper()
	cmd := newStatusCmdWith(&app{log: zap.NewNop()}, w.env())
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func kernelWith(t *testing.T, rs ...ipvs.RealServer) *ipvstest.Memory {
	t.Helper()
	m := ipvstest.NewMemory()
	_, err := m.Apply(context.Background(), ipvs.Desired{Service: ipvs.Service{VIP: stVIP, Protocol: ipvs.ProtocolTCP, Scheduler: "rr"}, RealServers: rs})
	require.NoError(t, err)
	return m
}

func watchdogStatus() *care.Status {
	return &care.Status{VIP: stVIP, Scheduler: "rr", Mode: ipvs.ModeLink, NodeIP: netip.MustParseAddr("192.0.2.20"), Ready: true,
		Masters: []carestatus.Master{
			{Address: stA, Phase: carestatus.Up, Since: stNow.Add(-5 * time.Minute), Membership: carestatus.InService, Weight: 1,
				LastProbe: &carestatus.Probe{At: stNow, OK: true, Status: 200, Reason: "HTTP 200", Latency: 0.003},
				Kernel:    &carestatus.Kernel{Weight: 1, ActiveConns: 99}},
			{Address: stB, Phase: carestatus.Down, Since: stNow.Add(-time.Minute), Membership: carestatus.Removed, Weight: -1,
				LastProbe: &carestatus.Probe{At: stNow, Reason: "connection refused", Latency: 0.0002}},
		}}
}

func TestStatusTable(t *testing.T) {
	w := &statusWorld{watchdog: watchdogStatus(), kernel: kernelWith(t, ipvs.RealServer{Addr: stA, Weight: 1}, ipvs.RealServer{Addr: stX, Weight: 0})}
	w.kernel.SetConns(stVIP, stA, 12, 3)
	out, err := runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9282", w.fetchedAddr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 6, out)
	assert.Contains(t, lines[0], "VIP 10.103.97.2:6443  scheduler rr")
	assert.Contains(t, lines[1], "watchdog: ready")
	assert.Regexp(t, `^MASTER\s+HEALTH\s+FOR\s+MEMBERSHIP\s+WEIGHT\s+ACTIVE\s+INACTIVE\s+LAST PROBE$`, lines[2])
	assert.Regexp(t, `^192\.0\.2\.11:6443\s+up\s+5m0s\s+in-service\s+1\s+12\s+3\s+HTTP 200 \(3ms\)$`, lines[3])
	assert.Regexp(t, `^192\.0\.2\.12:6443\s+down\s+1m0s\s+removed\s+absent\s+-\s+-\s+connection refused`, lines[4])
	assert.Regexp(t, `^192\.0\.2\.99:6443\s+-\s+-\s+-\s+0\s+0\s+0\s+-$`, lines[5], "a real server the watchdog does not know")
}

func TestStatusJSON(t *testing.T) {
	w := &statusWorld{watchdog: watchdogStatus(), kernel: kernelWith(t, ipvs.RealServer{Addr: stA, Weight: 1})}
	out, err := runStatusCmd(t, w, "-o", "json", "--metrics-addr", "127.0.0.1:19282")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:19282", w.fetchedAddr)
	var r statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.NotNil(t, r.Watchdog)
	require.NotNil(t, r.Kernel)
	require.Len(t, r.Masters, 2)
	assert.Equal(t, carestatus.Up, r.Masters[0].Phase)
	require.NotNil(t, r.Masters[0].Kernel)
	assert.Equal(t, carestatus.Kernel{Weight: 1}, *r.Masters[0].Kernel, "the kernel's counters as read now, not the watchdog's")
	assert.Equal(t, carestatus.Down, r.Masters[1].Phase)
	assert.Nil(t, r.Masters[1].Kernel)
	assert.Contains(t, out, `"state": "up"`, "the same names as the watchdog's /status")
}

func TestStatusAsksWhereTheManifestSays(t *testing.T) {
	w := &statusWorld{watchdog: watchdogStatus(), kernel: kernelWith(t), manifestAddr: ":9300"}
	_, err := runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9300", w.fetchedAddr, "the manifest's --metrics-addr, reached on loopback")

	_, err = runStatusCmd(t, w, "--metrics-addr", "127.0.0.1:19282")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:19282", w.fetchedAddr, "--metrics-addr wins")

	w.manifestAddr = ""
	_, err = runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:9282", w.fetchedAddr, "no manifest: the default")

	_, err = runStatusCmd(t, w, "--metrics-addr", "9282")
	assert.ErrorContains(t, err, `--metrics-addr "9282"`)
}

func TestStatusWatchdogNotRunning(t *testing.T) {
	w := &statusWorld{watchdogErr: errors.New("watchdog status at 127.0.0.1:9282: connection refused"),
		kernel: kernelWith(t, ipvs.RealServer{Addr: stA, Weight: 1}, ipvs.RealServer{Addr: stB, Weight: 1})}
	out, err := runStatusCmd(t, w)
	require.NoError(t, err, "the kernel's table is still worth showing")
	assert.Contains(t, out, "watchdog: not running or unreachable")
	assert.Contains(t, out, "showing the kernel's table only")
	assert.Regexp(t, `192\.0\.2\.11:6443\s+-\s+-\s+-\s+1\s+0\s+0`, out)
	assert.Regexp(t, `192\.0\.2\.12:6443\s+-\s+-\s+-\s+1\s+0\s+0`, out)
}

func TestStatusKernelUnreadable(t *testing.T) {
	w := &statusWorld{watchdog: watchdogStatus(), kernelErr: errors.New("IPVS is not available in this kernel")}
	out, err := runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Contains(t, out, "kernel: IPVS is not available")
	assert.Regexp(t, `192\.0\.2\.11:6443\s+up\s+5m0s\s+in-service\s+-\s+-\s+-`, out)
}

func TestStatusNothingReadable(t *testing.T) {
	w := &statusWorld{watchdogErr: errors.New("connection refused"), kernelErr: errors.New("IPVS is not available")}
	_, err := runStatusCmd(t, w)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connection refused")
	assert.Contains(t, err.Error(), "IPVS is not available")
}

func TestStatusVIPFromWatchdog(t *testing.T) {
	st := watchdogStatus()
	st.VIP = netip.MustParseAddrPort("10.103.97.3:6443")
	w := &statusWorld{watchdog: st, kernel: kernelWith(t)}
	out, err := runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Contains(t, out, "VIP 10.103.97.3:6443")
	assert.Contains(t, out, "not found", "the kernel has no service at the watchdog's VIP")
}

func TestStatusBadInput(t *testing.T) {
	w := &statusWorld{watchdog: watchdogStatus(), kernel: kernelWith(t)}
	_, err := runStatusCmd(t, w, "-o", "yaml")
	assert.ErrorContains(t, err, `--output "yaml"`)
	_, err = runStatusCmd(t, w, "--vip", "nope")
	assert.ErrorContains(t, err, `--vip "nope"`)
	_, err = runStatusCmd(t, w, "--timeout", "0s")
	assert.ErrorContains(t, err, "--timeout 0s")
	_, err = runStatusCmd(t, w, "extra")
	assert.Error(t, err)
}

func TestStatusSaysWhereMastersComeFromAndUnauthorizedProbes(t *testing.T) {
	st := watchdogStatus()
	st.ProbesUnauthorized = true
	st.Masters[0].Source = care.SourceSeed
	st.Masters[1].Source, st.Masters[1].LastSeenInAPI, st.Masters[1].ForgetAt = care.SourceAPI, stNow.Add(-2*time.Minute), stNow.Add(58*time.Minute)
	st.Masters = append(st.Masters, carestatus.Master{Address: stX, Phase: carestatus.Up, Source: care.SourceAPI})
	w := &statusWorld{watchdog: st, kernel: kernelWith(t, ipvs.RealServer{Addr: stA, Weight: 1})}
	out, err := runStatusCmd(t, w)
	require.NoError(t, err)
	assert.Contains(t, out, "probes unauthorized: check credentials")
	assert.Contains(t, out, "192.0.2.12:6443: discovered from the API, last listed 2m0s ago; absent from the API and unhealthy: forgotten at 2026-11-21T12:58:00Z (in 58m0s) unless it comes back")
	assert.Contains(t, out, "192.0.2.99:6443: discovered from the API, not listed since the watchdog started (from its state file)")
	assert.NotContains(t, out, "192.0.2.11:6443: discovered", "a seed needs no word")
}
