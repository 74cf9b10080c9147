package manifests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteFileCreatesWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "kubernetes", "manifests")
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
