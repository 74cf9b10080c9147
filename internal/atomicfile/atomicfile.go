// Package atomicfile is vipctl's one way to replace a file: readers see the
// old content or the new one, never a mix, and a failure leaves the old
// file as it was.
//
// The content goes to a temporary file beside the target, named
// ".NAME.vipctl-*" (a leading dot, which the kubelet's static pod source
// ignores), which is given its mode, synced, closed and renamed over the
// target; then the folder is synced so that the rename survives a crash.
// The folder must exist: a missing one is an error naming it, never created
// silently.
//
// Once the rename is done the file is in place and the write succeeds, even
// if syncing the folder then fails: that only weakens durability, and is
// reported to Writer.NotDurable rather than as a failure.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Writer replaces files atomically. The zero value is what production uses;
// the hooks let callers add to a write and tests inject failures.
type Writer struct {
	// Prepare, when set, is called with the temporary file once its content
	// is written, before it gets its mode and is synced (the hosts file
	// gives it the owner and SELinux label of the file it replaces). An
	// error stops the write; nothing is changed.
	Prepare func(tmp *os.File) error
	// BeforeRename, when set, is called with the temporary file's path once
	// it is complete and synced, just before the rename. An error stops the
	// write; nothing is changed.
	BeforeRename func(tmp string) error
	// Rename replaces newpath by oldpath; os.Rename when nil.
	Rename func(oldpath, newpath string) error
	// SyncDir makes the rename in dir durable; SyncDir (the function) when
	// nil.
	SyncDir func(dir string) error
	// NotDurable, when set, gets the error of a folder sync that failed
	// after the rename: the file is in place, but may be lost by a crash.
	NotDurable func(err error)
}

// WriteFile replaces path with data, with mode perm, using the zero Writer.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Writer{}.WriteFile(path, data, perm)
}

// WriteFile replaces path with data, with mode perm (not masked by the
// umask).
func (w Writer) WriteFile(path string, data []byte, perm fs.FileMode) error {
	return w.Write(path, perm, func(f io.Writer) error {
		_, err := f.Write(data)
		return err
	})
}

// Write replaces path with what fill writes, with mode perm. When fill or
// any step before the rename fails, path is left as it was and the
// temporary file is removed. Errors name path.
func (w Writer) Write(path string, perm fs.FileMode, fill func(io.Writer) error) (err error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	tmp, err := os.CreateTemp(dir, "."+base+".vipctl-*")
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: the folder %s does not exist: %w", path, dir, fs.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("create temporary file beside %s: %w", path, err)
	}
	tmpPath := tmp.Name()
	renamed := false
	defer func() {
		_ = tmp.Close() // a second close only returns an error
		if !renamed {
			_ = os.Remove(tmpPath)
		}
	}()
	if err := fill(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if w.Prepare != nil {
		if err := w.Prepare(tmp); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	// After Prepare, which may chown: a chown clears the set-id bits.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: set mode %04o: %w", path, perm, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if w.BeforeRename != nil {
		if err := w.BeforeRename(tmpPath); err != nil {
			return err
		}
	}
	rename := w.Rename
	if rename == nil {
		rename = os.Rename
	}
	if err := rename(tmpPath, path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	renamed = true
	syncDir := w.SyncDir
	if syncDir == nil {
		syncDir = SyncDir
	}
	if err := syncDir(dir); err != nil && w.NotDurable != nil {
		w.NotDurable(fmt.Errorf("wrote %s, but it may not survive a crash: %w", path, err))
	}
	return nil
}

// SyncDir makes a rename or removal in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open folder %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
