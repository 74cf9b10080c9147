package k8simage

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"
)

// hostTool is a dynamically linked program of this machine.
func hostTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) on this machine")
	}
	p, err = filepath.EvalSymlinks(p)
	require.NoError(t, err)
	interp, needed, _, err := elfDeps(p)
	require.NoError(t, err)
	if interp == "" || len(needed) == 0 {
		t.Skipf("%s is not dynamically linked", p)
	}
	return p
}

func entries(t *testing.T, path string) map[string]*tar.Header {
	t.Helper()
	img, err := tarball.ImageFromPath(path, nil)
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out[h.Name] = h
	}
}

func TestWithLibrariesAddsInterpreterAndLibc(t *testing.T) {
	tool := hostTool(t)
	files, err := WithLibraries([]File{{Dst: "/bin/true", Src: tool}}, []string{"/"})
	require.NoError(t, err)
	interp, needed, _, err := elfDeps(tool)
	require.NoError(t, err)
	dsts := map[string]bool{}
	for _, f := range files {
		dsts[f.Dst] = true
		if f.Src != "" {
			_, err := os.Stat(f.Src)
			require.NoError(t, err, f.Dst)
		}
	}
	require.True(t, dsts[interp], "interpreter %s in %v", interp, dsts)
	for _, lib := range needed {
		found := false
		for _, d := range LibDirs {
			found = found || dsts[filepath.Join(d, lib)]
		}
		require.True(t, found, "%s in %v", lib, dsts)
	}
}

// Files that are not programs, an empty one (a package's marker file) or a
// short script, carry no library.
func TestWithLibrariesSkipsWhatIsNotELF(t *testing.T) {
	d := t.TempDir()
	empty, script := filepath.Join(d, "dash"), filepath.Join(d, "x.sh")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755))
	in := []File{{Dst: "/usr/share/debianutils/shells.d/dash", Src: empty}, {Dst: "/bin/x", Src: script}}
	files, err := WithLibraries(in, []string{"/"})
	require.NoError(t, err)
	require.Equal(t, in, files)
}

// A library found only through the program's DT_RUNPATH (systemd's private
// libsystemd-shared) is added at that folder, where the loader looks.
func TestWithLibrariesFollowsRunpath(t *testing.T) {
	const prog = "/lib/systemd/systemd"
	_, needed, runpath, err := elfDeps(prog)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(runpath) == 0) {
		t.Skipf("%s with a DT_RUNPATH is not on this machine", prog)
	}
	require.NoError(t, err)
	files, err := WithLibraries([]File{{Dst: prog, Src: prog}}, []string{"/"})
	require.NoError(t, err)
	dsts := map[string]bool{}
	for _, f := range files {
		dsts[f.Dst] = true
	}
	inRunpath := 0
	for _, lib := range needed {
		for _, d := range runpath {
			if dsts[filepath.Join(d, lib)] {
				inRunpath++
			}
		}
	}
	require.NotZero(t, inRunpath, "a library of %s in its runpath %v: %v", prog, runpath, dsts)
}

func TestWithLibrariesNamesTheMissingLibrary(t *testing.T) {
	tool := hostTool(t)
	_, err := WithLibraries([]File{{Dst: "/bin/true", Src: tool}}, []string{t.TempDir()})
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrNotFound), err)
	require.Contains(t, err.Error(), "/bin/true")
}

func TestWriteFileIsReproducible(t *testing.T) {
	tool := hostTool(t)
	files, err := WithLibraries([]File{
		{Dst: "/usr/local/bin/true", Src: tool},
		{Dst: "/usr/local/bin/alias", Link: "true"},
	}, []string{"/"})
	require.NoError(t, err)
	s := Spec{Ref: "registry.k8s.io/test:v1", Files: files, Entrypoint: []string{"/usr/local/bin/true"}}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	require.NoError(t, WriteFile(a, s))
	// The other order gives the same image.
	s.Files = append([]File(nil), files...)
	for i, j := 0, len(s.Files)-1; i < j; i, j = i+1, j-1 {
		s.Files[i], s.Files[j] = s.Files[j], s.Files[i]
	}
	require.NoError(t, WriteFile(b, s))
	da, db := digest(t, a), digest(t, b)
	require.Equal(t, da, db)

	es := entries(t, a)
	require.Contains(t, es, "usr/")
	require.Contains(t, es, "usr/local/bin/")
	require.Equal(t, byte(tar.TypeReg), es["usr/local/bin/true"].Typeflag)
	require.Equal(t, "true", es["usr/local/bin/alias"].Linkname)
	for n, h := range es {
		require.True(t, h.ModTime.Equal(Epoch), n)
		require.Zero(t, h.Uid, n)
	}
}

func digest(t *testing.T, path string) string {
	t.Helper()
	img, err := tarball.ImageFromPath(path, nil)
	require.NoError(t, err)
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

func TestBuildRefusesBadInput(t *testing.T) {
	for name, s := range map[string]Spec{
		"short ref":    {Ref: "pause"},
		"relative dst": {Ref: "registry.k8s.io/x:v1", Files: []File{{Dst: "bin/x", Link: "y"}}},
		"src and link": {Ref: "registry.k8s.io/x:v1", Files: []File{{Dst: "/x", Src: "/bin/true", Link: "y"}}},
		"file and dir": {Ref: "registry.k8s.io/x:v1", Files: []File{{Dst: "/a", Link: "b"}, {Dst: "/a/c", Link: "d"}}},
		"missing src":  {Ref: "registry.k8s.io/x:v1", Files: []File{{Dst: "/x", Src: "/nonexistent/x"}}},
		"given twice":  {Ref: "registry.k8s.io/x:v1", Files: []File{{Dst: "/a", Link: "b"}, {Dst: "/a", Link: "c"}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(s)
			require.Error(t, err)
		})
	}
}
