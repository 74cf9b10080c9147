//go:build !watchdog

package main

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/image"
	"github.com/vipctl/vipctl/image/imagetest"
	"go.uber.org/zap"
)

func runImage(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newImageCmd(&app{log: zap.NewNop()})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestImageBuildWritesDockerArchive(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1767323045")
	dir := t.TempDir()
	bin := imagetest.FakeELF(t, dir, "vipctl", elf.EM_X86_64, "", []byte("payload"))
	out := filepath.Join(dir, "image.tar")

	stdout, err := runImage(t, "build", "--binary", "linux/amd64="+bin, "--version", "v9.8.7", "--revision", "abc", "-o", out)
	require.NoError(t, err)

	tag, err := name.NewTag(image.DefaultRepository + ":v9.8.7")
	require.NoError(t, err)
	img, err := tarball.ImageFromPath(out, &tag)
	require.NoError(t, err, "the archive holds the default tag")
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "v9.8.7", cf.Config.Labels[image.LabelVersion])
	assert.Equal(t, "abc", cf.Config.Labels[image.LabelRevision])
	assert.Equal(t, int64(1767323045), cf.Created.Unix(), "created comes from SOURCE_DATE_EPOCH")

	// stdout is one "PLATFORM DIGEST" line; the digest is the image's.
	fields := strings.Fields(stdout)
	require.Len(t, fields, 2, stdout)
	assert.Equal(t, "linux/amd64", fields[0])
	assert.True(t, strings.HasPrefix(fields[1], "sha256:"), stdout)

	// The same inputs give the same digest; --created overrides the environment.
	again := filepath.Join(dir, "again.tar")
	stdout2, err := runImage(t, "build", "--binary", "linux/amd64="+bin, "--version", "v9.8.7", "--revision", "abc", "-o", again)
	require.NoError(t, err)
	assert.Equal(t, stdout, stdout2)
	stdout3, err := runImage(t, "build", "--binary", "linux/amd64="+bin, "--version", "v9.8.7", "--revision", "abc", "--created", "0", "-o", again)
	require.NoError(t, err)
	assert.NotEqual(t, stdout, stdout3)
}

func TestImageBuildOCIIndex(t *testing.T) {
	dir := t.TempDir()
	a := imagetest.FakeELF(t, dir, "a", elf.EM_X86_64, "", nil)
	b := imagetest.FakeELF(t, dir, "b", elf.EM_AARCH64, "", nil)
	out := filepath.Join(dir, "image.oci.tar")
	stdout, err := runImage(t, "build", "--binary", "linux/amd64="+a, "--binary", "linux/arm64="+b,
		"--format", "oci-archive", "--tag", "registry.example:5000/vipctl:test", "-o", out)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 3, stdout)
	assert.True(t, strings.HasPrefix(lines[0], "linux/amd64 sha256:"))
	assert.True(t, strings.HasPrefix(lines[1], "linux/arm64 sha256:"))
	assert.True(t, strings.HasPrefix(lines[2], "index sha256:"))
	_, err = os.Stat(out)
	require.NoError(t, err)
}

func TestImageBuildRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	bin := imagetest.FakeELF(t, dir, "vipctl", elf.EM_X86_64, "", nil)
	arm := imagetest.FakeELF(t, dir, "arm", elf.EM_AARCH64, "", nil)
	out := filepath.Join(dir, "image.tar")
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"no output", "", []string{"--binary", "linux/amd64=" + bin}, "--output"},
		{"no binary", "", []string{"-o", out}, "--binary"},
		{"bad binary", "", []string{"--binary", "amd64:" + bin, "-o", out}, "--binary"},
		{"bad format", "", []string{"--binary", "linux/amd64=" + bin, "--format", "tar", "-o", out}, "--format"},
		{"two platforms in docker-archive", "", []string{"--binary", "linux/amd64=" + bin, "--binary", "linux/arm64=" + arm, "-o", out}, "--format docker-archive holds one platform"},
		{"short tag", "", []string{"--binary", "linux/amd64=" + bin, "--tag", "vipctl:dev", "-o", out}, "--tag"},
		{"bad created", "", []string{"--binary", "linux/amd64=" + bin, "--created", "today", "-o", out}, "--created"},
		{"bad SOURCE_DATE_EPOCH", "soon", []string{"--binary", "linux/amd64=" + bin, "-o", out}, "SOURCE_DATE_EPOCH"},
		{"wrong architecture", "", []string{"--binary", "linux/amd64=" + arm, "-o", out}, "not amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", tc.env)
			_, err := runImage(t, append([]string{"build"}, tc.args...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			_, statErr := os.Stat(out)
			assert.True(t, os.IsNotExist(statErr), "nothing is written on bad input")
		})
	}
}
