package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/image/imagetest"
)

const (
	amd64 = "amd64"
	arm64 = "arm64"
)

func linux(arch string) v1.Platform { return v1.Platform{OS: "linux", Architecture: arch} }

func testMeta() Meta {
	return Meta{
		Version:  "v1.2.3",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Source:   DefaultSource,
		Created:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestBuildImageContents(t *testing.T) {
	dir := t.TempDir()
	bin := imagetest.FakeELF(t, dir, "vipctl", elf.EM_X86_64, "", []byte("amd64 payload"))
	want, err := os.ReadFile(bin)
	require.NoError(t, err)
	m := testMeta()

	b, err := Build([]Binary{{Platform: linux(amd64), Path: bin}}, m)
	require.NoError(t, err)
	require.Len(t, b.Images, 1)
	img := b.Images[0].Image

	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)
	man, err := img.Manifest()
	require.NoError(t, err)
	assert.Equal(t, types.OCIConfigJSON, man.Config.MediaType)
	require.Len(t, man.Layers, 1)
	assert.Equal(t, types.OCILayer, man.Layers[0].MediaType)

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, "amd64", cf.Architecture)
	assert.True(t, cf.Created.Equal(m.Created), "created %s", cf.Created)
	assert.Equal(t, []string{"/vipctl"}, cf.Config.Entrypoint)
	assert.Equal(t, []string{"care"}, cf.Config.Cmd)
	assert.Equal(t, "0", cf.Config.User)
	assert.Equal(t, map[string]string{
		LabelVersion:  m.Version,
		LabelRevision: m.Revision,
		LabelSource:   m.Source,
		LabelCreated:  "2026-01-02T03:04:05Z",
		LabelTitle:    "vipctl",
		LabelLicenses: "Apache-2.0",
	}, cf.Config.Labels)
	require.Len(t, cf.History, 1)
	assert.True(t, cf.History[0].Created.Equal(m.Created))
	require.Len(t, cf.RootFS.DiffIDs, 1)

	// The layer holds exactly the binary at /vipctl, root-owned, 0755, dated Created.
	layers, err := img.Layers()
	require.NoError(t, err)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	require.NoError(t, err)
	assert.Equal(t, "vipctl", hdr.Name)
	assert.Equal(t, byte(tar.TypeReg), hdr.Typeflag)
	assert.Equal(t, int64(0o755), hdr.Mode)
	assert.Zero(t, hdr.Uid)
	assert.Zero(t, hdr.Gid)
	assert.True(t, hdr.ModTime.Equal(m.Created), "mtime %s", hdr.ModTime)
	got, err := io.ReadAll(tr)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	_, err = tr.Next()
	assert.Equal(t, io.EOF, err, "the layer has one entry")
}

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	// The same bytes at two paths: the path is not an input of the digest.
	a := imagetest.FakeELF(t, dir, "a", elf.EM_X86_64, "", []byte("same"))
	b := imagetest.FakeELF(t, dir, "b", elf.EM_X86_64, "", []byte("same"))
	other := imagetest.FakeELF(t, dir, "other", elf.EM_X86_64, "", []byte("different"))
	m := testMeta()

	digest := func(path string, m Meta) v1.Hash {
		t.Helper()
		built, err := Build([]Binary{{Platform: linux(amd64), Path: path}}, m)
		require.NoError(t, err)
		d, err := built.Images[0].Image.Digest()
		require.NoError(t, err)
		return d
	}
	first := digest(a, m)
	assert.Equal(t, first, digest(a, m), "building twice gives the same digest")
	assert.Equal(t, first, digest(b, m), "same bytes at another path give the same digest")
	assert.NotEqual(t, first, digest(other, m), "a different binary gives a different digest")
	m2 := m
	m2.Version = "v1.2.4"
	assert.NotEqual(t, first, digest(a, m2), "a different version gives a different digest")
	m3 := m
	m3.Created = m.Created.Add(time.Second)
	assert.NotEqual(t, first, digest(a, m3), "a different creation time gives a different digest")

	// The archives are byte-for-byte the same too.
	for _, f := range Formats() {
		write := func(path string) []byte {
			built, err := Build([]Binary{{Platform: linux(amd64), Path: path}}, m)
			require.NoError(t, err)
			var buf bytes.Buffer
			require.NoError(t, Write(&buf, f, mustTag(t), built))
			return buf.Bytes()
		}
		assert.Equal(t, sha256.Sum256(write(a)), sha256.Sum256(write(b)), "format %s", f)
	}
}

func TestBuildIndex(t *testing.T) {
	dir := t.TempDir()
	x86 := Binary{Platform: linux(amd64), Path: imagetest.FakeELF(t, dir, "amd64", elf.EM_X86_64, "", []byte("x"))}
	arm := Binary{Platform: linux(arm64), Path: imagetest.FakeELF(t, dir, "arm64", elf.EM_AARCH64, "", []byte("y"))}

	b, err := Build([]Binary{arm, x86}, testMeta())
	require.NoError(t, err)
	require.Len(t, b.Images, 2)
	assert.Equal(t, linux(amd64), b.Images[0].Platform, "images are sorted by platform")
	assert.Equal(t, linux(arm64), b.Images[1].Platform)
	cf, err := b.Images[1].Image.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "arm64", cf.Architecture)

	im, err := b.Index.IndexManifest()
	require.NoError(t, err)
	assert.Equal(t, types.OCIImageIndex, im.MediaType)
	require.Len(t, im.Manifests, 2)
	for i, pi := range b.Images {
		d, err := pi.Image.Digest()
		require.NoError(t, err)
		assert.Equal(t, d, im.Manifests[i].Digest)
		require.NotNil(t, im.Manifests[i].Platform)
		assert.Equal(t, pi.Platform, *im.Manifests[i].Platform)
	}

	// The order of --binary flags does not change the index.
	again, err := Build([]Binary{x86, arm}, testMeta())
	require.NoError(t, err)
	d1, err := b.Index.Digest()
	require.NoError(t, err)
	d2, err := again.Index.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2)
}

func TestBuildRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	good := imagetest.FakeELF(t, dir, "good", elf.EM_X86_64, "", nil)
	armBin := imagetest.FakeELF(t, dir, "arm", elf.EM_AARCH64, "", nil)
	dynamic := imagetest.FakeELF(t, dir, "dynamic", elf.EM_X86_64, "/lib64/ld-linux-x86-64.so.2", nil)
	script := filepath.Join(dir, "script")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755))

	for _, tc := range []struct {
		name string
		bins []Binary
		meta func(*Meta)
		want []string
	}{
		{"no binaries", nil, nil, []string{"--binary", "at least one"}},
		{"wrong machine", []Binary{{linux(amd64), armBin}}, nil, []string{"--binary", armBin, "AARCH64", "amd64"}},
		{"dynamic", []Binary{{linux(amd64), dynamic}}, nil, []string{"dynamically linked", "/lib64/ld-linux-x86-64.so.2", "CGO_ENABLED=0"}},
		{"not ELF", []Binary{{linux(amd64), script}}, nil, []string{"not an ELF executable", script}},
		{"missing", []Binary{{linux(amd64), filepath.Join(dir, "nope")}}, nil, []string{"nope"}},
		{"duplicate platform", []Binary{{linux(amd64), good}, {linux(amd64), good}}, nil, []string{"linux/amd64 given twice"}},
		{"empty version", []Binary{{linux(amd64), good}}, func(m *Meta) { m.Version = "" }, []string{"--version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMeta()
			if tc.meta != nil {
				tc.meta(&m)
			}
			_, err := Build(tc.bins, m)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParseBinary(t *testing.T) {
	b, err := ParseBinary("linux/arm64=out/vipctl=x")
	require.NoError(t, err)
	assert.Equal(t, linux(arm64), b.Platform)
	assert.Equal(t, "out/vipctl=x", b.Path, "only the first = splits")

	b, err = ParseBinary("linux/arm/v7=vipctl")
	require.NoError(t, err)
	assert.Equal(t, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, b.Platform)

	for _, bad := range []string{"", "linux/amd64", "=path", "linux/amd64=", "windows/amd64=x.exe", "linux/mips=x"} {
		_, err := ParseBinary(bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "--binary")
		assert.Contains(t, err.Error(), bad)
	}
}

func TestParseTag(t *testing.T) {
	tag, err := ParseTag("ghcr.io/vipctl/vipctl:v0.1.0")
	require.NoError(t, err)
	assert.Equal(t, "ghcr.io/vipctl/vipctl:v0.1.0", tag.Name())
	_, err = ParseTag("localhost:5000/vipctl:dev")
	require.NoError(t, err)

	for _, bad := range []string{"vipctl:v1", "vipctl/vipctl:v1", "ghcr.io/vipctl/vipctl", "ghcr.io/vipctl/vipctl:v1+meta", "Ghcr.io/X:v1"} {
		_, err := ParseTag(bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "--tag")
	}
}

func TestParseCreated(t *testing.T) {
	want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got, err := ParseCreated("1767323045")
	require.NoError(t, err)
	assert.True(t, want.Equal(got), got)
	got, err = ParseCreated("2026-01-02T04:04:05+01:00")
	require.NoError(t, err)
	assert.True(t, want.Equal(got), got)
	for _, bad := range []string{"", "yesterday", "-5", "1969-12-31T23:59:59Z"} {
		_, err := ParseCreated(bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "--created")
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range Formats() {
		got, err := ParseFormat(string(f))
		require.NoError(t, err)
		assert.Equal(t, f, got)
	}
	_, err := ParseFormat("docker")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--format")
}

func mustTag(t *testing.T) name.Tag {
	t.Helper()
	tag, err := ParseTag("ghcr.io/vipctl/vipctl:v1.2.3")
	require.NoError(t, err)
	return tag
}

func TestWriteDockerArchiveReadsBack(t *testing.T) {
	dir := t.TempDir()
	bin := imagetest.FakeELF(t, dir, "vipctl", elf.EM_X86_64, "", []byte("payload"))
	b, err := Build([]Binary{{Platform: linux(amd64), Path: bin}}, testMeta())
	require.NoError(t, err)
	out := filepath.Join(dir, "image.tar")
	tag := mustTag(t)
	require.NoError(t, WriteFile(out, FormatDocker, tag, b))

	// manifest.json names the image by its full tag.
	var mf tarball.Manifest
	require.NoError(t, json.Unmarshal(readTarFile(t, out, "manifest.json"), &mf))
	require.Len(t, mf, 1)
	assert.Equal(t, []string{"ghcr.io/vipctl/vipctl:v1.2.3"}, mf[0].RepoTags)

	// go-containerregistry's own reader finds the same image under that tag.
	back, err := tarball.ImageFromPath(out, &tag)
	require.NoError(t, err)
	wantCfg, err := b.Images[0].Image.ConfigName()
	require.NoError(t, err)
	gotCfg, err := back.ConfigName()
	require.NoError(t, err)
	assert.Equal(t, wantCfg, gotCfg)
	wantLayers, err := b.Images[0].Image.Layers()
	require.NoError(t, err)
	gotLayers, err := back.Layers()
	require.NoError(t, err)
	require.Len(t, gotLayers, 1)
	wd, err := wantLayers[0].DiffID()
	require.NoError(t, err)
	gd, err := gotLayers[0].DiffID()
	require.NoError(t, err)
	assert.Equal(t, wd, gd)
}

func TestWriteDockerArchiveRefusesSeveralPlatforms(t *testing.T) {
	dir := t.TempDir()
	b, err := Build([]Binary{
		{Platform: linux(amd64), Path: imagetest.FakeELF(t, dir, "a", elf.EM_X86_64, "", nil)},
		{Platform: linux(arm64), Path: imagetest.FakeELF(t, dir, "b", elf.EM_AARCH64, "", nil)},
	}, testMeta())
	require.NoError(t, err)
	out := filepath.Join(dir, "image.tar")
	require.NoError(t, os.WriteFile(out, []byte("old"), 0o644))

	err = WriteFile(out, FormatDocker, mustTag(t), b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--format docker-archive holds one platform")

	// Nothing changed: the old file is intact and no temporary file is left.
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, "old", string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"a", "b", "image.tar"}, names)
}

func TestWriteOCIArchive(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bins     func(dir string) []Binary
		rootType types.MediaType
	}{
		{"one platform", func(dir string) []Binary {
			return []Binary{{Platform: linux(amd64), Path: imagetest.FakeELF(t, dir, "a", elf.EM_X86_64, "", []byte("a"))}}
		}, types.OCIManifestSchema1},
		{"multi-arch", func(dir string) []Binary {
			return []Binary{
				{Platform: linux(amd64), Path: imagetest.FakeELF(t, dir, "a", elf.EM_X86_64, "", []byte("a"))},
				{Platform: linux(arm64), Path: imagetest.FakeELF(t, dir, "b", elf.EM_AARCH64, "", []byte("b"))},
			}
		}, types.OCIImageIndex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := Build(tc.bins(dir), testMeta())
			require.NoError(t, err)
			out := filepath.Join(dir, "image.oci.tar")
			require.NoError(t, WriteFile(out, FormatOCI, mustTag(t), b))

			// Every blob is stored under its own digest.
			layoutDir := filepath.Join(dir, "layout")
			files := untar(t, out, layoutDir)
			assert.Contains(t, files, "oci-layout")
			assert.Contains(t, files, "index.json")
			blobs := 0
			for _, f := range files {
				if d, ok := strings.CutPrefix(f, "blobs/sha256/"); ok && d != "" {
					blobs++
					data, err := os.ReadFile(filepath.Join(layoutDir, f))
					require.NoError(t, err)
					sum := sha256.Sum256(data)
					assert.Equal(t, d, hex.EncodeToString(sum[:]), f)
				}
			}

			// index.json names the root for containerd and podman.
			var top v1.IndexManifest
			require.NoError(t, json.Unmarshal(readTarFile(t, out, "index.json"), &top))
			require.Len(t, top.Manifests, 1)
			root := top.Manifests[0]
			assert.Equal(t, tc.rootType, root.MediaType)
			assert.Equal(t, "ghcr.io/vipctl/vipctl:v1.2.3", root.Annotations[AnnotationContainerdName])
			assert.Equal(t, "ghcr.io/vipctl/vipctl:v1.2.3", root.Annotations[AnnotationRefName])

			// go-containerregistry's layout reader resolves every image.
			ii, err := layout.ImageIndexFromPath(layoutDir)
			require.NoError(t, err)
			if tc.rootType == types.OCIImageIndex {
				want, err := b.Index.Digest()
				require.NoError(t, err)
				assert.Equal(t, want, root.Digest)
				ii, err = ii.ImageIndex(root.Digest)
				require.NoError(t, err)
			}
			im, err := ii.IndexManifest()
			require.NoError(t, err)
			require.Len(t, im.Manifests, len(b.Images))
			for i, pi := range b.Images {
				want, err := pi.Image.Digest()
				require.NoError(t, err)
				assert.Equal(t, want, im.Manifests[i].Digest)
				img, err := ii.Image(want)
				require.NoError(t, err)
				layers, err := img.Layers()
				require.NoError(t, err)
				for _, l := range layers {
					rc, err := l.Uncompressed()
					require.NoError(t, err)
					_, err = io.Copy(io.Discard, rc)
					require.NoError(t, err)
					require.NoError(t, rc.Close())
				}
			}
			// manifests, configs and layers of each image, plus the index if any
			wantBlobs := 3 * len(b.Images)
			if len(b.Images) > 1 {
				wantBlobs++
			}
			assert.Equal(t, wantBlobs, blobs)
		})
	}
}

func readTarFile(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		require.NoError(t, err, "%s not in %s", name, archive)
		if hdr.Name == name {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			return b
		}
	}
}

// untar extracts archive into dir and returns the names of its regular files.
func untar(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		require.NoError(t, err)
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(p, 0o755))
		case tar.TypeReg:
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			data, err := io.ReadAll(tr)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, data, 0o644))
			names = append(names, hdr.Name)
		default:
			t.Fatalf("%s: unexpected entry type %c", hdr.Name, hdr.Typeflag)
		}
	}
}
