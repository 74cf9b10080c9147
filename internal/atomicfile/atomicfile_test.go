package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteFileCreatesAndReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	require.NoError(t, WriteFile(path, []byte("first\n"), 0o600))
	assertFile(t, path, "first\n", 0o600)
	require.NoError(t, os.Chmod(path, 0o666))
	require.NoError(t, WriteFile(path, []byte("second\n"), 0o640))
	assertFile(t, path, "second\n", 0o640)
	assertOnly(t, dir, "f.yaml")
}

func TestMissingFolderIsAnErrorNamingIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	path := filepath.Join(dir, "f.yaml")
	err := WriteFile(path, []byte("x"), 0o600)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), "the folder "+dir+" does not exist")
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the folder is not created")
}

func TestFailureBeforeTheRenameChangesNothing(t *testing.T) {
	for name, w := range map[string]Writer{
		"prepare":       {Prepare: func(*os.File) error { return errors.New("injected") }},
		"before rename": {BeforeRename: func(string) error { return errors.New("injected") }},
		"rename":        {Rename: func(string, string) error { return syscall.EIO }},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			require.NoError(t, os.WriteFile(path, []byte("old\n"), 0o644))
			require.Error(t, w.WriteFile(path, []byte("new\n"), 0o600))
			assertFile(t, path, "old\n", 0o644)
			assertOnly(t, dir, "f")
		})
	}
	t.Run("fill", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		err := Writer{}.Write(path, 0o644, func(w io.Writer) error {
			_, _ = w.Write([]byte("half"))
			return errors.New("injected")
		})
		require.ErrorContains(t, err, "injected")
		assertOnly(t, dir)
	})
}

// The file is in place once renamed: a failed folder sync is reported as
// weaker durability, not as a failed write.
func TestFolderSyncFailureAfterTheRenameIsNotAFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	var warned error
	w := Writer{SyncDir: func(string) error { return syscall.EIO }, NotDurable: func(err error) { warned = err }}
	require.NoError(t, w.WriteFile(path, []byte("new\n"), 0o600))
	assertFile(t, path, "new\n", 0o600)
	require.Error(t, warned)
	assert.ErrorIs(t, warned, syscall.EIO)
	assert.Contains(t, warned.Error(), path)
	assertOnly(t, dir, "f")
}

func assertFile(t *testing.T, path, want string, perm fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, want, string(got))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, perm, st.Mode().Perm())
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	assert.Equal(t, names, got, "no temporary file left in %s", dir)
}
