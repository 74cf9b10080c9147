package kubeadm

import (
	"bytes"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// Redacted replaces a secret in logs and messages.
const Redacted = "<redacted>"

// secretFlags are the kubeadm join flags whose values are credentials. The
// discovery hash (--discovery-token-ca-cert-hash) is public and kept.
var secretFlags = []string{"--token", "--certificate-key", "--discovery-token", "--tls-bootstrap-token"}

// tokenPattern matches a bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, wherever
// it appears.
var tokenPattern = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)

// RedactArgs returns a copy of kubeadm arguments with the values of
// --token, --certificate-key, --discovery-token and --tls-bootstrap-token
// (as "--flag value" or "--flag=value") and any token-shaped word replaced
// by Redacted.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		if slices.Contains(secretFlags, name) {
			if hasValue {
				out[i] = name + "=" + Redacted
				continue
			}
			out[i] = a
			if i+1 < len(args) {
				i++
				out[i] = Redacted
			}
			continue
		}
		out[i] = tokenPattern.ReplaceAllString(a, Redacted)
	}
	return out
}

// Secrets returns the values of the secret flags in kubeadm arguments, so
// that they can be removed from kubeadm's output too.
func Secrets(args []string) []string {
	var s []string
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !slices.Contains(secretFlags, name) {
			continue
		}
		if !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		if value != "" {
			s = append(s, value)
		}
	}
	return s
}

// keyPattern matches a word of 64 hex digits: a certificate key, as
// `kubeadm init --upload-certs` prints it, unless it follows "sha256:" (a
// public CA hash).
var keyPattern = regexp.MustCompile(`(sha256:)?\b[0-9a-fA-F]{64}\b`)

// RedactText replaces every secret, every token-shaped word and every
// certificate-key-shaped word in s.
func RedactText(s string, secrets []string) string {
	for _, v := range secrets {
		s = strings.ReplaceAll(s, v, Redacted)
	}
	s = tokenPattern.ReplaceAllString(s, Redacted)
	return keyPattern.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "sha256:") {
			return m
		}
		return Redacted
	})
}

// redactingWriter passes a command's output on line by line with secrets
// removed, and keeps its last lines for an error report. It is safe for the
// concurrent writes of a command's stdout and stderr.
type redactingWriter struct {
	mu      sync.Mutex
	out     io.Writer // may be nil
	secrets []string
	partial []byte
	tail    []string
	keep    int
}

func newRedactingWriter(out io.Writer, secrets []string, keep int) *redactingWriter {
	return &redactingWriter{out: out, secrets: secrets, keep: keep}
}

func (w *redactingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	// A secret could be split across two writes: hold back an unterminated
	// line until its end arrives (or Flush), unless it grows unreasonably.
	if len(w.partial) > 64<<10 {
		w.line(string(w.partial))
		w.partial = nil
	}
	return len(p), nil
}

// line handles one complete line; the caller holds mu.
func (w *redactingWriter) line(s string) {
	s = RedactText(strings.TrimRight(s, "\r"), w.secrets)
	if w.out != nil {
		_, _ = io.WriteString(w.out, s+"\n")
	}
	w.tail = append(w.tail, s)
	if len(w.tail) > w.keep {
		w.tail = w.tail[len(w.tail)-w.keep:]
	}
}

// Flush passes on an unterminated last line.
func (w *redactingWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(string(w.partial))
		w.partial = nil
	}
}

// Tail returns the last lines written, redacted.
func (w *redactingWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}
