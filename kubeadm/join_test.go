package kubeadm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/ipvstest"
)

// The fakes of the join's interfaces. Files and the hosts file are real
// files in a temporary folder, with failures injected on demand; IPVS is
// ipvstest.Memory and ipvstest.MemoryPlumbing.

const (
	testToken   = "abcdef.0123456789abcdef"
	testCertKey = "8f1c2e8a3b4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
	testHash    = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var (
	testVIP     = netip.MustParseAddrPort("10.103.97.2:6443")
	testNodeIP  = netip.MustParseAddr("192.0.2.20")
	testMasters = []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.11:6443"),
		netip.MustParseAddrPort("192.0.2.12:6443"),
		netip.MustParseAddrPort("192.0.2.13:6443"),
	}
)

type fakeDP struct {
	*ipvstest.Memory
	*ipvstest.MemoryPlumbing
	ensureErr error
	removeErr error
}

func (f *fakeDP) EnsureVIP(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if f.ensureErr != nil {
		return nil, f.ensureErr
	}
	return f.MemoryPlumbing.EnsureVIP(ctx, c)
}

func (f *fakeDP) RemoveVIP(ctx context.Context, c ipvs.VIPConfig) ([]ipvs.Change, error) {
	if f.removeErr != nil {
		return nil, f.removeErr
	}
	return f.MemoryPlumbing.RemoveVIP(ctx, c)
}

// flakyHosts is hosts.File with injected failures.
type flakyHosts struct {
	hosts.File
	setErr error
	// setWritesThenFails makes Set change the file and then fail, as a
	// failed directory sync after the rename does.
	setWritesThenFails bool
	restoreErr         error
	removeErr          error
	// writes counts the Set calls that changed the file.
	writes int
}

func (h *flakyHosts) Set(ctx context.Context, name string, addr netip.Addr) (changed bool, err error) {
	defer func() {
		if changed {
			h.writes++
		}
	}()
	if h.setErr != nil {
		if h.setWritesThenFails {
			_, _ = h.File.Set(ctx, name, addr)
			return true, h.setErr
		}
		return false, h.setErr
	}
	return h.File.Set(ctx, name, addr)
}

func (h *flakyHosts) Restore(ctx context.Context, s hosts.Snapshot) (bool, error) {
	if h.restoreErr != nil {
		return false, h.restoreErr
	}
	return h.File.Restore(ctx, s)
}

func (h *flakyHosts) Remove(ctx context.Context, name string) (bool, error) {
	if h.removeErr != nil {
		return false, h.removeErr
	}
	return h.File.Remove(ctx, name)
}

// flakyFiles is OSFiles with injected failures by path.
type flakyFiles struct {
	OSFiles
	writeErr map[string]error
	mkdirErr map[string]error
}

func (f *flakyFiles) WriteFile(path string, data []byte, perm fs.FileMode) error {
	if err := f.writeErr[path]; err != nil {
		return err
	}
	return f.OSFiles.WriteFile(path, data, perm)
}

func (f *flakyFiles) MkdirAll(dir string, perm fs.FileMode) ([]string, error) {
	if err := f.mkdirErr[dir]; err != nil {
		return nil, err
	}
	return f.OSFiles.MkdirAll(dir, perm)
}

type runCall struct {
	path string
	args []string
}

type fakeRunner struct {
	mu      sync.Mutex
	missing map[string]bool
	calls   []runCall
	// run is what the command does; nil succeeds silently.
	run func(ctx context.Context, path string, args []string, out io.Writer) error
}

func (r *fakeRunner) LookPath(name string) (string, error) {
	if r.missing[name] {
		return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
	}
	return "/usr/bin/" + filepath.Base(name), nil
}

func (r *fakeRunner) Run(ctx context.Context, path string, args []string, out io.Writer) error {
	r.mu.Lock()
	r.calls = append(r.calls, runCall{path, append([]string(nil), args...)})
	r.mu.Unlock()
	if r.run == nil {
		return nil
	}
	return r.run(ctx, path, args, out)
}

func (r *fakeRunner) kubeadmCalls() []runCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []runCall
	for _, c := range r.calls {
		if filepath.Base(c.path) == "kubeadm" {
			out = append(out, c)
		}
	}
	return out
}

type fakeInspector struct {
	w           *world
	ipvsLoaded  bool
	otherIfs    map[netip.Addr][]string // interfaces other than vipctl's
	otherSvcs   []netip.AddrPort        // virtual servers that are not testVIP
	unreachable map[netip.AddrPort]bool
	dialed      []netip.AddrPort
	mu          sync.Mutex
	// watchdogUp answers the dial of a watchdog address; nil: refused.
	watchdogUp func(netip.AddrPort) bool
}

func (f *fakeInspector) IPVSAvailable() bool { return f.ipvsLoaded }

func (f *fakeInspector) InterfacesWith(_ context.Context, a netip.Addr) ([]string, error) {
	names := append([]string(nil), f.otherIfs[a]...)
	if a == testNodeIP {
		names = append(names, "eth0")
	}
	if f.w.dp.Has(f.w.vipConfig()) && a == testVIP.Addr() {
		names = append(names, "vipctl0")
	}
	return names, nil
}

func (f *fakeInspector) VirtualServers(ctx context.Context, a netip.Addr) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range f.otherSvcs {
		if s.Addr() == a {
			out = append(out, s)
		}
	}
	if _, err := f.w.dp.Get(ctx, testVIP); err == nil && a == testVIP.Addr() {
		out = append(out, testVIP)
	}
	return out, nil
}

func (f *fakeInspector) Dial(_ context.Context, a netip.AddrPort, _ time.Duration) error {
	f.mu.Lock()
	f.dialed = append(f.dialed, a)
	f.mu.Unlock()
	if a.Addr().IsLoopback() {
		if f.watchdogUp != nil && f.watchdogUp(a) {
			return nil
		}
		return errors.New("connection refused")
	}
	if f.unreachable[a] {
		return errors.New("i/o timeout")
	}
	return nil
}

type world struct {
	t   *testing.T
	dir string
	// hostsPath is the hosts file, whatever w.hosts.Path is made.
	hostsPath string
	hosts     *flakyHosts
	files     *flakyFiles
	dp        *fakeDP
	dpOpens   int
	dpErr     error
	runner    *fakeRunner
	insp      *fakeInspector
	out       bytes.Buffer
	kout      bytes.Buffer
	// joinerHook edits the Joiner before a run.
	joinerHook func(*Joiner)
}

const baseHosts = "127.0.0.1\tlocalhost\n# keep me\n::1 localhost ip6-localhost\n"

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	hp := filepath.Join(w.dir, "etc", "hosts")
	require.NoError(t, os.MkdirAll(filepath.Dir(hp), 0o755))
	require.NoError(t, os.WriteFile(hp, []byte(baseHosts), 0o644))
	w.hostsPath = hp
	w.hosts = &flakyHosts{File: hosts.File{Path: hp}}
	w.files = &flakyFiles{writeErr: map[string]error{}, mkdirErr: map[string]error{}}
	w.dp = &fakeDP{Memory: ipvstest.NewMemory(), MemoryPlumbing: ipvstest.NewMemoryPlumbing()}
	w.runner = &fakeRunner{missing: map[string]bool{}}
	w.insp = &fakeInspector{w: w, ipvsLoaded: true, otherIfs: map[netip.Addr][]string{}, unreachable: map[netip.AddrPort]bool{}}
	return w
}

func (w *world) joiner() *Joiner {
	return &Joiner{
		Dataplane: func() (Dataplane, error) {
			w.dpOpens++
			if w.dpErr != nil {
				return nil, w.dpErr
			}
			return w.dp, nil
		},
		Hosts:         w.hosts,
		Files:         w.files,
		Runner:        w.runner,
		Inspector:     w.insp,
		Out:           &w.out,
		KubeadmOutput: &w.kout,
	}
}

func (w *world) manifestPath() string {
	return filepath.Join(w.dir, "etc", "kubernetes", "manifests", "vipctl-care.yaml")
}
func (w *world) modulesPath() string {
	return filepath.Join(w.dir, "etc", "modules-load.d", "vipctl.conf")
}

func (w *world) vipConfig() ipvs.VIPConfig {
	return ipvs.VIPConfig{Mode: ipvs.ModeLink, Interface: "vipctl0", VIP: testVIP.Addr(), NodeIP: testNodeIP}
}

func desired(masters ...netip.AddrPort) ipvs.Desired {
	d := ipvs.Desired{Service: ipvs.Service{VIP: testVIP, Protocol: ipvs.ProtocolTCP, Scheduler: "rr"}}
	for _, m := range masters {
		d.RealServers = append(d.RealServers, ipvs.RealServer{Addr: m, Weight: 1})
	}
	return d
}

const testManifest = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - /vipctl\n    - care\n    - --master=192.0.2.11\n    - --metrics-addr=127.0.0.1:9282\n"

func (w *world) workerOpts() JoinOptions {
	return JoinOptions{
		Service:      desired(testMasters...),
		VIP:          w.vipConfig(),
		Kubeadm:      "kubeadm",
		KubeadmArgs:  []string{"--token", testToken, "--discovery-token-ca-cert-hash", testHash},
		Manifest:     []byte(testManifest),
		ManifestPath: w.manifestPath(),
		ModulesFile:  w.modulesPath(),
	}
}

func (w *world) masterOpts() JoinOptions {
	o := w.workerOpts()
	o.ControlPlane = true
	o.KubeadmArgs = append(o.KubeadmArgs, "--certificate-key="+testCertKey)
	return o
}

// state is everything a join may change.
type state struct {
	Hosts    string
	Files    map[string]string // path -> content, "<dir>" for folders (the hosts file excluded)
	Service  string            // the virtual server, "" when absent
	Plumbing bool
}

func (w *world) state() state {
	w.t.Helper()
	s := state{Files: map[string]string{}}
	b, err := os.ReadFile(w.hostsPath)
	require.NoError(w.t, err)
	s.Hosts = string(b)
	require.NoError(w.t, filepath.WalkDir(w.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(w.dir, p)
		switch {
		case p == w.hostsPath:
		case d.IsDir():
			s.Files[rel] = "<dir>"
		default:
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s.Files[rel] = string(c)
		}
		return nil
	}))
	if st, err := w.dp.Get(context.Background(), testVIP); err == nil {
		s.Service = fmt.Sprintf("%+v", st)
	}
	s.Plumbing = w.dp.Has(w.vipConfig())
	return s
}

func (w *world) hostsMapping() []hosts.Mapping {
	w.t.Helper()
	m, err := w.hosts.Lookup(ControlPlaneHost)
	require.NoError(w.t, err)
	return m
}

// assertNoSecrets checks that no output holds a secret.
func (w *world) assertNoSecrets(err error) {
	w.t.Helper()
	all := w.out.String() + w.kout.String()
	if err != nil {
		all += err.Error()
	}
	for _, s := range []string{testToken, testCertKey} {
		assert.NotContains(w.t, all, s)
	}
}

func TestWorkerJoin(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts()
	type seen struct {
		hosts    []hosts.Mapping
		service  ipvs.State
		plumbing bool
		manifest bool
		modules  bool
	}
	var atKubeadm seen
	w.runner.run = func(ctx context.Context, path string, args []string, out io.Writer) error {
		atKubeadm.hosts = w.hostsMapping()
		atKubeadm.service, _ = w.dp.Get(ctx, testVIP)
		atKubeadm.plumbing = w.dp.Has(w.vipConfig())
		_, err := os.Stat(o.ManifestPath)
		atKubeadm.manifest = err == nil
		_, err = os.Stat(o.ModulesFile)
		atKubeadm.modules = err == nil
		fmt.Fprintf(out, "[preflight] Running pre-flight checks\n[discovery] token %s\n", testToken)
		return nil
	}
	err := w.joiner().Join(context.Background(), o)
	require.NoError(t, err)

	calls := w.runner.kubeadmCalls()
	require.Len(t, calls, 1)
	assert.Equal(t, []string{"join", "apiserver.cluster.local:6443", "--token", testToken, "--discovery-token-ca-cert-hash", testHash}, calls[0].args,
		"kubeadm gets the endpoint and the user's arguments as they are")
	require.Len(t, atKubeadm.hosts, 1)
	assert.Equal(t, testVIP.Addr(), atKubeadm.hosts[0].Addr, "the name maps to the VIP when kubeadm runs")
	assert.True(t, atKubeadm.hosts[0].Managed)
	assert.Len(t, atKubeadm.service.RealServers, 3, "the virtual server is in place when kubeadm runs")
	assert.True(t, atKubeadm.plumbing, "the VIP is reachable when kubeadm runs")
	assert.True(t, atKubeadm.manifest, "the watchdog's manifest is written before kubeadm starts the kubelet")
	assert.True(t, atKubeadm.modules, "the modules file is written before kubeadm, the one step that cannot be undone")

	b, err := os.ReadFile(o.ManifestPath)
	require.NoError(t, err)
	assert.Equal(t, testManifest, string(b))
	fi, err := os.Stat(o.ManifestPath)
	require.NoError(t, err)
	assert.Equal(t, ManifestFileMode, fi.Mode().Perm())
	b, err = os.ReadFile(o.ModulesFile)
	require.NoError(t, err)
	assert.Contains(t, string(b), "\nip_vs\nip_vs_rr\n")
	fi, err = os.Stat(o.ModulesFile)
	require.NoError(t, err)
	assert.Equal(t, ModulesFileMode, fi.Mode().Perm())
	assert.True(t, strings.HasPrefix(w.state().Hosts, baseHosts), "the user's lines are kept")

	assert.Contains(t, w.kout.String(), "[discovery] token "+Redacted, "kubeadm's output is passed on, redacted")
	assert.Contains(t, w.out.String(), "--token "+Redacted)
	w.assertNoSecrets(nil)
}

func TestWorkerJoinFailingStepLeavesNodeAsBefore(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		step  string
		setup func(w *world)
	}{
		{"hosts set fails", StepHosts, func(w *world) { w.hosts.setErr = boom }},
		{"hosts set writes then fails", StepHosts, func(w *world) { w.hosts.setErr, w.hosts.setWritesThenFails = boom, true }},
		{"hosts unreadable", StepHosts, func(w *world) { w.hosts.Path = w.dir }},
		{"VIP plumbing fails", StepIPVS, func(w *world) { w.dp.ensureErr = boom }},
		{"virtual server fails", StepIPVS, func(w *world) { w.dp.FailNext(boom) }},
		{"manifest folder fails", StepManifest, func(w *world) { w.files.mkdirErr[filepath.Dir(w.manifestPath())] = boom }},
		{"manifest write fails", StepManifest, func(w *world) { w.files.writeErr[w.manifestPath()] = boom }},
		{"modules write fails", StepModules, func(w *world) { w.files.writeErr[w.modulesPath()] = boom }},
		{"kubeadm gone when run", StepKubeadm, func(w *world) {
			// Found by the preflight, gone when it is run.
			calls := 0
			w.joinerHook = func(j *Joiner) { j.Runner = lookPathAfter{Runner: w.runner, ok: 1, calls: &calls} }
		}},
		{"kubeadm fails", StepKubeadm, func(w *world) {
			w.runner.run = func(_ context.Context, _ string, _ []string, out io.Writer) error {
				fmt.Fprintf(out, "[preflight] Running pre-flight checks\nerror execution phase preflight: token %s is invalid\n", testToken)
				return errors.New("exit status 1")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(w)
			before := w.state()
			j := w.joiner()
			if w.joinerHook != nil {
				w.joinerHook(j)
			}
			err := j.Join(context.Background(), w.workerOpts())
			require.Error(t, err)
			var je *JoinError
			require.ErrorAs(t, err, &je)
			assert.Equal(t, tc.step, je.Step)
			assert.NoError(t, je.UndoErr)
			assert.Equal(t, before, w.state(), "the node is as before")
			assert.Contains(t, err.Error(), fmt.Sprintf("step %q", tc.step))
			w.assertNoSecrets(err)
			if tc.step == StepKubeadm && tc.name == "kubeadm fails" {
				assert.Contains(t, je.Output, "error execution phase preflight: token "+Redacted+" is invalid", "kubeadm's output is reported, redacted")
				assert.Contains(t, err.Error(), "kubeadm reset")
				assert.NotEmpty(t, je.Undone)
			}
		})
	}
}

// lookPathAfter lets LookPath succeed ok times, then fail.
type lookPathAfter struct {
	Runner
	ok    int
	calls *int
}

func (l lookPathAfter) LookPath(name string) (string, error) {
	*l.calls++
	if *l.calls > l.ok {
		return "", errors.New("not found")
	}
	return l.Runner.LookPath(name)
}

func TestJoinRestoresWhatWasThereBefore(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	// A user's line for the name, an older manifest and modules file, and
	// a virtual server with another scheduler and a subset of the masters.
	require.NoError(t, os.WriteFile(w.hosts.Path, []byte(baseHosts+"192.0.2.99 apiserver.cluster.local\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Dir(w.manifestPath()), 0o700))
	require.NoError(t, os.WriteFile(w.manifestPath(), []byte("old manifest\n"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Dir(w.modulesPath()), 0o755))
	require.NoError(t, os.WriteFile(w.modulesPath(), []byte("ip_vs\n"), 0o644))
	old := desired(testMasters[0])
	old.Service.Scheduler = "wrr"
	_, err := w.dp.Apply(ctx, old)
	require.NoError(t, err)
	before := w.state()

	w.runner.run = func(context.Context, string, []string, io.Writer) error { return errors.New("exit status 1") }
	err = w.joiner().Join(ctx, w.workerOpts())
	var je *JoinError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, StepKubeadm, je.Step)
	assert.Equal(t, before, w.state(), "hosts file, manifest, modules file and virtual server are back as they were")
}

func TestJoinReportsAFailedUndo(t *testing.T) {
	w := newWorld(t)
	w.hosts.restoreErr = errors.New("disk full")
	w.runner.run = func(context.Context, string, []string, io.Writer) error { return errors.New("exit status 1") }
	err := w.joiner().Join(context.Background(), w.workerOpts())
	var je *JoinError
	require.ErrorAs(t, err, &je)
	require.Error(t, je.UndoErr)
	assert.Contains(t, err.Error(), "NOT as before")
	assert.Contains(t, err.Error(), "disk full")
	// The other changes were still undone.
	assert.False(t, w.dp.Has(w.vipConfig()))
	_, err = os.Stat(w.manifestPath())
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestJoinCancelledDuringKubeadmUndoes(t *testing.T) {
	w := newWorld(t)
	before := w.state()
	ctx, cancel := context.WithCancel(context.Background())
	w.runner.run = func(ctx context.Context, _ string, _ []string, _ io.Writer) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	err := w.joiner().Join(ctx, w.workerOpts())
	var je *JoinError
	require.ErrorAs(t, err, &je)
	assert.Equal(t, StepKubeadm, je.Step)
	assert.NoError(t, je.UndoErr)
	assert.Equal(t, before, w.state(), "undone although the context ended")
}

func TestJoinPreflightProblemsChangeNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(w *world, o *JoinOptions)
		want  []string
	}{
		{"kubeadm not found", func(w *world, _ *JoinOptions) { w.runner.missing["kubeadm"] = true }, []string{`--kubeadm "kubeadm": not found`}},
		{"node IP not local", func(w *world, o *JoinOptions) { o.VIP.NodeIP = netip.MustParseAddr("192.0.2.21") }, []string{"--node-ip 192.0.2.21: not an address of this node"}},
		{"no master reachable", func(w *world, _ *JoinOptions) {
			for _, m := range testMasters {
				w.insp.unreachable[m] = true
			}
		}, []string{"--master: no master accepts a connection"}},
		{"VIP on another interface", func(w *world, _ *JoinOptions) {
			w.insp.otherIfs[testVIP.Addr()] = []string{"kube-ipvs0"}
		}, []string{"--vip 10.103.97.2: already an address of interface kube-ipvs0"}},
		{"VIP on vipctl0 in route mode", func(w *world, o *JoinOptions) {
			o.VIP.Mode = ipvs.ModeRoute
			w.insp.otherIfs[testVIP.Addr()] = []string{"vipctl0"}
		}, []string{"already an address of interface vipctl0"}},
		{"another virtual server on the VIP", func(w *world, _ *JoinOptions) {
			w.insp.otherSvcs = []netip.AddrPort{netip.MustParseAddrPort("10.103.97.2:443")}
		}, []string{"virtual server 10.103.97.2:443 on that address"}},
		{"foreign real server", func(w *world, _ *JoinOptions) {
			_, err := w.dp.Apply(context.Background(), desired(testMasters[0], netip.MustParseAddrPort("192.0.2.50:6443")))
			require.NoError(w.t, err)
		}, []string{"real server 192.0.2.50:6443, which is not a --master"}},
		{"VIP in the pod subnet", func(_ *world, o *JoinOptions) {
			o.PodSubnets = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
		}, []string{"--pod-subnet 10.96.0.0/12: holds the VIP"}},
		{"VIP in kubeadm's default service subnet", func(_ *world, o *JoinOptions) {
			o.ServiceSubnets = []netip.Prefix{netip.MustParsePrefix(KubeadmDefaultServiceSubnet)}
		}, []string{"--service-subnet 10.96.0.0/12: holds the VIP", "kubeadm's default", "--allow-vip-in-service-subnet"}},
		{"IPVS missing and modprobe fails", func(w *world, _ *JoinOptions) {
			w.insp.ipvsLoaded = false
			w.runner.run = func(_ context.Context, _ string, _ []string, out io.Writer) error {
				fmt.Fprintln(out, "modprobe: FATAL: Module ip_vs not found")
				return errors.New("exit status 1")
			}
		}, []string{"IPVS is not available", "Module ip_vs not found"}},
		{"two problems at once", func(w *world, o *JoinOptions) {
			w.runner.missing["kubeadm"] = true
			o.PodSubnets = []netip.Prefix{netip.MustParsePrefix("10.103.0.0/16")}
		}, []string{"--kubeadm", "--pod-subnet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			o := w.workerOpts()
			tc.setup(w, &o)
			before := w.state()
			err := w.joiner().Join(context.Background(), o)
			var je *JoinError
			require.ErrorAs(t, err, &je)
			assert.Equal(t, StepPreflight, je.Step)
			for _, s := range tc.want {
				assert.Contains(t, err.Error(), s)
			}
			assert.Contains(t, err.Error(), "nothing had been changed")
			assert.Equal(t, before, w.state())
			assert.Empty(t, w.runner.kubeadmCalls(), "kubeadm did not run")
		})
	}
}

func TestJoinLoadsIPVSWhenMissing(t *testing.T) {
	w := newWorld(t)
	w.insp.ipvsLoaded = false
	w.runner.run = func(_ context.Context, path string, args []string, _ io.Writer) error {
		if filepath.Base(path) == "modprobe" {
			assert.Equal(t, []string{"ip_vs"}, args)
			w.insp.ipvsLoaded = true
		}
		return nil
	}
	require.NoError(t, w.joiner().Join(context.Background(), w.workerOpts()))
	assert.Contains(t, w.out.String(), "loaded the ip_vs module")
	assert.Len(t, w.runner.kubeadmCalls(), 1)
}

func TestJoinAllowsVIPInServiceSubnetWithAWarning(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts()
	o.ServiceSubnets = []netip.Prefix{netip.MustParsePrefix(KubeadmDefaultServiceSubnet)}
	o.AllowVIPInServiceSubnet = true
	require.NoError(t, w.joiner().Join(context.Background(), o))
	assert.Contains(t, w.out.String(), "warning: --service-subnet 10.96.0.0/12: holds the VIP")
	// A subnet that does not hold the VIP is no concern at all.
	w2 := newWorld(t)
	o2 := w2.workerOpts()
	o2.ServiceSubnets = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	o2.PodSubnets = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	require.NoError(t, w2.joiner().Join(context.Background(), o2))
	assert.NotContains(t, w2.out.String(), "subnet")
}

// vipctl's default VIP lies inside kubeadm's default service subnet: with
// no --service-subnet to check against, the join warns.
func TestJoinWarnsOfTheDefaultVIPWithoutAServiceSubnet(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts()
	require.Empty(t, o.ServiceSubnets)
	require.NoError(t, w.joiner().Join(context.Background(), o))
	assert.Contains(t, w.out.String(), "warning: no --service-subnet given, and the VIP 10.103.97.2 lies inside kubeadm's default service subnet 10.96.0.0/12")
}

func TestJoinLeavesUnreachableMastersToTheWatchdog(t *testing.T) {
	w := newWorld(t)
	w.insp.unreachable[testMasters[1]] = true
	require.NoError(t, w.joiner().Join(context.Background(), w.workerOpts()))
	st, err := w.dp.Get(context.Background(), testVIP)
	require.NoError(t, err)
	var got []netip.AddrPort
	for _, rs := range st.RealServers {
		got = append(got, rs.Addr)
	}
	assert.ElementsMatch(t, []netip.AddrPort{testMasters[0], testMasters[2]}, got,
		"kubeadm's connections never go to a master that does not answer")
	assert.Contains(t, w.out.String(), "master 192.0.2.12:6443 does not accept connections")
}

func TestJoinAdoptsVipctlsOwnVirtualServer(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	_, _, err := ipvs.Converge(ctx, w.dp, w.dp, w.vipConfig(), desired(testMasters...))
	require.NoError(t, err)
	before := w.state()
	require.NoError(t, w.joiner().Join(ctx, w.workerOpts()))
	assert.Contains(t, w.out.String(), "already in place")
	assert.Equal(t, before.Service, w.state().Service)
	assert.Equal(t, 1, w.dp.Ops("add virtual server"), "not re-created")
}

func TestJoinDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	o := w.workerOpts()
	o.DryRun = true
	before := w.state()
	require.NoError(t, w.joiner().Join(context.Background(), o))
	assert.Equal(t, before, w.state())
	assert.Empty(t, w.runner.calls, "nothing is run")
	out := w.out.String()
	for _, s := range []string{
		"would map apiserver.cluster.local to 10.103.97.2",
		"would converge the virtual server 10.103.97.2:6443",
		"would put 10.103.97.2/32 on the dummy interface vipctl0",
		"would write " + o.ManifestPath + " (mode 0600)",
		"    - --metrics-addr=127.0.0.1:9282",
		"would write " + o.ModulesFile + " (mode 0644)",
		"    ip_vs_rr",
		"would run: kubeadm join apiserver.cluster.local:6443 --token " + Redacted + " --discovery-token-ca-cert-hash " + testHash,
	} {
		assert.Contains(t, out, s)
	}
	assert.NotContains(t, out, "done:", "a dry run does not claim the node joined")
	assert.Equal(t, "dry run: nothing was changed", lastLine(out))
	w.assertNoSecrets(nil)

	// A master's dry run ends the same way.
	wm := newWorld(t)
	om := wm.masterOpts()
	om.DryRun = true
	require.NoError(t, wm.joiner().Join(context.Background(), om))
	assert.Equal(t, "dry run: nothing was changed", lastLine(wm.out.String()))

	// Without IPVS loaded a dry run does not load it either.
	w2 := newWorld(t)
	w2.insp.ipvsLoaded = false
	o2 := w2.workerOpts()
	o2.DryRun = true
	require.NoError(t, w2.joiner().Join(context.Background(), o2))
	assert.Empty(t, w2.runner.calls)
	assert.Contains(t, w2.out.String(), "would run `modprobe ip_vs`")
}

func TestMasterJoin(t *testing.T) {
	w := newWorld(t)
	o := w.masterOpts()
	var atKubeadm []hosts.Mapping
	var manifestAtKubeadm bool
	var serviceAtKubeadm string
	w.runner.run = func(context.Context, string, []string, io.Writer) error {
		atKubeadm = w.hostsMapping()
		_, err := os.Stat(w.manifestPath())
		manifestAtKubeadm = err == nil
		serviceAtKubeadm = w.state().Service
		return nil
	}
	require.NoError(t, w.joiner().Join(context.Background(), o))
	calls := w.runner.kubeadmCalls()
	require.Len(t, calls, 1)
	assert.Equal(t, []string{"join", "apiserver.cluster.local:6443", "--token", testToken, "--discovery-token-ca-cert-hash", testHash,
		"--certificate-key=" + testCertKey, "--control-plane"}, calls[0].args, "a master joins through the VIP's port")
	require.Len(t, atKubeadm, 1)
	assert.Equal(t, testVIP.Addr(), atKubeadm[0].Addr, "the name maps to the VIP while kubeadm runs")
	after := w.hostsMapping()
	require.Len(t, after, 1)
	assert.Equal(t, testVIP.Addr(), after[0].Addr, "and still afterwards")
	assert.Equal(t, 1, w.hosts.writes, "the hosts file is written exactly once by the whole join")
	for _, m := range testMasters {
		assert.Contains(t, serviceAtKubeadm, m.String(), "kubeadm reaches every master through the VIP")
	}
	assert.False(t, manifestAtKubeadm, "the watchdog's manifest comes after kubeadm (its control-plane preflight wants an empty folder)")
	s := w.state()
	assert.True(t, s.Plumbing)
	assert.Equal(t, testManifest, s.Files[filepath.Join("etc", "kubernetes", "manifests", "vipctl-care.yaml")])
	assert.Contains(t, s.Files[filepath.Join("etc", "modules-load.d", "vipctl.conf")], "ip_vs_rr")
	w.assertNoSecrets(nil)
}

// A master joins with the first master down: through the others.
func TestMasterJoinFirstMasterDown(t *testing.T) {
	w := newWorld(t)
	w.insp.unreachable[testMasters[0]] = true
	var serviceAtKubeadm string
	w.runner.run = func(context.Context, string, []string, io.Writer) error {
		serviceAtKubeadm = w.state().Service
		return nil
	}
	require.NoError(t, w.joiner().Join(context.Background(), w.masterOpts()))
	assert.NotContains(t, serviceAtKubeadm, testMasters[0].String(), "the dead first master is left out")
	assert.Contains(t, serviceAtKubeadm, testMasters[1].String())
	assert.Contains(t, serviceAtKubeadm, testMasters[2].String())
	assert.Contains(t, w.out.String(), "left out of the virtual server for now")
}

func TestMasterJoinDoesNotRepeatControlPlane(t *testing.T) {
	w := newWorld(t)
	o := w.masterOpts()
	o.KubeadmArgs = append(o.KubeadmArgs, "--control-plane")
	require.NoError(t, w.joiner().Join(context.Background(), o))
	n := 0
	for _, a := range w.runner.kubeadmCalls()[0].args {
		if a == "--control-plane" {
			n++
		}
	}
	assert.Equal(t, 1, n)
}

func TestMasterJoinFailures(t *testing.T) {
	t.Run("kubeadm fails: hosts restored", func(t *testing.T) {
		w := newWorld(t)
		before := w.state()
		w.runner.run = func(context.Context, string, []string, io.Writer) error { return errors.New("exit status 1") }
		err := w.joiner().Join(context.Background(), w.masterOpts())
		var je *JoinError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, StepKubeadm, je.Step)
		assert.Equal(t, before, w.state())
		w.assertNoSecrets(err)
	})
	t.Run("every other master unreachable", func(t *testing.T) {
		w := newWorld(t)
		for _, m := range testMasters {
			w.insp.unreachable[m] = true
		}
		before := w.state()
		err := w.joiner().Join(context.Background(), w.masterOpts())
		var je *JoinError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, StepPreflight, je.Step)
		assert.Contains(t, err.Error(), "no master accepts a connection")
		assert.Equal(t, before, w.state())
	})
	t.Run("manifest after kubeadm fails: kept, explained", func(t *testing.T) {
		w := newWorld(t)
		w.files.writeErr[w.manifestPath()] = errors.New("read-only file system")
		err := w.joiner().Join(context.Background(), w.masterOpts())
		var je *JoinError
		require.ErrorAs(t, err, &je)
		assert.Equal(t, StepManifestAfter, je.Step)
		assert.Contains(t, err.Error(), "nothing was undone")
		assert.Contains(t, err.Error(), "vipctl manifest --output-file "+w.manifestPath())
		m := w.hostsMapping()
		require.Len(t, m, 1)
		assert.Equal(t, testVIP.Addr(), m[0].Addr, "the joined master keeps its mapping to the VIP")
		assert.NotEmpty(t, w.state().Service, "and its one-shot virtual server")
	})
}

func TestJoinValidate(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name string
		edit func(o *JoinOptions)
		want string
	}{
		{"endpoint given", func(o *JoinOptions) { o.KubeadmArgs = append([]string{"192.0.2.11:6443"}, o.KubeadmArgs...) }, `kubeadm argument "192.0.2.11:6443"`},
		{"token as first argument", func(o *JoinOptions) { o.KubeadmArgs = []string{testToken} }, `kubeadm argument "` + Redacted + `"`},
		{"config file", func(o *JoinOptions) { o.KubeadmArgs = []string{"--config=join.yaml"} }, "vipctl's own --config"},
		{"malformed token file", func(o *JoinOptions) { o.KubeadmArgs = o.KubeadmArgs[2:]; o.Token = "abcdef.0123" }, "--token-file: not a bootstrap token"},
		{"malformed key file", func(o *JoinOptions) { o.CertificateKey = "xyz" + testCertKey[3:] }, "--certificate-key-file: not a certificate key"},
		{"token twice", func(o *JoinOptions) { o.Token = testToken }, "--token-file: the token is also given"},
		{"unknown flag with a config", func(o *JoinOptions) {
			o.Token = testToken
			o.KubeadmArgs = []string{"--discovery-token-ca-cert-hash", testHash, "--kubeconfig", "x"}
		}, "kubeadm argument --kubeconfig"},
		{"no hash with a config", func(o *JoinOptions) { o.Token = testToken; o.KubeadmArgs = nil }, "--discovery-token-ca-cert-hash: required"},
		{"key on a worker", func(o *JoinOptions) {
			o.KubeadmArgs = o.KubeadmArgs[2:]
			o.Token = testToken
			o.CertificateKey = testCertKey
		}, "only a master"},
		{"join config of another kind", func(o *JoinOptions) {
			o.JoinConfig = []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n")
		}, "want kubeadm.k8s.io/v1beta4 JoinConfiguration"},
		{"join config with discovery file", func(o *JoinOptions) {
			o.JoinConfig = []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  file:\n    kubeConfigPath: /x\n")
		}, "discovery.file"},
		{"no master", func(o *JoinOptions) { o.Service.RealServers = nil }, "--master"},
		{"no node IP", func(o *JoinOptions) { o.VIP.NodeIP = netip.Addr{} }, "--node-ip"},
		{"worker on a master's address", func(o *JoinOptions) { o.VIP.NodeIP = testMasters[0].Addr() }, "--control-plane"},
		{"master in route mode", func(o *JoinOptions) { o.ControlPlane = true; o.VIP.Mode = ipvs.ModeRoute }, "--mode route: a master's own apiserver"},
		{"VIP mismatch", func(o *JoinOptions) { o.VIP.VIP = netip.MustParseAddr("10.103.97.3") }, "differs"},
		{"no manifest path", func(o *JoinOptions) { o.ManifestPath = "" }, "--manifest-dir"},
		{"no modules file", func(o *JoinOptions) { o.ModulesFile = "" }, "--modules-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := w.workerOpts()
			tc.edit(&o)
			before := w.state()
			err := w.joiner().Join(context.Background(), o)
			var je *JoinError
			require.ErrorAs(t, err, &je)
			assert.Equal(t, StepValidate, je.Step)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), testToken)
			assert.Equal(t, before, w.state())
		})
	}
}

func TestJoinFailureRestoresVIPPlumbingFoundInPlace(t *testing.T) {
	ctx := context.Background()
	t.Run("address added to an existing interface", func(t *testing.T) {
		w := newWorld(t)
		other := netip.MustParseAddr("10.103.97.9")
		w.dp.AddLink(w.vipConfig().Interface, other)
		w.runner.run = func(context.Context, string, []string, io.Writer) error { return errors.New("exit status 1") }
		err := w.joiner().Join(ctx, w.workerOpts())
		var je *JoinError
		require.ErrorAs(t, err, &je)
		require.NoError(t, je.UndoErr)
		addrs, ok := w.dp.Link(w.vipConfig().Interface)
		assert.True(t, ok, "the interface found in place stays")
		assert.Equal(t, []netip.Addr{other}, addrs, "the VIP address the join added is removed")
	})
	t.Run("route replaced", func(t *testing.T) {
		w := newWorld(t)
		was := w.vipConfig()
		was.NodeIP = netip.MustParseAddr("192.0.2.99")
		_, err := w.dp.MemoryPlumbing.EnsureVIP(ctx, was)
		require.NoError(t, err)
		w.runner.run = func(context.Context, string, []string, io.Writer) error { return errors.New("exit status 1") }
		err = w.joiner().Join(ctx, w.workerOpts())
		var je *JoinError
		require.ErrorAs(t, err, &je)
		require.NoError(t, je.UndoErr)
		assert.True(t, w.dp.Has(was), "the VIP's route is back with its old source")
	})
}
