package manifests

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

func TestWriteFileCreatesWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "kubernetes", "manifests")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	path := filepath.Join(dir, "vipctl-care.yaml")
	require.NoError(t, WriteFile(path, []byte("first\n")))

	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "first\n", string(got))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assertOnlyFile(t, dir, "vipctl-care.yaml")
}

func TestWriteFileReplacesAndTightensMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vipctl-care.yaml")
	require.NoError(t, os.WriteFile(path, []byte("old content that is longer\n"), 0o644))

	require.NoError(t, WriteFile(path, []byte("new\n")))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "new\n", string(got))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assertOnlyFile(t, dir, "vipctl-care.yaml")
}

func TestWriteFileFailsWithoutLeftovers(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty folder: rename must fail, and the temporary
	// file must be cleaned up.
	path := filepath.Join(dir, "vipctl-care.yaml")
	require.NoError(t, os.MkdirAll(filepath.Join(path, "x"), 0o755))
	err := WriteFile(path, []byte("data"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assertOnlyFile(t, dir, "vipctl-care.yaml")
}

func TestWriteFileDoesNotCreateAMissingFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "kubernetes", "manifests")
	err := WriteFile(filepath.Join(dir, "vipctl-care.yaml"), []byte("x"))
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), dir)
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist, "no folder is created silently")
}

// A folder sync that fails after the rename leaves the manifest in place:
// the write succeeds rather than telling the user it failed.
func TestWriteFileSucceedsWhenOnlyTheFolderSyncFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vipctl-care.yaml")
	synced := false
	w := atomicfile.Writer{SyncDir: func(string) error { synced = true; return syscall.EIO }}
	require.NoError(t, writeFile(w, path, []byte("new\n")))
	assert.True(t, synced, "the folder sync was attempted")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "new\n", string(got))
	assertOnlyFile(t, dir, "vipctl-care.yaml")
}

func assertOnlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{name}, names, "no temporary files left in %s", dir)
}
