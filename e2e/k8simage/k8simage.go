// Package k8simage builds the container images a kubeadm cluster runs
// (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, pause,
// kube-proxy) from files on this machine: no Docker engine, no registry.
//
// An image is one layer on an empty base holding the files of its Spec, the
// ELF libraries they need (found by DT_NEEDED and PT_INTERP, see
// WithLibraries) and nothing else: no shell, no package database. Builds are
// reproducible: entries are sorted, owned by root and stamped with Epoch, so
// the same files give the same digest.
//
// The archives are `docker save`'s format, which `ctr -n k8s.io images
// import` loads. This package is for the end-to-end lab (e2e/cluster); the
// image vipctl ships is built by package image.
package k8simage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the time stamped on every entry and on the image config.
var Epoch = time.Unix(0, 0).UTC()

// DefaultPath is the PATH of every image: kubeadm's static pods name their
// command bare ("kube-apiserver", "etcd"), which the runtime looks up here.
const DefaultPath = "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

// File is one entry of an image: a copy of the host file Src (symlinks
// followed) or, when Link is set, a symbolic link to Link.
type File struct {
	// Dst is the absolute path in the image.
	Dst string
	// Src is the host file copied to Dst; its permission bits are kept.
	Src string
	// Link, when not empty, makes Dst a symbolic link to it (Src unused).
	Link string
}

// Spec describes one image.
type Spec struct {
	// Ref is the full reference the image is tagged with, e.g.
	// registry.k8s.io/kube-apiserver:v1.34.4.
	Ref string
	// Files are the image's contents.
	Files []File
	// Entrypoint is the image's entrypoint; may be empty (kubeadm's pods
	// give a command).
	Entrypoint []string
	// Env is the image's environment; DefaultPath when empty.
	Env []string
}

// Build returns the image of s.
func Build(s Spec) (v1.Image, error) {
	if _, err := name.NewTag(s.Ref, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("image %q: %w", s.Ref, err)
	}
	layerTar, err := layer(s.Files)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Ref, err)
	}
	env := s.Env
	if len(env) == 0 {
		env = []string{DefaultPath}
	}
	created := v1.Time{Time: Epoch}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      created,
		Config:       v1.Config{Entrypoint: s.Entrypoint, Env: env, WorkingDir: "/"},
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", s.Ref, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: created, CreatedBy: "vipctl e2e k8simage"}})
	if err != nil {
		return nil, fmt.Errorf("image %s: append layer: %w", s.Ref, err)
	}
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("image %s: digest: %w", s.Ref, err)
	}
	return img, nil
}

// WriteFile builds s and writes it to path as a docker-archive, through a
// temporary file so that a failure leaves no half-written archive.
func WriteFile(path string, s Spec) error {
	img, err := Build(s)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(s.Ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image %q: %w", s.Ref, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("image %s: %w", s.Ref, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("image %s: write %s: %w", s.Ref, path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("image %s: write %s: %w", s.Ref, path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("image %s: %w", s.Ref, err)
	}
	return nil
}

// layer is the uncompressed layer tar of files: parent folders first, then
// every entry sorted by path, all owned by root and stamped Epoch.
func layer(files []File) ([]byte, error) {
	byDst := map[string]File{}
	dirs := map[string]bool{}
	for _, f := range files {
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return nil, fmt.Errorf("file %q: Dst must be a clean absolute path", f.Dst)
		}
		if (f.Src == "") == (f.Link == "") {
			return nil, fmt.Errorf("file %s: want exactly one of Src and Link", f.Dst)
		}
		if old, ok := byDst[f.Dst]; ok && old != f {
			return nil, fmt.Errorf("file %s: given twice (%+v and %+v)", f.Dst, old, f)
		}
		byDst[f.Dst] = f
		for d := path.Dir(f.Dst); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if _, ok := byDst[d]; ok {
			return nil, fmt.Errorf("file %s: is also a folder of another file", d)
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	for d := range byDst {
		names = append(names, d)
	}
	slices.Sort(names) // a folder sorts before what it holds

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		rel := strings.TrimPrefix(n, "/")
		if dirs[n] {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			continue
		}
		f := byDst[n]
		if f.Link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: rel, Linkname: f.Link, Mode: 0o777, ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Dst, err)
		}
		st, err := os.Stat(f.Src)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Dst, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("file %s: source %s is not a regular file", f.Dst, f.Src)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(st.Mode().Perm()), Size: int64(len(data)), ModTime: Epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrNotFound is wrapped by WithLibraries' error for a library it cannot find.
var ErrNotFound = errors.New("library not found")
