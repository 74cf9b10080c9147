package manifests

import (
	"os"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

// FileMode is the mode of a written manifest: kubeadm's static pods are 0600.
const FileMode os.FileMode = 0o600

// WriteFile replaces path with data atomically (see package atomicfile), so
// the kubelet never sees a half-written manifest; the temporary file's name
// starts with a dot, which the kubelet's static pod source ignores. The
// file gets mode FileMode. The folder must exist: a missing one is an
// error naming it. Once the file is in place the write succeeds, even if
// syncing the folder afterwards fails.
func WriteFile(path string, data []byte) error {
	return writeFile(atomicfile.Writer{}, path, data)
}

func writeFile(w atomicfile.Writer, path string, data []byte) error {
	return w.WriteFile(path, data, FileMode)
}
