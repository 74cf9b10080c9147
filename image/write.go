package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

// Format is an image archive format.
type Format string

const (
	// FormatDocker is `docker save`'s format (manifest.json + blobs): one
	// platform per archive. `ctr images import`, `docker load` and
	// `podman load` all accept it; it is what the offline bundle ships.
	FormatDocker Format = "docker-archive"
	// FormatOCI is an OCI image layout in a tar. With several platforms its
	// index.json points at a multi-arch index. `ctr images import`,
	// `podman load`, `skopeo copy oci-archive:` and Docker 25+ accept it.
	FormatOCI Format = "oci-archive"
)

// Formats lists the formats Write accepts.
func Formats() []Format { return []Format{FormatDocker, FormatOCI} }

// ParseFormat parses the --format flag.
func ParseFormat(s string) (Format, error) {
	f := Format(s)
	if !slices.Contains(Formats(), f) {
		return "", fmt.Errorf("--format %q: want %s or %s", s, FormatDocker, FormatOCI)
	}
	return f, nil
}

// Annotations an OCI archive's index.json puts on its image so that
// importers name it: containerd reads the first, podman and skopeo the second.
const (
	AnnotationContainerdName = "io.containerd.image.name"
	AnnotationRefName        = "org.opencontainers.image.ref.name"
)

// ParseTag parses an image reference with an explicit registry and tag, e.g.
// ghcr.io/vipctl/vipctl:v0.1.0. Short names are refused: runtimes expand them
// differently (docker.io/library/...), and install.sh looks the tag up verbatim.
func ParseTag(s string) (name.Tag, error) {
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("--tag %q: %w", s, err)
	}
	host, _, _ := strings.Cut(s, "/")
	if !strings.Contains(s, "/") || (!strings.ContainsAny(host, ".:") && host != "localhost") {
		return name.Tag{}, fmt.Errorf("--tag %q: name the registry, e.g. %s:v0.1.0", s, DefaultRepository)
	}
	if t.Name() != s {
		return name.Tag{}, fmt.Errorf("--tag %q: not in canonical form (%s)", s, t.Name())
	}
	return t, nil
}

// Write writes b as an archive of format f, naming it tag.
// FormatDocker needs exactly one platform.
func Write(w io.Writer, f Format, tag name.Tag, b *Built) error {
	switch f {
	case FormatDocker:
		if len(b.Images) != 1 {
			return fmt.Errorf("--format %s holds one platform, got %d: use --format %s, or one --binary per archive", FormatDocker, len(b.Images), FormatOCI)
		}
		if err := tarball.Write(tag, b.Images[0].Image, w); err != nil {
			return fmt.Errorf("write %s: %w", FormatDocker, err)
		}
		return nil
	case FormatOCI:
		if err := writeOCI(w, tag, b); err != nil {
			return fmt.Errorf("write %s: %w", FormatOCI, err)
		}
		return nil
	}
	return fmt.Errorf("--format %q: want %s or %s", f, FormatDocker, FormatOCI)
}

// WriteFile writes the archive to path atomically (mode 0644): a failure
// leaves any existing file at path as it was. The folder must exist.
func WriteFile(path string, f Format, tag name.Tag, b *Built) error {
	err := atomicfile.Writer{}.Write(path, 0o644, func(w io.Writer) error { return Write(w, f, tag, b) })
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	return nil
}

// blob is one content-addressed file of an OCI layout.
type blob struct {
	size int64
	open func() (io.ReadCloser, error)
}

func bytesBlob(b []byte) blob {
	return blob{size: int64(len(b)), open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

// writeOCI writes an OCI image layout as a tar: oci-layout, blobs/sha256/*
// in digest order, then index.json naming the root (the image when there is
// one platform, else the multi-arch index).
func writeOCI(w io.Writer, tag name.Tag, b *Built) error {
	blobs := map[v1.Hash]blob{}
	for _, pi := range b.Images {
		if err := addImageBlobs(blobs, pi.Image); err != nil {
			return fmt.Errorf("%s: %w", pi.Platform, err)
		}
	}
	var root v1.Descriptor
	if len(b.Images) == 1 {
		img := b.Images[0]
		d, err := partial.Descriptor(img.Image)
		if err != nil {
			return fmt.Errorf("%s: descriptor: %w", img.Platform, err)
		}
		p := img.Platform
		d.Platform = &p
		root = *d
	} else {
		raw, err := b.Index.RawManifest()
		if err != nil {
			return fmt.Errorf("index manifest: %w", err)
		}
		d, err := partial.Descriptor(b.Index)
		if err != nil {
			return fmt.Errorf("index descriptor: %w", err)
		}
		blobs[d.Digest] = bytesBlob(raw)
		root = *d
	}
	root.Annotations = map[string]string{
		AnnotationContainerdName: tag.Name(),
		AnnotationRefName:        tag.Name(),
	}
	indexJSON, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{root},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	mtime := b.Created
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	if err := put("oci-layout", int64(len(layout)), bytes.NewReader(layout)); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	digests := slices.SortedFunc(maps.Keys(blobs), func(a, b v1.Hash) int { return strings.Compare(a.String(), b.String()) })
	for _, h := range digests {
		bl := blobs[h]
		rc, err := bl.open()
		if err != nil {
			return fmt.Errorf("blob %s: %w", h, err)
		}
		err = put("blobs/"+h.Algorithm+"/"+h.Hex, bl.size, rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
	}
	if err := put("index.json", int64(len(indexJSON)), bytes.NewReader(indexJSON)); err != nil {
		return err
	}
	return tw.Close()
}

// addImageBlobs adds an image's manifest, config and layers to blobs.
func addImageBlobs(blobs map[v1.Hash]blob, img v1.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	blobs[d] = bytesBlob(raw)
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("config digest: %w", err)
	}
	blobs[cd] = bytesBlob(cfg)
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers: %w", err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer digest: %w", err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %s size: %w", ld, err)
		}
		blobs[ld] = blob{size: size, open: l.Compressed}
	}
	return nil
}
