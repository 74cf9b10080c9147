package hosts

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const withVIP = debianHosts + "10.103.97.2 apiserver.cluster.local # vipctl\n"

var (
	vipAddr = netip.MustParseAddr(vip)
	past    = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
)

// writeHosts creates a hosts file with the given content and mode in a new
// directory, its modification time in the past so a rewrite shows.
func writeHosts(t *testing.T, content string, mode fs.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(path, []byte(content), mode))
	require.NoError(t, os.Chmod(path, mode)) // not subject to the umask
	require.NoError(t, os.Chtimes(path, past, past))
	return path
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func stat(t *testing.T, path string) (fs.FileInfo, *syscall.Stat_t) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi, fi.Sys().(*syscall.Stat_t)
}

// assertOnlyHosts checks that the directory holds the hosts file and no
// leftover temporary file.
func assertOnlyHosts(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"hosts"}, names)
}

func TestFileSetRemove(t *testing.T) {
	ctx := t.Context()
	path := writeHosts(t, debianHosts, 0o644)
	f := File{Path: path}

	changed, err := f.Set(ctx, api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, withVIP, readString(t, path))
	ms, err := f.Lookup(api)
	require.NoError(t, err)
	assert.Equal(t, []Mapping{{Addr: vipAddr, Line: 8, Managed: true}}, ms)
	assertOnlyHosts(t, filepath.Dir(path))

	changed, err = f.Remove(ctx, api)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, debianHosts, readString(t, path))
	ms, err = f.Lookup(api)
	require.NoError(t, err)
	assert.Empty(t, ms)
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileNoChangeDoesNotWrite(t *testing.T) {
	ctx := t.Context()
	path := writeHosts(t, withVIP, 0o644)
	f := File{Path: path}
	fi, st := stat(t, path)

	changed, err := f.Set(ctx, api, vipAddr)
	require.NoError(t, err)
	assert.False(t, changed)
	changed, err = f.Remove(ctx, "absent.example.com")
	require.NoError(t, err)
	assert.False(t, changed)

	fi2, st2 := stat(t, path)
	assert.Equal(t, fi.ModTime(), fi2.ModTime(), "modification time")
	assert.Equal(t, st.Ino, st2.Ino, "inode")
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileSetReplacesAtomicallyKeepingModeAndOwner(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o640)
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		uid, gid = 4321, 8765
		require.NoError(t, os.Chown(path, uid, gid))
	}
	_, before := stat(t, path)

	changed, err := File{Path: path}.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)

	fi, after := stat(t, path)
	assert.NotEqual(t, before.Ino, after.Ino, "the file was replaced, not rewritten in place")
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())
	assert.Equal(t, uint32(uid), after.Uid)
	assert.Equal(t, uint32(gid), after.Gid)
	assert.Equal(t, withVIP, readString(t, path))
}

func TestFileSetCreatesMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	f := File{Path: path}

	changed, err := f.Remove(t.Context(), api)
	require.NoError(t, err)
	assert.False(t, changed)
	assert.NoFileExists(t, path, "Remove created the file")

	changed, err = f.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, "10.103.97.2 apiserver.cluster.local # vipctl\n", readString(t, path))
	fi, _ := stat(t, path)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
}

func TestFileSymlinkIsFollowed(t *testing.T) {
	target := writeHosts(t, debianHosts, 0o644)
	link := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.Symlink(target, link))

	changed, err := File{Path: link}.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)

	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&fs.ModeSymlink, "the link was replaced")
	assert.Equal(t, withVIP, readString(t, target))
	assertOnlyHosts(t, filepath.Dir(target))
}

func TestFileDanglingSymlink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.Symlink(filepath.Join(t.TempDir(), "missing"), link))

	_, err := File{Path: link}.Set(t.Context(), api, vipAddr)
	require.ErrorContains(t, err, "symbolic link to a missing file")
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&fs.ModeSymlink, "the link was replaced")
}

// A failure (or crash) after the temporary file is written and before it is
// renamed leaves the original intact; a complete new file sits beside it.
func TestFileFailureBeforeRenameKeepsOriginal(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o600)
	hookRan := false
	f := File{Path: path, beforeRename: func(tmp string) error {
		hookRan = true
		assert.Equal(t, filepath.Dir(path), filepath.Dir(tmp), "temporary file in the same directory")
		assert.Equal(t, debianHosts, readString(t, path), "original intact before the rename")
		assert.Equal(t, withVIP, readString(t, tmp), "temporary file complete before the rename")
		fi, _ := stat(t, tmp)
		assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm(), "temporary file has the original's mode")
		return errors.New("simulated crash")
	}}

	changed, err := f.Set(t.Context(), api, vipAddr)
	require.ErrorContains(t, err, "simulated crash")
	assert.False(t, changed)
	assert.True(t, hookRan)
	assert.Equal(t, debianHosts, readString(t, path))
	fi, _ := stat(t, path)
	assert.Equal(t, past, fi.ModTime().UTC())
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileRenameFailureKeepsOriginal(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	f := File{Path: path, rename: func(oldpath, newpath string) error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EIO}
	}}

	changed, err := f.Set(t.Context(), api, vipAddr)
	require.ErrorIs(t, err, syscall.EIO)
	assert.ErrorContains(t, err, "replace "+path)
	assert.False(t, changed)
	assert.Equal(t, debianHosts, readString(t, path))
	assertOnlyHosts(t, filepath.Dir(path))
}

// Once the file is replaced (or removed) the update succeeds even when the
// directory cannot be synced; that goes to NotDurable.
func TestFileDirectorySyncFailureIsNotAFailure(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	var warned []error
	f := File{Path: path, NotDurable: func(err error) { warned = append(warned, err) },
		syncDir: func(string) error { return syscall.EIO }}
	changed, err := f.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, withVIP, readString(t, path))
	require.Len(t, warned, 1)
	assert.ErrorIs(t, warned[0], syscall.EIO)

	changed, err = f.Restore(t.Context(), Snapshot{})
	require.NoError(t, err)
	assert.True(t, changed)
	_, err = os.Stat(path)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	require.Len(t, warned, 2)
	assert.Contains(t, warned[1].Error(), "removed "+path)
}

// A bind-mounted file cannot be renamed over (EBUSY): it is rewritten in place.
func TestFileBindMountFallsBackToInPlaceWrite(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	_, before := stat(t, path)
	renames := 0
	f := File{Path: path, rename: func(oldpath, newpath string) error {
		renames++
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EBUSY}
	}}

	changed, err := f.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, withVIP, readString(t, path))
	_, after := stat(t, path)
	assert.Equal(t, before.Ino, after.Ino, "written in place")
	assertOnlyHosts(t, filepath.Dir(path))

	// A shorter content truncates the file.
	changed, err = f.Remove(t.Context(), api)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, debianHosts, readString(t, path))
	assert.Equal(t, 2, renames)
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileReadOnlyDirectory(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	makeReadOnly(t, filepath.Dir(path))

	changed, err := File{Path: path}.Set(t.Context(), api, vipAddr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "create temporary file beside "+path)
	assert.False(t, changed)
	assert.Equal(t, debianHosts, readString(t, path))
	assertOnlyHosts(t, filepath.Dir(path))
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h (chattr +i).
const fsImmutableFL = 0x00000010

// makeReadOnly makes dir unwritable: by its mode, or for root, who ignores
// modes, with the immutable attribute.
func makeReadOnly(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
	probe := filepath.Join(dir, "probe")
	err := os.WriteFile(probe, nil, 0o644)
	if err != nil {
		return
	}
	require.NoError(t, os.Remove(probe))

	d, err := os.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	flags, err := unix.IoctlGetUint32(int(d.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(d.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL))
	}
	if err != nil {
		t.Skipf("cannot make %s read-only: running as root and the immutable attribute is not available: %v", dir, err)
	}
	t.Cleanup(func() {
		d, err := os.Open(dir)
		require.NoError(t, err)
		defer d.Close()
		require.NoError(t, unix.IoctlSetPointerInt(int(d.Fd()), unix.FS_IOC_SETFLAGS, int(flags)))
	})
}

// Another writer changing the file during the update is not overwritten: the
// edit is recomputed from its content.
func TestFileConcurrentWriterIsKept(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	const theirs = "192.168.1.20 registry.local\n"
	calls := 0
	f := File{Path: path, beforeRename: func(string) error {
		calls++
		if calls == 1 {
			require.NoError(t, os.WriteFile(path, []byte(debianHosts+theirs), 0o644))
		}
		return nil
	}}

	changed, err := f.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 2, calls)
	assert.Equal(t, debianHosts+theirs+"10.103.97.2 apiserver.cluster.local # vipctl\n", readString(t, path))
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileConflictGivesUp(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	calls := 0
	f := File{Path: path, beforeRename: func(string) error {
		calls++
		return os.WriteFile(path, []byte(debianHosts+"# edit "+string(rune('a'+calls))+"\n"), 0o644)
	}}

	changed, err := f.Set(t.Context(), api, vipAddr)
	require.ErrorIs(t, err, errConflict)
	assert.ErrorContains(t, err, "gave up")
	assert.False(t, changed)
	assert.Equal(t, maxAttempts, calls)
	assert.Equal(t, debianHosts+"# edit "+string(rune('a'+calls))+"\n", readString(t, path), "the other writer's content stays")
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileCanceledContext(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	changed, err := File{Path: path}.Set(ctx, api, vipAddr)
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, changed)
	assert.Equal(t, debianHosts, readString(t, path))
}

func TestFileBadInputChangesNothing(t *testing.T) {
	path := writeHosts(t, withVIP, 0o644)
	f := File{Path: path}

	_, err := f.Set(t.Context(), "bad_name", vipAddr)
	require.ErrorIs(t, err, ErrInvalidName)
	assert.ErrorContains(t, err, `"bad_name"`)
	_, err = f.Set(t.Context(), api, netip.MustParseAddr("0.0.0.0"))
	require.ErrorIs(t, err, ErrInvalidAddr)
	_, err = f.Remove(t.Context(), "bad_name")
	require.ErrorIs(t, err, ErrInvalidName)

	assert.Equal(t, withVIP, readString(t, path))
	fi, _ := stat(t, path)
	assert.Equal(t, past, fi.ModTime().UTC())
}

func TestFileLookupMissingFile(t *testing.T) {
	_, err := File{Path: filepath.Join(t.TempDir(), "hosts")}.Lookup(api)
	require.ErrorIs(t, err, fs.ErrNotExist)

	_, err = File{}.Lookup(api)
	require.ErrorContains(t, err, "path is empty")
}

func TestFileSnapshotRestore(t *testing.T) {
	ctx := t.Context()
	orig := "192.168.1.10 master1 apiserver.cluster.local\n127.0.0.1 localhost" // no final newline
	path := writeHosts(t, orig, 0o644)
	f := File{Path: path}

	snap, err := f.Snapshot()
	require.NoError(t, err)
	_, err = f.Set(ctx, api, vipAddr)
	require.NoError(t, err)
	require.NotEqual(t, orig, readString(t, path))

	changed, err := f.Restore(ctx, snap)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, orig, readString(t, path), "exact previous bytes")
	changed, err = f.Restore(ctx, snap)
	require.NoError(t, err)
	assert.False(t, changed)
	assertOnlyHosts(t, filepath.Dir(path))
}

func TestFileSnapshotRestoreMissingFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "hosts")
	f := File{Path: path}

	snap, err := f.Snapshot()
	require.NoError(t, err)
	assert.False(t, snap.Exists)
	_, err = f.Set(ctx, api, vipAddr)
	require.NoError(t, err)
	require.FileExists(t, path)

	changed, err := f.Restore(ctx, snap)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.NoFileExists(t, path)
}

func TestFileKeepsSELinuxLabel(t *testing.T) {
	path := writeHosts(t, debianHosts, 0o644)
	label := []byte("system_u:object_r:net_conf_t:s0\x00")
	if err := unix.Setxattr(path, selinuxXattr, label, 0); err != nil {
		t.Skipf("cannot set %s on a test file (needs root, or SELinux allowing it): %v", selinuxXattr, err)
	}

	_, err := File{Path: path}.Set(t.Context(), api, vipAddr)
	require.NoError(t, err)

	got, err := getxattr(func(b []byte) (int, error) { return unix.Getxattr(path, selinuxXattr, b) })
	require.NoError(t, err)
	assert.Equal(t, string(label), string(got))
	assert.Equal(t, withVIP, readString(t, path))
}

// On a real kernel, renaming over a bind-mounted file fails with EBUSY and
// the file is rewritten in place. The mount is made in a private mount
// namespace of one OS thread, so the host's mounts are never touched.
func TestFileRealBindMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount a file in a new mount namespace")
	}
	path := writeHosts(t, debianHosts, 0o644)
	src := writeHosts(t, debianHosts, 0o644) // what the bind mount shows at path

	var (
		setupErr, setErr error
		changed          bool
		seen             string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, and its mount namespace, end with the
		// goroutine.
		runtime.LockOSThread()
		if setupErr = unix.Unshare(unix.CLONE_NEWNS); setupErr != nil {
			return
		}
		if setupErr = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); setupErr != nil {
			return
		}
		if setupErr = unix.Mount(src, path, "", unix.MS_BIND, ""); setupErr != nil {
			return
		}
		changed, setErr = File{Path: path}.Set(t.Context(), api, vipAddr)
		b, _ := os.ReadFile(path)
		seen = string(b)
	}()
	<-done
	if setupErr != nil {
		t.Skipf("cannot bind-mount a file in a new mount namespace: %v", setupErr)
	}

	require.NoError(t, setErr)
	assert.True(t, changed)
	assert.Equal(t, withVIP, seen, "content seen through the mount")
	assert.Equal(t, withVIP, readString(t, src), "the mounted file was written in place")
	assert.Equal(t, debianHosts, readString(t, path), "the file under the mount is untouched")
	assertOnlyHosts(t, filepath.Dir(path))
}
