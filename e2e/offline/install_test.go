package offline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The bundle the install.sh tests build: an amd64 bundle, installed on a node
// whose stub uname says x86_64.
const (
	testVersion = "v1.2.3"
	testImage   = "ghcr.io/vipctl/vipctl:v1.2.3"
	testImageFn = "images/vipctl-v1.2.3-linux-amd64.tar"
)

// repoRoot is the repository's top directory (tests run in e2e/offline).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "repository root not found from %s", root)
	return root
}

// Stubs of the node's commands. They append "name args" to $STUB_LOG and keep
// what they "imported" in $STUB_STATE; $STUB_IMAGE is the tag they report.
const (
	stubUname = `#!/bin/sh
case "$1" in
-m) echo "${STUB_MACHINE:-x86_64}" ;;
-r) echo 6.1.0-stub ;;
*) echo Linux ;;
esac
`
	stubCtr = `#!/bin/sh
echo "ctr $*" >>"$STUB_LOG"
[ "${STUB_CTR:-up}" = down ] && { echo "ctr: connection refused" >&2; exit 1; }
while [ $# -gt 0 ]; do case $1 in -n|--namespace|-a|--address) shift 2 ;; *) break ;; esac; done
case "$1 $2" in
"version "*) exit 0 ;;
"images import") [ "${STUB_CTR:-up}" = lossy ] || : >"$STUB_STATE/ctr-imported" ;;
"images ls") [ -e "$STUB_STATE/ctr-imported" ] && echo "$STUB_IMAGE" ;;
"images label") ;;
*) echo "ctr stub: unexpected: $*" >&2; exit 2 ;;
esac
exit 0
`
	stubDocker = `#!/bin/sh
echo "docker $*" >>"$STUB_LOG"
case "$1" in
info) [ "${STUB_DOCKER:-up}" = up ] ;;
load) : >"$STUB_STATE/docker-loaded" ;;
image) [ "$2" = inspect ] && [ "$3" = "$STUB_IMAGE" ] && [ -e "$STUB_STATE/docker-loaded" ] ;;
*) echo "docker stub: unexpected: $*" >&2; exit 2 ;;
esac
`
	stubPodman = `#!/bin/sh
echo "podman $*" >>"$STUB_LOG"
case "$1" in
version) exit 0 ;;
load) : >"$STUB_STATE/podman-loaded" ;;
image) [ "$2" = exists ] && [ "$3" = "$STUB_IMAGE" ] && [ -e "$STUB_STATE/podman-loaded" ] ;;
*) echo "podman stub: unexpected: $*" >&2; exit 2 ;;
esac
`
	// modprobe fails for the modules in $STUB_MISSING_MODULES, with or without -n.
	stubModprobe = `#!/bin/sh
echo "modprobe $*" >>"$STUB_LOG"
for a; do m=$a; done
for x in $STUB_MISSING_MODULES; do [ "$x" = "$m" ] && exit 1; done
exit 0
`
)

// installEnv is an unpacked bundle, an empty --root, and a PATH holding only
// the host tools install.sh may use plus stubs of the node's commands.
type installEnv struct {
	t      *testing.T
	bundle string
	root   string
	path   string
	state  string
	log    string
	env    map[string]string
}

// hostTools are the commands install.sh may use from the host, besides the stubs.
func hostTools() []string {
	return []string{"sh", "sed", "head", "awk", "sha256sum", "grep", "cat", "cmp", "mkdir", "dirname", "cp", "chmod", "mv", "rm", "tr", "id"}
}

func newInstallEnv(t *testing.T, stubs ...string) *installEnv {
	t.Helper()
	dir := t.TempDir()
	e := &installEnv{
		t:      t,
		bundle: filepath.Join(dir, "vipctl-offline-"+testVersion+"-linux-amd64"),
		root:   filepath.Join(dir, "root"),
		path:   filepath.Join(dir, "bin"),
		state:  filepath.Join(dir, "state"),
		log:    filepath.Join(dir, "calls.log"),
		env:    map[string]string{"STUB_IMAGE": testImage},
	}
	for _, d := range []string{e.root, e.path, e.state} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	for _, tool := range hostTools() {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("install.sh needs %s on the host: %v", tool, err)
		}
		require.NoError(t, os.Symlink(p, filepath.Join(e.path, tool)))
	}
	scripts := map[string]string{"uname": stubUname, "modprobe": stubModprobe, "ctr": stubCtr, "docker": stubDocker, "podman": stubPodman}
	for _, s := range append([]string{"uname", "modprobe"}, stubs...) {
		require.Contains(t, scripts, s)
		require.NoError(t, os.WriteFile(filepath.Join(e.path, s), []byte(scripts[s]), 0o755))
	}
	writeBundle(t, e.bundle)
	return e
}

// writeBundle lays out a bundle the way scripts/offline.sh does, with a shell
// script standing in for vipctl and junk standing in for the image.
func writeBundle(t *testing.T, dir string) {
	t.Helper()
	install, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "install.sh"))
	require.NoError(t, err)
	files := map[string]string{
		"install.sh": string(install),
		"vipctl":     "#!/bin/sh\necho vipctl " + testVersion + "\n",
		testImageFn:  "not really an image archive\n",
		"README.md":  "# test bundle\n",
		"bundle.env": fmt.Sprintf("VIPCTL_VERSION=%s\nVIPCTL_COMMIT=abc\nVIPCTL_ARCH=amd64\nVIPCTL_IMAGE=%s\nVIPCTL_IMAGE_FILE=%s\n", testVersion, testImage, testImageFn),
	}
	var sums []string
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		mode := fs.FileMode(0o644)
		if name == "vipctl" || name == "install.sh" {
			mode = 0o755
		}
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		sum := sha256.Sum256([]byte(content))
		sums = append(sums, hex.EncodeToString(sum[:])+"  "+name)
	}
	slices.SortFunc(sums, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(strings.Join(sums, "\n")+"\n"), 0o644))
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs install.sh with sh, the stub PATH and --root, plus args.
func (e *installEnv) run(args ...string) result {
	e.t.Helper()
	sh := filepath.Join(e.path, "sh")
	cmd := exec.Command(sh, append([]string{filepath.Join(e.bundle, "install.sh"), "--root", e.root}, args...)...)
	cmd.Env = []string{"PATH=" + e.path, "HOME=" + e.state, "LC_ALL=C", "STUB_LOG=" + e.log, "STUB_STATE=" + e.state}
	for k, v := range e.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("run install.sh: %v", err)
	}
	e.t.Logf("install.sh %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// calls are the stub invocations so far, one "name args" per entry.
func (e *installEnv) calls() []string {
	b, err := os.ReadFile(e.log)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	require.NoError(e.t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// changingCalls are the stub calls that change the node: imports, loads,
// labels and real (not -n) modprobes.
func (e *installEnv) changingCalls() []string {
	var out []string
	for _, c := range e.calls() {
		f := strings.Fields(c)
		switch {
		case f[0] == "modprobe" && !slices.Contains(f, "-n"),
			slices.Contains(f, "import"), slices.Contains(f, "load"), slices.Contains(f, "label"):
			out = append(out, c)
		}
	}
	return out
}

// tree describes every file under root: path, mode, mtime and content hash.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d", info.Mode(), info.ModTime().UnixNano())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out[rel] = desc
		return nil
	}))
	return out
}

func (e *installEnv) assertRootEmpty() {
	e.t.Helper()
	entries, err := os.ReadDir(e.root)
	require.NoError(e.t, err)
	assert.Empty(e.t, entries, "nothing is written under --root")
}

// loadedModules are the kernel modules that exist under /sys/module here:
// install.sh neither checks nor loads those.
func loadedModules(mods []string) []string {
	var out []string
	for _, m := range mods {
		if _, err := os.Stat(filepath.Join("/sys/module", m)); err == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestInstallFreshNode(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	r := e.run()
	require.Equal(t, 0, r.code)

	want, err := os.ReadFile(filepath.Join(e.bundle, "vipctl"))
	require.NoError(t, err)
	bin := filepath.Join(e.root, "usr", "local", "bin", "vipctl")
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	info, err := os.Stat(bin)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), info.Mode().Perm())
	leftovers, err := filepath.Glob(filepath.Join(e.root, "usr", "local", "bin", "*"))
	require.NoError(t, err)
	assert.Equal(t, []string{bin}, leftovers, "no temporary file is left next to the binary")

	// The image went into containerd's k8s.io namespace and was checked and pinned.
	calls := e.calls()
	assert.Contains(t, calls, "ctr -n k8s.io images import "+filepath.Join(e.bundle, testImageFn))
	assert.Contains(t, calls, "ctr -n k8s.io images ls -q")
	assert.Contains(t, calls, "ctr -n k8s.io images label "+testImage+" io.cri-containerd.pinned=pinned")

	// Each module is loaded unless the kernel already has it. Persisting
	// them for boot is vipctl join's (the one owner of the modules-load.d
	// file): install.sh writes no such file.
	_, err = os.Stat(filepath.Join(e.root, "etc", "modules-load.d", "vipctl.conf"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "install.sh leaves the modules-load.d file to vipctl join")
	mods := []string{"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack", "dummy"}
	loaded := loadedModules(mods)
	for _, m := range mods {
		if slices.Contains(loaded, m) {
			assert.NotContains(t, calls, "modprobe "+m)
		} else {
			assert.Contains(t, calls, "modprobe -n -q "+m, "checked before any change")
			assert.Contains(t, calls, "modprobe "+m)
		}
	}
	assert.Contains(t, r.stdout, "vipctl init --master THIS-MASTER --master MASTER2 --master MASTER3")
	assert.Regexp(t, `vipctl join --master MASTER1 --master MASTER2 --master MASTER3 \\\n\s+--token-file \S+ -- --discovery-token-ca-cert-hash`, r.stdout,
		"the hint has the required --master and --")
}

func TestInstallTwiceChangesNothing(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	require.Equal(t, 0, e.run().code)
	before := tree(t, e.root)

	r := e.run()
	require.Equal(t, 0, r.code)
	assert.Equal(t, before, tree(t, e.root), "the second run rewrites no file")
	assert.Contains(t, r.stdout, "is already vipctl "+testVersion)
}

func TestInstallUpgradesChangedBinary(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	bin := filepath.Join(e.root, "usr", "local", "bin", "vipctl")
	require.NoError(t, os.MkdirAll(filepath.Dir(bin), 0o755))
	require.NoError(t, os.WriteFile(bin, []byte("old vipctl"), 0o700))

	require.Equal(t, 0, e.run().code)
	want, err := os.ReadFile(filepath.Join(e.bundle, "vipctl"))
	require.NoError(t, err)
	got, err := os.ReadFile(bin)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	info, err := os.Stat(bin)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o755), info.Mode().Perm())
}

func TestInstallDryRunChangesNothing(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	r := e.run("--dry-run")
	require.Equal(t, 0, r.code)
	e.assertRootEmpty()
	assert.Empty(t, e.changingCalls(), "a dry run imports nothing and loads no module")
	assert.Contains(t, r.stdout, "would install")
	assert.Contains(t, r.stdout, "would import "+testImage+" into containerd")
	assert.Contains(t, r.stdout, "nothing was changed")
}

func TestInstallRefusesBadChecksum(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	require.NoError(t, os.WriteFile(filepath.Join(e.bundle, "vipctl"), []byte("#!/bin/sh\necho tampered\n"), 0o755))
	r := e.run()
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "checksum mismatch")
	assert.Contains(t, r.stderr, "vipctl: FAILED")
	e.assertRootEmpty()
	assert.Empty(t, e.changingCalls())
}

func TestInstallRefusesUnlistedFile(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	sums := filepath.Join(e.bundle, "SHA256SUMS")
	b, err := os.ReadFile(sums)
	require.NoError(t, err)
	var kept []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasSuffix(l, " "+testImageFn) {
			kept = append(kept, l)
		}
	}
	require.NoError(t, os.WriteFile(sums, []byte(strings.Join(kept, "\n")+"\n"), 0o644))
	r := e.run()
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "SHA256SUMS does not list "+testImageFn)
	e.assertRootEmpty()
	assert.Empty(t, e.changingCalls())
}

func TestInstallRefusesOtherArchitecture(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	e.env["STUB_MACHINE"] = "aarch64"
	r := e.run()
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "this bundle is for linux/amd64")
	assert.Contains(t, r.stderr, "vipctl-offline-"+testVersion+"-linux-arm64.tar.gz")
	e.assertRootEmpty()
	assert.Empty(t, e.changingCalls())
}

func TestInstallNeedsARuntime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stubs []string
		env   map[string]string
		args  []string
		want  string
	}{
		{"none installed", nil, nil, nil, "no container runtime answers"},
		{"containerd down, docker down", []string{"ctr", "docker"}, map[string]string{"STUB_CTR": "down", "STUB_DOCKER": "down"}, nil, "no container runtime answers"},
		{"named runtime missing", []string{"ctr"}, nil, []string{"--runtime", "podman"}, "--runtime podman: it is not installed or does not answer"},
		{"bad runtime name", []string{"ctr"}, nil, []string{"--runtime", "rkt"}, `--runtime "rkt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newInstallEnv(t, tc.stubs...)
			for k, v := range tc.env {
				e.env[k] = v
			}
			r := e.run(tc.args...)
			assert.NotEqual(t, 0, r.code)
			assert.Contains(t, r.stderr, tc.want)
			e.assertRootEmpty()
			assert.Empty(t, e.changingCalls())
		})
	}
}

func TestInstallImportsIntoEveryRunningRuntime(t *testing.T) {
	e := newInstallEnv(t, "ctr", "docker", "podman")
	e.env["STUB_CTR"] = "down"
	r := e.run()
	require.Equal(t, 0, r.code)
	calls := e.calls()
	img := filepath.Join(e.bundle, testImageFn)
	assert.NotContains(t, calls, "ctr -n k8s.io images import "+img, "containerd does not answer")
	assert.Contains(t, calls, "docker load -i "+img)
	assert.Contains(t, calls, "podman load -i "+img)
	assert.Contains(t, r.stdout, "docker: "+testImage+" is present")
	assert.Contains(t, r.stdout, "podman: "+testImage+" is present")

	// --runtime picks one.
	e2 := newInstallEnv(t, "ctr", "docker", "podman")
	require.Equal(t, 0, e2.run("--runtime", "podman").code)
	assert.Equal(t, []string{"podman load -i " + filepath.Join(e2.bundle, testImageFn)},
		filterPrefix(e2.changingCalls(), "ctr", "docker", "podman"))
}

func filterPrefix(calls []string, prefixes ...string) []string {
	var out []string
	for _, c := range calls {
		for _, p := range prefixes {
			if strings.HasPrefix(c, p+" ") {
				out = append(out, c)
			}
		}
	}
	return out
}

func TestInstallFailsWhenTheTagIsMissingAfterImport(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	e.env["STUB_CTR"] = "lossy"
	r := e.run()
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "containerd: "+testImage+" is not present after the import")
}

func TestInstallNeedsTheKernelModules(t *testing.T) {
	var missing string
	for _, m := range []string{"ip_vs", "ip_vs_rr", "ip_vs_sh", "dummy"} {
		if len(loadedModules([]string{m})) == 0 {
			missing = m
			break
		}
	}
	if missing == "" {
		t.Skip("every candidate module is already loaded on this host: install.sh would not check it")
	}
	e := newInstallEnv(t, "ctr")
	e.env["STUB_MISSING_MODULES"] = missing
	r := e.run()
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "kernel modules not available")
	assert.Contains(t, r.stderr, missing)
	assert.Contains(t, r.stderr, "--skip-modules")
	e.assertRootEmpty()
	assert.Empty(t, e.changingCalls())

	// --skip-modules installs anyway and leaves modules alone.
	r = e.run("--skip-modules")
	require.Equal(t, 0, r.code)
	for _, c := range e.calls() {
		assert.False(t, strings.HasPrefix(c, "modprobe ") && !strings.Contains(c, "-n"), "no module is loaded: %s", c)
	}
	_, err := os.Stat(filepath.Join(e.root, "etc", "modules-load.d", "vipctl.conf"))
	assert.True(t, errors.Is(err, fs.ErrNotExist), "no modules-load.d file with --skip-modules")
}

func TestInstallRejectsBadArguments(t *testing.T) {
	e := newInstallEnv(t, "ctr")
	r := e.run("--frobnicate")
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, `unknown argument "--frobnicate"`)

	r = e.run("--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "--dry-run")
	e.assertRootEmpty()
	assert.Empty(t, e.calls(), "--help and bad arguments run nothing")
}
