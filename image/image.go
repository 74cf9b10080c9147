// Package image builds vipctl's container image (the watchdog run as a static
// pod) from static vipctl binaries, with no Docker engine and no network.
//
// The image is one layer holding the binary at /vipctl on an empty base: no
// shell, no libc, no CA bundle (the watchdog trusts the cluster CA it is
// given). Entrypoint is ["/vipctl"] and Cmd ["care"]; the user is 0 because
// programming IPVS and the dummy interface over netlink needs root with
// CAP_NET_ADMIN in the host network namespace.
//
// Builds are reproducible: every timestamp (config, history, layer entries,
// archive entries) is Meta.Created, normally the commit time from
// SOURCE_DATE_EPOCH, so the same binaries and metadata always give the same
// digests.
package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// DefaultRepository is where vipctl's image is published; the tag is the version.
	DefaultRepository = "ghcr.io/vipctl/vipctl"
	// DefaultSource is the org.opencontainers.image.source label's default.
	DefaultSource = "https://github.com/vipctl/vipctl"
	// BinaryPath is where the binary lives in the image; it is the entrypoint.
	BinaryPath = "/vipctl"
	// DefaultCmd is the image's default arguments: the watchdog.
	DefaultCmd = "care"
	// User is the numeric user the container runs as: root, which netlink and
	// IPVS need (with CAP_NET_ADMIN). There is no /etc/passwd in the image.
	User = "0"
)

// The OCI annotation keys vipctl sets as image labels.
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelSource   = "org.opencontainers.image.source"
	LabelCreated  = "org.opencontainers.image.created"
	LabelTitle    = "org.opencontainers.image.title"
	LabelLicenses = "org.opencontainers.image.licenses"
)

// Meta is the metadata stamped into the image. Every field is an input of the
// digest: the same Meta and binaries give the same image.
type Meta struct {
	// Version is the vipctl version, e.g. v0.1.0 (required).
	Version string
	// Revision is the source commit the binaries were built from.
	Revision string
	// Source is the source repository URL.
	Source string
	// Created is the creation time recorded everywhere in the image.
	Created time.Time
}

// Binary is one static vipctl binary and the platform it was built for.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// ParseBinary parses the --binary flag's form "linux/amd64=PATH".
func ParseBinary(s string) (Binary, error) {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || plat == "" || path == "" {
		return Binary{}, fmt.Errorf("--binary %q: want PLATFORM=PATH, e.g. linux/amd64=bin/vipctl", s)
	}
	p, err := v1.ParsePlatform(plat)
	if err != nil {
		return Binary{}, fmt.Errorf("--binary %q: platform %q: %w", s, plat, err)
	}
	if p.OS != "linux" {
		return Binary{}, fmt.Errorf("--binary %q: platform %q: only linux is supported", s, plat)
	}
	if _, ok := elfMachine(p.Architecture); !ok {
		return Binary{}, fmt.Errorf("--binary %q: architecture %q: want one of %s", s, p.Architecture, strings.Join(supportedArchitectures(), ", "))
	}
	return Binary{Platform: *p, Path: path}, nil
}

// ParseCreated parses the --created flag: RFC 3339 (2026-01-02T15:04:05Z)
// or seconds since the Unix epoch, as in SOURCE_DATE_EPOCH.
func ParseCreated(s string) (time.Time, error) {
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
		if sec < 0 {
			return time.Time{}, fmt.Errorf("--created %q: seconds since the epoch must not be negative", s)
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--created %q: want RFC 3339 (2026-01-02T15:04:05Z) or seconds since the epoch", s)
	}
	if t.Before(time.Unix(0, 0)) {
		return time.Time{}, fmt.Errorf("--created %q: must not be before 1970", s)
	}
	return t.UTC(), nil
}

// PlatformImage is the image for one platform.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
}

// Built is the result of Build: one image per platform, sorted by platform,
// and the index (manifest list) of all of them.
type Built struct {
	Images []PlatformImage
	Index  v1.ImageIndex
	// Created is Meta.Created, used for the archive entries' times.
	Created time.Time
}

// Build makes one image per binary and an OCI index over them. It checks that
// each binary is a static Linux ELF executable for its platform.
func Build(bins []Binary, m Meta) (*Built, error) {
	if len(bins) == 0 {
		return nil, errors.New("--binary: at least one PLATFORM=PATH is needed")
	}
	if m.Version == "" {
		return nil, errors.New("--version: must not be empty")
	}
	m.Created = m.Created.Truncate(time.Second).UTC()
	bins = slices.Clone(bins)
	slices.SortFunc(bins, func(a, b Binary) int { return strings.Compare(a.Platform.String(), b.Platform.String()) })
	for i := 1; i < len(bins); i++ {
		if bins[i].Platform.Equals(bins[i-1].Platform) {
			return nil, fmt.Errorf("--binary: platform %s given twice (%s and %s)", bins[i].Platform, bins[i-1].Path, bins[i].Path)
		}
	}
	out := &Built{Created: m.Created}
	var adds []mutate.IndexAddendum
	for _, b := range bins {
		img, err := buildOne(b, m)
		if err != nil {
			return nil, err
		}
		out.Images = append(out.Images, PlatformImage{Platform: b.Platform, Image: img})
		p := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	out.Index = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return out, nil
}

func buildOne(b Binary, m Meta) (v1.Image, error) {
	if err := checkBinary(b.Path, b.Platform); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, fmt.Errorf("--binary %s: %w", b.Platform, err)
	}
	layerTar, err := binaryLayer(data, m.Created)
	if err != nil {
		return nil, fmt.Errorf("binary %s: make layer: %w", b.Path, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("binary %s: make layer: %w", b.Path, err)
	}

	created := v1.Time{Time: m.Created}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{
		Architecture: b.Platform.Architecture,
		OS:           b.Platform.OS,
		Variant:      b.Platform.Variant,
		Created:      created,
		Config: v1.Config{
			Entrypoint: []string{BinaryPath},
			Cmd:        []string{DefaultCmd},
			User:       User,
			WorkingDir: "/",
			Labels:     labels(m),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("binary %s: image config: %w", b.Path, err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "vipctl image build: COPY vipctl " + BinaryPath,
			Comment:   "static vipctl " + m.Version + " for " + b.Platform.String(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("binary %s: append layer: %w", b.Path, err)
	}
	// Compute the digest now so that errors surface here, not in the writer.
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("binary %s: digest: %w", b.Path, err)
	}
	return img, nil
}

func labels(m Meta) map[string]string {
	l := map[string]string{
		LabelVersion:  m.Version,
		LabelCreated:  m.Created.Format(time.RFC3339),
		LabelTitle:    "vipctl",
		LabelLicenses: "Apache-2.0",
	}
	if m.Revision != "" {
		l[LabelRevision] = m.Revision
	}
	if m.Source != "" {
		l[LabelSource] = m.Source
	}
	return l
}

// binaryLayer is the uncompressed layer: the binary at /vipctl, root-owned,
// mode 0755, with the modification time fixed to created.
func binaryLayer(data []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(BinaryPath, "/"),
		Mode:     0o755,
		Size:     int64(len(data)),
		ModTime:  created,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
