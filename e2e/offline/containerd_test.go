package offline

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/image"
	"github.com/vipctl/vipctl/image/imagetest"
	"golang.org/x/sys/unix"
)

// The bundle TestOfflineBundleOnContainerd builds.
const (
	e2eVersion = "v0.0.0-offline-e2e"
	e2eCommit  = "0123456789abcdef0123456789abcdef01234567"
	e2eEpoch   = "1767323045"
	e2eImage   = image.DefaultRepository + ":" + e2eVersion
)

// TestOfflineBundleOnContainerd is the air-gapped path for real: build the
// bundle with scripts/offline.sh, verify and unpack it, install it with
// install.sh into a private containerd (its own root, state, socket and runc
// root; the host's containerd, if any, is not touched) and run the imported
// image with ctr. No registry and no network are involved. It also imports a
// multi-arch OCI archive and runs the host's platform from it.
func TestOfflineBundleOnContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the containerd import, which builds a bundle and runs containers (make test runs it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: containerd and runc run containers")
	}
	for _, tool := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: apt-get install -y containerd runc): %v", tool, err)
		}
	}
	for _, tool := range []string{"go", "bash", "tar", "gzip", "sha256sum", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("scripts/offline.sh and install.sh need %s: %v", tool, err)
		}
	}
	arch := runtime.GOARCH
	if arch != "amd64" && arch != "arm64" {
		t.Skipf("bundles are built for amd64 and arm64, not %s", arch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	step := stepTimer(t)

	// 1. make offline, for this host's architecture only.
	dist := filepath.Join(dir, "dist")
	out, err := command(ctx, repoRoot(t), []string{
		"ARCHES=" + arch, "DIST=" + dist, "VERSION=" + e2eVersion, "COMMIT=" + e2eCommit, "SOURCE_DATE_EPOCH=" + e2eEpoch,
	}, "bash", filepath.Join(repoRoot(t), "scripts", "offline.sh"))
	require.NoError(t, err, "scripts/offline.sh:\n%s", out)
	step("scripts/offline.sh (ARCHES=%s)", arch)
	name := "vipctl-offline-" + e2eVersion + "-linux-" + arch
	ociArchive := "vipctl-image-" + e2eVersion + ".oci.tar"
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	require.NoError(t, err)
	assert.Contains(t, string(sums), "  "+name+".tar.gz\n")
	assert.Contains(t, string(sums), "  "+ociArchive+"\n")
	out, err = command(ctx, dist, nil, "sha256sum", "-c", "SHA256SUMS")
	require.NoError(t, err, "dist/SHA256SUMS:\n%s", out)

	// 2. Unpack the bundle the way a user would.
	node := filepath.Join(dir, "node")
	require.NoError(t, os.MkdirAll(node, 0o755))
	out, err = command(ctx, node, nil, "tar", "-xzf", filepath.Join(dist, name+".tar.gz"))
	require.NoError(t, err, "unpack:\n%s", out)
	bundle := filepath.Join(node, name)
	for _, f := range []string{"vipctl", "install.sh", "README.md", "SHA256SUMS", "bundle.env", "images/vipctl-" + e2eVersion + "-linux-" + arch + ".tar"} {
		assert.FileExists(t, filepath.Join(bundle, f))
	}
	// The example static pod, when this vipctl renders one, runs the bundled image.
	if pod, err := os.ReadFile(filepath.Join(bundle, "manifests", "vipctl-care.yaml")); err == nil {
		assert.Contains(t, string(pod), "image: "+e2eImage)
	} else {
		t.Logf("no example manifest in the bundle: %v", err)
	}

	// 3. A private containerd.
	c := startContainerd(ctx, t, filepath.Join(dir, "c"))
	step("containerd answering")

	// 4. install.sh imports the image into it (--root keeps the host's /usr and /etc out of it).
	root := filepath.Join(dir, "root")
	require.NoError(t, os.MkdirAll(root, 0o755))
	out, err = command(ctx, bundle, []string{"CONTAINERD_ADDRESS=" + c.sock}, "sh", "./install.sh", "--root", root, "--skip-modules", "--runtime", "containerd")
	require.NoError(t, err, "install.sh:\n%s", out)
	assert.Contains(t, out, "containerd: "+e2eImage+" is present")
	step("install.sh")

	out, err = command(ctx, "", nil, filepath.Join(root, "usr", "local", "bin", "vipctl"), "version", "-o", "json")
	require.NoError(t, err, out)
	var v struct{ Version, Commit, Platform string }
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	assert.Equal(t, e2eVersion, v.Version)
	assert.Equal(t, e2eCommit, v.Commit)

	// 5. The image is there under its tag, and runs.
	out, err = c.ctr(ctx, "-n", "k8s.io", "images", "ls", "-q")
	require.NoError(t, err, out)
	assert.Contains(t, strings.Fields(out), e2eImage)
	out, err = c.run(ctx, "k8s.io", e2eImage, "/vipctl", "version")
	require.NoError(t, err, "ctr run:\n%s", out)
	assert.Contains(t, out, "vipctl "+e2eVersion+" (commit "+e2eCommit)
	assert.Contains(t, out, "linux/"+arch)
	step("ctr run %s /vipctl version", e2eImage)

	// 6. The multi-arch OCI archive from dist imports too (one platform here).
	out, err = c.ctr(ctx, "-n", "vipctl-oci", "images", "import", filepath.Join(dist, ociArchive))
	require.NoError(t, err, "import %s:\n%s", ociArchive, out)
	out, err = c.run(ctx, "vipctl-oci", e2eImage, "/vipctl", "version")
	require.NoError(t, err, "ctr run:\n%s", out)
	assert.Contains(t, out, "vipctl "+e2eVersion)

	// 7. A two-platform OCI archive: containerd keeps the index and runs this host's image.
	other := map[string]elf.Machine{"amd64": elf.EM_AARCH64, "arm64": elf.EM_X86_64}[arch]
	otherArch := map[string]string{"amd64": "arm64", "arm64": "amd64"}[arch]
	built, err := image.Build([]image.Binary{
		{Platform: v1.Platform{OS: "linux", Architecture: arch}, Path: filepath.Join(bundle, "vipctl")},
		{Platform: v1.Platform{OS: "linux", Architecture: otherArch}, Path: imagetest.FakeELF(t, dir, "other", other, "", nil)},
	}, image.Meta{Version: e2eVersion, Revision: e2eCommit, Created: time.Unix(0, 0)})
	require.NoError(t, err)
	multiTag, err := image.ParseTag(image.DefaultRepository + ":multi-arch-e2e")
	require.NoError(t, err)
	multi := filepath.Join(dir, "multi.oci.tar")
	require.NoError(t, image.WriteFile(multi, image.FormatOCI, multiTag, built))
	out, err = c.ctr(ctx, "-n", "vipctl-oci", "images", "import", multi)
	require.NoError(t, err, "import multi-arch:\n%s", out)
	out, err = c.ctr(ctx, "-n", "vipctl-oci", "images", "ls")
	require.NoError(t, err, out)
	wantIndex, err := built.Index.Digest()
	require.NoError(t, err)
	assert.Contains(t, out, wantIndex.String(), "containerd names the index's digest")
	assert.Contains(t, out, "linux/amd64,linux/arm64")
	out, err = c.run(ctx, "vipctl-oci", multiTag.Name(), "/vipctl", "version")
	require.NoError(t, err, "ctr run multi-arch:\n%s", out)
	assert.Contains(t, out, "linux/"+arch)
	step("OCI archives imported and run")

	c.stop(t)
	step("containerd stopped")
}

// containerd is a private containerd daemon for one test.
type containerd struct {
	dir     string
	sock    string
	cmd     *exec.Cmd
	done    chan error // receives cmd.Wait's result once
	cancel  context.CancelFunc
	log     *os.File
	stopped bool
	runs    int
}

// startContainerd starts containerd with its root, state, socket, CRI dirs
// and runc root under dir, and waits until it answers. It is stopped (SIGTERM,
// then wait) when the test ends, and anything left mounted under dir is
// unmounted.
func startContainerd(ctx context.Context, t *testing.T, dir string) *containerd {
	t.Helper()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), done: make(chan error, 1)}
	if len(c.sock) > 100 {
		t.Fatalf("socket path %s is too long for a unix socket: set TMPDIR to a shorter directory", c.sock)
	}
	require.NoError(t, os.MkdirAll(dir, 0o700))
	// The CRI section is what a kubelet would use; restrict_oom_score_adj is
	// needed where the sandbox lacks CAP_SYS_RESOURCE. ctr itself does not use CRI.
	config := fmt.Sprintf(`version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[1]q
      conf_dir = %[2]q
  [plugins."io.containerd.internal.v1.opt"]
    path = %[3]q
`, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), filepath.Join(dir, "opt"))
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o600))
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	require.NoError(t, err)

	daemonCtx, cancel := context.WithCancel(ctx)
	c.cancel, c.log = cancel, logFile
	c.cmd = exec.CommandContext(daemonCtx, "containerd", "--config", cfg,
		"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "--address", c.sock)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.Cancel = func() error { return c.cmd.Process.Signal(syscall.SIGTERM) }
	c.cmd.WaitDelay = 20 * time.Second
	require.NoError(t, c.cmd.Start())
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() { c.stop(t) })

	// Poll until it answers, failing fast if it exits.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if _, err := c.ctr(ctx, "version"); err == nil {
			return c
		}
		select {
		case err := <-c.done:
			c.done <- err
			t.Fatalf("containerd exited before answering: %v\n%s", err, tail(filepath.Join(dir, "containerd.log")))
		case <-deadline:
			t.Fatalf("containerd did not answer on %s within 30s\n%s", c.sock, tail(filepath.Join(dir, "containerd.log")))
		case <-ctx.Done():
			t.Fatalf("containerd: %v", ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends containerd SIGTERM, waits for it to exit and unmounts what it left.
func (c *containerd) stop(t *testing.T) {
	t.Helper()
	if c.stopped {
		return
	}
	c.stopped = true
	c.cancel()
	// Wait reports context.Canceled when the process exits non-zero after
	// Cancel's SIGTERM; any other error means it did not stop as asked.
	if err := <-c.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("containerd exited: %v\n%s", err, tail(c.log.Name()))
	}
	t.Logf("containerd stopped: %s", c.cmd.ProcessState)
	_ = c.log.Close()
	unmountUnder(t, c.dir)
}

// ctr runs ctr against this containerd.
func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	return command(ctx, "", nil, "ctr", append([]string{"--address", c.sock}, args...)...)
}

// run runs ref's command in a new container and removes it; the runc state
// and FIFOs stay under the test's directory and the id is unique to this process.
func (c *containerd) run(ctx context.Context, namespace, ref string, cmd ...string) (string, error) {
	c.runs++
	id := fmt.Sprintf("vipctl-offline-e2e-%d-%d", os.Getpid(), c.runs)
	args := append([]string{"-n", namespace, "run", "--rm",
		"--runc-root", filepath.Join(c.dir, "runc"), "--fifo-dir", filepath.Join(c.dir, "fifo"),
		ref, id}, cmd...)
	return c.ctr(ctx, args...)
}

// command runs name with args in dir (the current one if empty), with the
// process environment plus env, and returns stdout and stderr together.
func command(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// unmountUnder detaches every mount at or below dir, deepest first, so that
// the test's directory can be removed even if containerd left a snapshot mounted.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("cannot list mounts: %v", err)
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// stepTimer logs how long each step took and the total.
func stepTimer(t *testing.T) func(format string, args ...any) {
	start := time.Now()
	last := start
	return func(format string, args ...any) {
		now := time.Now()
		t.Logf("%-50s %6.2fs (total %6.2fs)", fmt.Sprintf(format, args...), now.Sub(last).Seconds(), now.Sub(start).Seconds())
		last = now
	}
}
