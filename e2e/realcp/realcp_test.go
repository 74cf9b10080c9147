package realcp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/vm"
)

// startLab starts the real control plane, or skips when it cannot run here.
func startLab(t *testing.T) *ControlPlane { return startLabWith(t, Options{}) }

// startLabWith starts the real control plane with o (Dir, Binaries and Logf
// are set here), or skips when it cannot run here.
func startLabWith(t *testing.T, o Options) *ControlPlane {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the real control plane needs root (network namespaces, a tap device); run `make test` as root")
	}
	if testing.Short() {
		t.Skip("-short: skipping the real control plane")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	require.NoError(t, err)
	bin, err := FindBinaries(ctx, root, testWriter{t})
	require.NoError(t, err)
	t0 := time.Now()
	o.Dir, o.Binaries, o.Logf = t.TempDir(), bin, t.Logf
	cp, err := Start(ctx, o)
	require.NoError(t, err)
	t.Logf("control plane up in %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(cp.Close)
	return cp
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// status GETs path on m's apiserver from the lab namespace: the status, or
// 0 and the error.
func status(t *testing.T, cp *ControlPlane, m *Master, path string, admin bool, timeout time.Duration) (int, error) {
	t.Helper()
	c, err := cp.HTTPClient(timeout, admin)
	require.NoError(t, err)
	resp, err := c.Get("https://" + m.Addr.String() + path)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitStatus polls until path answers want and returns how long it took.
func waitStatus(t *testing.T, cp *ControlPlane, m *Master, path string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	require.NoError(t, poll(context.Background(), timeout, nil, func() bool {
		code, _ := status(t, cp, m, path, false, 5*time.Second)
		return code == want
	}, m.Name+" "+path), "want %d", want)
	return time.Since(t0)
}

// TestControlPlane checks the lab's real control plane on the host: what
// the watchdog will see from a real kube-apiserver in each fault the VM
// scenarios inject.
func TestControlPlane(t *testing.T) {
	cp := startLab(t)
	m1, m2 := cp.Masters[0], cp.Masters[1]
	for _, m := range cp.Masters {
		code, err := status(t, cp, m, "/readyz", false, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "%s: anonymous /readyz", m.Name)
		code, err = status(t, cp, m, "/api", false, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code, "%s: anonymous /api is forbidden", m.Name)
		code, err = status(t, cp, m, "/api/v1/namespaces/default", true, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "%s: the admin certificate reads the default namespace", m.Name)
	}

	t.Run("etcd lost behind one master", func(t *testing.T) {
		m1.EtcdDown()
		d := waitStatus(t, cp, m1, "/readyz", http.StatusInternalServerError, 30*time.Second)
		t.Logf("%s: /readyz 500 %s after its etcd went away", m1.Name, d.Round(time.Millisecond))
		code, err := status(t, cp, m2, "/readyz", false, 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "%s keeps its etcd", m2.Name)
		require.NoError(t, m1.EtcdUp())
		d = waitStatus(t, cp, m1, "/readyz", http.StatusOK, time.Minute)
		t.Logf("%s: /readyz 200 %s after its etcd came back", m1.Name, d.Round(time.Millisecond))
	})

	t.Run("kill and restart", func(t *testing.T) {
		m1.Kill()
		assert.False(t, m1.Running())
		_, err := status(t, cp, m1, "/readyz", false, 2*time.Second)
		assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "a killed apiserver refuses connections: %v", err)
		t0 := time.Now()
		require.NoError(t, m1.Start(StartOptions{}))
		// What an anonymous /readyz probe sees while it starts.
		var seq []int
		require.NoError(t, poll(context.Background(), 2*time.Minute, nil, func() bool {
			code, _ := status(t, cp, m1, "/readyz", false, 2*time.Second)
			if len(seq) == 0 || seq[len(seq)-1] != code {
				seq = append(seq, code)
			}
			return code == http.StatusOK
		}, "restarted "+m1.Name+" ready"))
		t.Logf("%s restarted: /readyz 200 after %s; statuses seen %v (0: no answer)", m1.Name, time.Since(t0).Round(time.Millisecond), seq)
		assert.NotContains(t, seq[:len(seq)-1], http.StatusOK)
	})

	t.Run("SIGTERM with shutdown delay", func(t *testing.T) {
		m1.Kill()
		require.NoError(t, m1.Start(StartOptions{ShutdownDelay: 3 * time.Second}))
		require.NoError(t, m1.WaitReady(context.Background(), 2*time.Minute))
		t0 := time.Now()
		require.NoError(t, m1.Terminate())
		d := waitStatus(t, cp, m1, "/readyz", http.StatusInternalServerError, 5*time.Second)
		code, err := status(t, cp, m1, "/livez", false, 2*time.Second)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "still serving during the shutdown delay")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, m1.WaitExit(ctx))
		t.Logf("SIGTERM: /readyz 500 after %s, exit after %s", d.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		assert.GreaterOrEqual(t, time.Since(t0), 3*time.Second, "it served for the whole delay")
		require.NoError(t, m1.Start(StartOptions{}))
		require.NoError(t, m1.WaitReady(context.Background(), 2*time.Minute))
	})

	t.Run("link down", func(t *testing.T) {
		require.NoError(t, m2.LinkDown())
		_, err := status(t, cp, m2, "/readyz", false, 500*time.Millisecond)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout(), "a cut link drops packets silently: %v", err)
		require.NoError(t, m2.LinkUp())
		waitStatus(t, cp, m2, "/readyz", http.StatusOK, 30*time.Second)
	})

	t.Run("control endpoint", func(t *testing.T) {
		c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: dialIn(LabNS)}}
		resp, err := c.Post("http://"+controlAddr+"/v1/masters/master3/kill", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.False(t, cp.Masters[2].Running())
		resp, err = c.Post("http://"+controlAddr+"/v1/heal", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		resp, err = c.Get("http://" + controlAddr + "/v1/status")
		require.NoError(t, err)
		defer resp.Body.Close()
		var st []MasterStatus
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		require.Len(t, st, 3)
		for _, s := range st {
			assert.True(t, s.Running && s.Etcd, "%+v", s)
		}
		resp, err = c.Post("http://"+controlAddr+"/v1/masters/master9/kill", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})
}
