package kubeadm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Secrets read from files and handed to kubeadm in a configuration file, so
// that none is on a command line (/proc/PID/cmdline is readable by every
// local user) or in a shell's history.

var (
	// bootstrapTokenRE is a whole bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}.
	bootstrapTokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	// certificateKeyRE is a whole certificate key: 32 bytes, hex-encoded.
	certificateKeyRE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// CheckToken refuses a malformed bootstrap token without showing it.
func CheckToken(s string) error {
	if !bootstrapTokenRE.MatchString(s) {
		return errors.New("not a bootstrap token: want 6 and 16 characters a-z0-9 joined by a dot, as `kubeadm token create` prints")
	}
	return nil
}

// CheckCertificateKey refuses a malformed certificate key without showing
// it.
func CheckCertificateKey(s string) error {
	if !certificateKeyRE.MatchString(s) {
		return errors.New("not a certificate key: want 64 hex digits, as `kubeadm init phase upload-certs --upload-certs` prints")
	}
	return nil
}

// ReadSecretFile reads one secret from path, the value of flag, trimmed of
// surrounding white space, and checks it with check. A missing, empty or
// malformed file is an error naming the flag and the path, never the
// secret; a file that other users can read is a warning.
func ReadSecretFile(flag, path string, check func(string) error) (secret, warning string, err error) {
	if path == "" {
		return "", "", fmt.Errorf("%s: empty path", flag)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if !st.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s %s: not a regular file", flag, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	secret = strings.TrimSpace(string(b))
	if secret == "" {
		return "", "", fmt.Errorf("%s %s: the file is empty", flag, path)
	}
	if strings.ContainsAny(secret, "\n\r") {
		return "", "", fmt.Errorf("%s %s: more than one line; the file holds the secret alone", flag, path)
	}
	if check != nil {
		if err := check(secret); err != nil {
			return "", "", fmt.Errorf("%s %s: %w", flag, path, err)
		}
	}
	if perm := st.Mode().Perm(); perm&0o044 != 0 {
		warning = fmt.Sprintf("%s %s: readable by other users (mode %04o): `chmod 600 %s`", flag, path, perm, path)
	}
	return secret, warning, nil
}

// NewBootstrapToken returns a random bootstrap token.
func NewBootstrapToken() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, 23)
	buf := make([]byte, 32)
	for len(out) < 23 {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random token: %w", err)
		}
		for _, c := range buf {
			if len(out) == 6 {
				out = append(out, '.')
			}
			// Rejection sampling: 252 is the largest multiple of 36 in a byte.
			if len(out) < 23 && c < 252 {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// NewCertificateKey returns a random certificate key.
func NewCertificateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random certificate key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// TempFiles writes the private files vipctl hands kubeadm.
type TempFiles interface {
	// WriteTemp writes data to a new file named name that only its owner
	// can read (0600, in a new 0700 folder) and returns its path and a
	// function that removes it and its folder.
	WriteTemp(name string, data []byte) (path string, remove func() error, err error)
}

// OSTemp implements TempFiles in the system's temporary folder.
type OSTemp struct {
	// Dir is the parent folder; "" is os.TempDir().
	Dir string
}

// WriteTemp implements TempFiles.
func (t OSTemp) WriteTemp(name string, data []byte) (path string, remove func() error, err error) {
	dir, err := os.MkdirTemp(t.Dir, "vipctl-kubeadm-")
	if err != nil {
		return "", nil, fmt.Errorf("create a private folder: %w", err)
	}
	remove = func() error {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	path = filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err == nil {
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = remove()
		return "", nil, fmt.Errorf("write %s: %w", path, err)
	}
	return path, remove, nil
}
