package kubeadm

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/ipvs"
)

func (w *world) resetter() *Resetter {
	return &Resetter{
		Dataplane: func() (Dataplane, error) {
			w.dpOpens++
			return w.dp, w.dpErr
		},
		Plumbing:  func() (ipvs.Plumbing, error) { return w.dp, nil },
		Hosts:     w.hosts,
		Files:     w.files,
		Inspector: w.insp,
		Out:       &w.out,
	}
}

func (w *world) resetOpts() ResetOptions {
	return ResetOptions{
		VIP:          testVIP,
		Interface:    "vipctl0",
		ManifestPath: w.manifestPath(),
		ModulesFile:  w.modulesPath(),
		StateFile:    filepath.Join(w.dir, "var", "lib", "vipctl", "masters.json"),
		SecretsDir:   filepath.Join(w.dir, "etc", "kubernetes", "vipctl-join"),
		WatchdogAddr: "127.0.0.1:9282",
	}
}

// join joins w's node as a worker.
func (w *world) join() {
	w.t.Helper()
	require.NoError(w.t, w.joiner().Join(context.Background(), w.workerOpts()))
}

func TestResetUndoesAJoin(t *testing.T) {
	w := newWorld(t)
	before := w.state()
	w.join()
	require.NotEqual(t, before, w.state())
	// What the watchdog and the user left: its state file, the token.
	o := w.resetOpts()
	for _, f := range []string{o.StateFile, filepath.Join(o.SecretsDir, TokenFileName)} {
		require.NoError(t, os.MkdirAll(filepath.Dir(f), 0o700))
		require.NoError(t, os.WriteFile(f, []byte("x"), 0o600))
	}

	require.NoError(t, w.resetter().Reset(context.Background(), o))
	after := w.state()
	for _, p := range []string{o.StateFile, filepath.Dir(o.StateFile), o.SecretsDir} {
		assert.NoFileExists(t, p)
		assert.NoDirExists(t, p)
	}
	assert.Equal(t, before.Hosts, after.Hosts, "hosts file byte-identical")
	assert.Empty(t, after.Service, "no virtual server")
	assert.False(t, after.Plumbing, "no VIP plumbing")
	assert.NotContains(t, after.Files, "etc/kubernetes/manifests/vipctl-care.yaml")
	assert.NotContains(t, after.Files, "etc/modules-load.d/vipctl.conf")
	assert.Contains(t, w.out.String(), "kubeadm reset", "the user is told to run kubeadm reset")

	// Idempotent: a second reset changes nothing and succeeds.
	w.out.Reset()
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	assert.Equal(t, after, w.state())
	for _, s := range []string{"absent", "nothing to remove", "no vipctl line"} {
		assert.Contains(t, w.out.String(), s)
	}
}

func TestResetAfterMasterJoin(t *testing.T) {
	w := newWorld(t)
	before := w.state()
	require.NoError(t, w.joiner().Join(context.Background(), w.masterOpts()))
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	// A master joins through the VIP like a worker: reset undoes the same
	// (the folders are kubeadm's, left in place as after a worker's reset).
	after := w.state()
	assert.Equal(t, before.Hosts, after.Hosts, "hosts file byte-identical")
	assert.Empty(t, after.Service, "no virtual server")
	assert.False(t, after.Plumbing, "no VIP plumbing")
	assert.NotContains(t, after.Files, "etc/kubernetes/manifests/vipctl-care.yaml")
	assert.NotContains(t, after.Files, "etc/modules-load.d/vipctl.conf")
}

func TestResetWaitsForTheWatchdog(t *testing.T) {
	w := newWorld(t)
	w.join()
	// The manifest names the metrics address the watchdog listens on; it
	// answers three more times after the manifest is gone.
	var dials atomic.Int32
	var dialedAt netip.AddrPort
	w.insp.watchdogUp = func(a netip.AddrPort) bool {
		dialedAt = a
		_, err := os.Stat(w.manifestPath())
		assert.ErrorIs(t, err, os.ErrNotExist, "the manifest is removed before waiting")
		return dials.Add(1) <= 3
	}
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:9282"), dialedAt)
	assert.Equal(t, int32(4), dials.Load(), "polled until the watchdog stopped answering")
	assert.Contains(t, w.out.String(), "the watchdog stopped")
	assert.Empty(t, w.state().Service)
}

func TestResetWaitsForAWatchdogListeningOnEveryAddress(t *testing.T) {
	w := newWorld(t)
	w.join()
	// The manifest's --metrics-addr has no host: the watchdog listens on
	// every address and is reached on loopback.
	manifest := strings.Replace(testManifest, "--metrics-addr=127.0.0.1:9282", "--metrics-addr=:9300", 1)
	require.NoError(t, os.WriteFile(w.manifestPath(), []byte(manifest), 0o600))
	var dials atomic.Int32
	var dialedAt netip.AddrPort
	w.insp.watchdogUp = func(a netip.AddrPort) bool {
		dialedAt = a
		return dials.Add(1) <= 2
	}
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:9300"), dialedAt, "waited at the manifest's address")
	assert.Equal(t, int32(3), dials.Load())
	assert.Contains(t, w.out.String(), "the watchdog stopped")
}

func TestResetGivesUpWaitingForAWatchdogThatStaysUp(t *testing.T) {
	w := newWorld(t)
	w.join()
	w.insp.watchdogUp = func(netip.AddrPort) bool { return true }
	o := w.resetOpts()
	o.WatchdogWait = 300 * time.Millisecond
	start := time.Now()
	require.NoError(t, w.resetter().Reset(context.Background(), o))
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Contains(t, w.out.String(), "still runs and may put the rules back")
	assert.Empty(t, w.state().Service, "the rules are removed all the same")
}

func TestResetGoesOnAfterAFailedStep(t *testing.T) {
	w := newWorld(t)
	w.join()
	w.hosts.removeErr = errors.New("read-only file system")
	err := w.resetter().Reset(context.Background(), w.resetOpts())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hosts: read-only file system")
	s := w.state()
	assert.Empty(t, s.Service, "the other steps ran")
	assert.NotContains(t, s.Files, "etc/modules-load.d/vipctl.conf")
}

func TestResetWithoutIPVS(t *testing.T) {
	w := newWorld(t)
	w.insp.ipvsLoaded = false
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	assert.Equal(t, 0, w.dpOpens, "no IPVS handle is opened")
	assert.Contains(t, w.out.String(), "IPVS is not loaded")
}

// The VIP's interface, address and route need no IPVS: they are removed
// even when the module is not loaded (say after a reboot without the
// modules file).
func TestResetWithoutIPVSStillRemovesThePlumbing(t *testing.T) {
	w := newWorld(t)
	w.join()
	require.True(t, w.state().Plumbing)
	w.insp.ipvsLoaded = false
	opens := w.dpOpens
	require.NoError(t, w.resetter().Reset(context.Background(), w.resetOpts()))
	assert.Equal(t, opens, w.dpOpens, "no IPVS handle is opened")
	assert.False(t, w.state().Plumbing, "the VIP plumbing is removed")
	assert.Contains(t, w.out.String(), "delete interface vipctl0")
}

func TestResetDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	w.join()
	joined := w.state()
	w.out.Reset()
	o := w.resetOpts()
	o.DryRun = true
	require.NoError(t, w.resetter().Reset(context.Background(), o))
	assert.Equal(t, joined, w.state())
	out := w.out.String()
	assert.Contains(t, out, "would remove "+w.manifestPath())
	assert.Contains(t, out, "would delete the virtual server 10.103.97.2:6443")
	assert.Contains(t, out, "would remove "+w.modulesPath())
	assert.Contains(t, out, "would remove vipctl's line")
	assert.NotContains(t, out, "is would", "no garbled sentence")
	assert.NotContains(t, out, "is undone", "a dry run undoes nothing")
	assert.True(t, strings.HasPrefix(lastLine(out), "dry run: nothing was changed"), "the last line says nothing was changed: %q", lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
