package manifests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FileMode is the mode of a written manifest: kubeadm's static pods are 0600.
const FileMode os.FileMode = 0o600

// WriteFile replaces path with data atomically: it writes a temporary file in
// the same folder, syncs it, renames it over path and syncs the folder, so
// the kubelet never sees a half-written manifest. The temporary file's name
// starts with a dot, which the kubelet's static pod source ignores. The
// folder is created (0700) when missing. The file gets mode FileMode.
func WriteFile(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create manifest folder: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(FileMode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: sync folder: %w", path, err)
	}
	// The file is in place; a failed folder sync only weakens durability.
	err = errors.Join(d.Sync(), d.Close())
	if err != nil {
		return fmt.Errorf("write %s: sync folder: %w", path, err)
	}
	return nil
}
