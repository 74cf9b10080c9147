package hosts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

// DefaultPath is the system hosts file.
const DefaultPath = "/etc/hosts"

// maxAttempts bounds how often an update is recomputed when another writer
// changes the file while vipctl is updating it.
const maxAttempts = 5

// errConflict reports that the file changed between reading it and replacing
// it; the update is then recomputed from the new content.
var errConflict = errors.New("the file was changed by another writer during the update")

// File is a hosts file on disk. Its methods read the file afresh on every
// call and write it atomically:
//
//   - the new content goes to a temporary file in the same directory, which
//     gets the original's mode, owner and SELinux label, and is fsynced;
//   - just before the rename the file is read again, and if another writer
//     changed it meanwhile the edit is recomputed from the new content (a few
//     times at most), so a concurrent edit is not lost;
//   - the temporary file is renamed over the original and the directory is
//     fsynced.
//
// A crash at any point leaves either the old or the new file, never a mix
// (it may leave a temporary file named .NAME.vipctl-* beside it). When Path
// is a symbolic link the file it points to is replaced and the link kept.
//
// A file that is a bind mount (as /etc/hosts is in a container) cannot be
// renamed over: the kernel answers EBUSY. File then falls back to rewriting
// it in place, which is not atomic: a crash during that write can leave a
// partial file. A directory vipctl cannot write to is an error, and nothing
// is changed.
//
// Nothing is written when the content would not change, so the file's
// modification time then stays as it was. The changed result of Set, Remove
// and Restore is true when the file may have been modified, even alongside
// an error (say a bind-mounted file was partly rewritten in place); a
// caller rolling back should then Restore its snapshot. Once the file is
// replaced, a failed sync of its directory does not fail the update: it
// goes to NotDurable.
//
// The zero value of the unexported fields is what production uses, so a
// File is made as File{Path: p}.
type File struct {
	// Path is the file's path, usually DefaultPath.
	Path string

	// NotDurable, when set, gets the error of a directory sync that failed
	// after the file was replaced or removed: the change is made but may
	// not survive a crash. It does not make the update fail.
	NotDurable func(error)

	// rename replaces newpath by oldpath; os.Rename when nil. Tests inject
	// failures through it.
	rename func(oldpath, newpath string) error
	// syncDir syncs the directory after a change; atomicfile.SyncDir when
	// nil. Tests inject failures through it.
	syncDir func(dir string) error
	// beforeRename, when set, is called with the temporary file's path once
	// it is complete and synced, before the file is replaced. An error stops
	// the update there, as a crash at that point would. Tests only.
	beforeRename func(tmp string) error
}

// Snapshot is the content of a hosts file at one moment, for Restore.
type Snapshot struct {
	// Data is the file's content.
	Data []byte
	// Exists is false when there was no file.
	Exists bool
}

// Lookup returns the mappings of name in the file, in file order (see
// Doc.Lookup). A missing file is an error.
func (f File) Lookup(name string) ([]Mapping, error) {
	path, err := f.resolve()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read hosts file: %w", err)
	}
	return Parse(data).Lookup(name), nil
}

// Set makes name map to addr and to nothing else (see Doc.Set), and reports
// whether the file changed. A missing file is created with mode 0644. Bad
// input is an error naming the value, and nothing is read or written.
func (f File) Set(ctx context.Context, name string, addr netip.Addr) (changed bool, err error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if err := ValidateAddr(addr); err != nil {
		return false, err
	}
	return f.update(ctx, func(old []byte, exists bool) ([]byte, bool, error) {
		d := Parse(old)
		changed, err := d.Set(name, addr)
		if err != nil || !changed {
			return old, exists, err
		}
		return d.Render(), true, nil
	})
}

// Remove deletes name from vipctl's lines in the file (see Doc.Remove) and
// reports whether the file changed. A missing file has nothing to remove.
func (f File) Remove(ctx context.Context, name string) (changed bool, err error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	return f.update(ctx, func(old []byte, exists bool) ([]byte, bool, error) {
		d := Parse(old)
		changed, err := d.Remove(name)
		if err != nil || !changed {
			return old, exists, err
		}
		return d.Render(), true, nil
	})
}

// Snapshot reads the file for a later Restore. A missing file is not an
// error: restoring the snapshot removes the file.
func (f File) Snapshot() (Snapshot, error) {
	path, err := f.resolve()
	if err != nil {
		return Snapshot{}, err
	}
	data, exists, err := readFile(path)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Data: data, Exists: exists}, nil
}

// Restore puts back the exact content s recorded, atomically like Set, or
// removes the file if s recorded none, and reports whether the file changed.
// Whatever was changed since the snapshot, by vipctl or anyone else, is
// undone; the file's current mode and owner are kept.
func (f File) Restore(ctx context.Context, s Snapshot) (changed bool, err error) {
	return f.update(ctx, func([]byte, bool) ([]byte, bool, error) {
		return s.Data, s.Exists, nil
	})
}

// resolve returns the path of the file to read and replace: Path with
// symbolic links followed, or Path itself when there is no file yet.
func (f File) resolve() (string, error) {
	if f.Path == "" {
		return "", errors.New("hosts file path is empty")
	}
	path, err := filepath.EvalSymlinks(f.Path)
	if err == nil {
		return path, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("resolve hosts file %s: %w", f.Path, err)
	}
	if fi, lerr := os.Lstat(f.Path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("hosts file %s is a symbolic link to a missing file", f.Path)
	}
	return f.Path, nil
}

// update reads the file, lets edit compute the wanted content from it and,
// if that differs, writes it. It recomputes when another writer changed the
// file meanwhile. changed is true when the file may have been modified, even
// alongside an error.
func (f File) update(ctx context.Context, edit func(old []byte, exists bool) (want []byte, wantExists bool, err error)) (changed bool, err error) {
	path, err := f.resolve()
	if err != nil {
		return false, err
	}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("update %s: %w", path, err)
		}
		old, exists, err := readFile(path)
		if err != nil {
			return false, err
		}
		want, wantExists, err := edit(old, exists)
		if err != nil {
			return false, err
		}
		if wantExists == exists && bytes.Equal(want, old) {
			return false, nil
		}
		if wantExists {
			changed, err = f.write(path, want, old, exists)
		} else {
			changed, err = f.remove(path, old)
		}
		if errors.Is(err, errConflict) {
			if attempt < maxAttempts {
				continue
			}
			return false, fmt.Errorf("update %s: gave up after %d attempts: %w", path, attempt, err)
		}
		return changed, err
	}
}

// readFile returns the file's content and whether it exists.
func readFile(path string) (data []byte, exists bool, err error) {
	data, err = os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read hosts file: %w", err)
	}
	return data, true, nil
}

// unchangedSince returns errConflict unless the file still has content old
// (or is still missing when existed is false).
func unchangedSince(path string, old []byte, existed bool) error {
	cur, exists, err := readFile(path)
	if err != nil {
		return err
	}
	if exists != existed || !bytes.Equal(cur, old) {
		return errConflict
	}
	return nil
}

// write replaces the file at path, whose content was old, by data. changed
// is true when the file may have been modified, even if err is not nil.
func (f File) write(path string, data, old []byte, existed bool) (changed bool, err error) {
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	if existed {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, errConflict // removed since it was read
		}
		if err != nil {
			return false, fmt.Errorf("stat hosts file: %w", err)
		}
		mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}

	w := atomicfile.Writer{
		Prepare: func(tmp *os.File) error {
			if err := keepOwner(tmp, uid, gid); err != nil {
				return fmt.Errorf("give %s the owner of %s: %w", tmp.Name(), path, err)
			}
			if existed {
				return copySELinuxLabel(path, tmp)
			}
			return nil
		},
		BeforeRename: func(tmp string) error {
			if f.beforeRename != nil {
				if err := f.beforeRename(tmp); err != nil {
					return err
				}
			}
			return unchangedSince(path, old, existed)
		},
		Rename:     f.rename,
		SyncDir:    f.syncDir,
		NotDurable: f.NotDurable,
	}
	err = w.WriteFile(path, data, mode)
	if existed && errors.Is(err, syscall.EBUSY) {
		// A bind-mounted file cannot be renamed over: only its content
		// can be changed.
		if err := writeInPlace(path, data); err != nil {
			return true, fmt.Errorf("%s cannot be renamed over (bind mount?), and writing it in place failed: %w", path, err)
		}
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// remove deletes the file at path, whose content was old.
func (f File) remove(path string, old []byte) (bool, error) {
	if err := unchangedSince(path, old, true); err != nil {
		return false, err
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("remove hosts file: %w", err)
	}
	syncDir := f.syncDir
	if syncDir == nil {
		syncDir = atomicfile.SyncDir
	}
	if err := syncDir(filepath.Dir(path)); err != nil && f.NotDurable != nil {
		f.NotDurable(fmt.Errorf("removed %s, but the removal may not survive a crash: %w", path, err))
	}
	return true, nil
}

// keepOwner gives tmp the owner uid:gid unless it has it already (-1: keep).
func keepOwner(tmp *os.File, uid, gid int) error {
	fi, err := tmp.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (uid < 0 || int(st.Uid) == uid) && (gid < 0 || int(st.Gid) == gid) {
		return nil
	}
	return tmp.Chown(uid, gid)
}

// writeInPlace overwrites the file's content without replacing the file.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// selinuxXattr holds a file's SELinux security context.
const selinuxXattr = "security.selinux"

// copySELinuxLabel gives tmp the SELinux label of the file at src, if it has
// one: a new file gets its directory's default label (etc_t for /etc), not
// the label the file had (net_conf_t for /etc/hosts).
func copySELinuxLabel(src string, tmp *os.File) error {
	want, err := getxattr(func(b []byte) (int, error) { return unix.Getxattr(src, selinuxXattr, b) })
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read SELinux label of %s: %w", src, err)
	}
	fd := int(tmp.Fd())
	have, err := getxattr(func(b []byte) (int, error) { return unix.Fgetxattr(fd, selinuxXattr, b) })
	if err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := unix.Fsetxattr(fd, selinuxXattr, want, 0); err != nil {
		return fmt.Errorf("give %s the SELinux label %q of %s: %w", tmp.Name(), bytes.TrimRight(want, "\x00"), src, err)
	}
	return nil
}

// getxattr reads an extended attribute through get, sizing the buffer first.
func getxattr(get func([]byte) (int, error)) ([]byte, error) {
	for range 3 {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		b := make([]byte, n)
		n, err = get(b)
		if errors.Is(err, unix.ERANGE) {
			continue // it grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
	return nil, unix.ERANGE
}
