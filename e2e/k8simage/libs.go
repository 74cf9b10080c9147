package k8simage

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// LibDirs are the folders, inside each root, where WithLibraries looks for a
// library: Debian's multiarch folders first, as its dynamic loader does.
var LibDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// WithLibraries returns files plus, for every dynamically linked ELF among
// them (and, in turn, every library added), its program interpreter and the
// libraries it names in DT_NEEDED, each at the path where it was found so
// that the loader finds it there in the image too. Libraries are looked up in
// the file's DT_RUNPATH folders (absolute ones: systemd's private
// libsystemd-shared), then LibDirs, of each root in turn ("/" for this machine; an unpacked Debian
// package's folder for what the machine lacks). Files that are not ELF, and
// static executables, add nothing. A library found nowhere is an error
// wrapping ErrNotFound that names it and who needs it.
func WithLibraries(files []File, roots []string) ([]File, error) {
	out := append([]File(nil), files...)
	have, loaded := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		have[f.Dst] = true
		if b := path.Base(f.Dst); strings.HasSuffix(b, ".so") || strings.Contains(b, ".so.") {
			loaded[b] = true // a library given, wherever it is
		}
	}
	queue := append([]File(nil), files...)
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		if f.Src == "" {
			continue
		}
		interp, needed, runpath, err := elfDeps(f.Src)
		if err != nil {
			return nil, fmt.Errorf("file %s (%s): %w", f.Dst, f.Src, err)
		}
		add := func(dst, src string) {
			if have[dst] {
				return
			}
			have[dst] = true
			loaded[path.Base(dst)] = true
			nf := File{Dst: dst, Src: src}
			out = append(out, nf)
			queue = append(queue, nf)
		}
		if interp != "" {
			src, ok := findIn(roots, interp)
			if !ok {
				return nil, fmt.Errorf("file %s: interpreter %s: %w in %v", f.Dst, interp, ErrNotFound, roots)
			}
			add(interp, src)
		}
		dirs := append(runpath, LibDirs...)
	next:
		for _, lib := range needed {
			if loaded[lib] {
				// Added from another's runpath: the loader has it by
				// this name already (libsystemd-core needs
				// libsystemd-shared, found through systemd's runpath).
				continue
			}
			for _, d := range dirs {
				dst := path.Join(d, lib)
				if have[dst] {
					continue next
				}
			}
			for _, r := range roots {
				for _, d := range dirs {
					if src, ok := findIn([]string{r}, path.Join(d, lib)); ok {
						add(path.Join(d, lib), src)
						continue next
					}
				}
			}
			return nil, fmt.Errorf("file %s needs %s: %w in %v of %v", f.Dst, lib, ErrNotFound, dirs, roots)
		}
	}
	return out, nil
}

// elfDeps returns the interpreter, the DT_NEEDED names and the absolute
// DT_RUNPATH folders of the ELF file at p; all empty when p is not ELF or
// is static. Runpaths with $ORIGIN or another token are left out.
func elfDeps(p string) (interp string, needed, runpath []string, err error) {
	ef, err := elf.Open(p)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) || errors.Is(err, io.EOF) {
			return "", nil, nil, nil // not ELF (too short to be, as an empty file)
		}
		return "", nil, nil, err
	}
	defer ef.Close()
	for _, prog := range ef.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return "", nil, nil, fmt.Errorf("read PT_INTERP: %w", err)
		}
		for len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
		interp = string(b)
	}
	needed, err = ef.ImportedLibraries()
	if err != nil {
		return "", nil, nil, fmt.Errorf("DT_NEEDED: %w", err)
	}
	rp, err := ef.DynString(elf.DT_RUNPATH)
	if err != nil {
		return "", nil, nil, fmt.Errorf("DT_RUNPATH: %w", err)
	}
	for _, e := range rp {
		for _, d := range strings.Split(e, ":") {
			if strings.HasPrefix(d, "/") && !strings.Contains(d, "$") {
				runpath = append(runpath, d)
			}
		}
	}
	return interp, needed, runpath, nil
}

// findIn returns root+p for the first root where it is a regular file
// (symbolic links followed).
func findIn(roots []string, p string) (string, bool) {
	for _, r := range roots {
		src := filepath.Join(r, p)
		if st, err := os.Stat(src); err == nil && st.Mode().IsRegular() {
			return src, true
		}
	}
	return "", false
}
