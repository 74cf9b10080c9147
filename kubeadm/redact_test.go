package kubeadm

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRedactArgs(t *testing.T) {
	in := []string{
		"--token", testToken,
		"--discovery-token-ca-cert-hash", testHash,
		"--certificate-key=" + testCertKey,
		"--discovery-token", "123456.abcdefabcdefabcd",
		"--tls-bootstrap-token=654321.abcdefabcdefabcd",
		"--node-name", "worker-1",
		"--skip-phases=preflight,abcdef.0123456789abcdef",
	}
	orig := append([]string(nil), in...)
	got := RedactArgs(in)
	assert.Equal(t, []string{
		"--token", Redacted,
		"--discovery-token-ca-cert-hash", testHash,
		"--certificate-key=" + Redacted,
		"--discovery-token", Redacted,
		"--tls-bootstrap-token=" + Redacted,
		"--node-name", "worker-1",
		"--skip-phases=preflight," + Redacted,
	}, got, "secrets go, the public discovery hash and other flags stay")
	assert.Equal(t, orig, in, "the input is not modified")
	assert.Equal(t, []string{"--token"}, RedactArgs([]string{"--token"}), "a flag without value")
	assert.Equal(t, []string{testToken, testCertKey, "123456.abcdefabcdefabcd", "654321.abcdefabcdefabcd"}, Secrets(in))
}

func TestRedactText(t *testing.T) {
	s := "using token " + testToken + " and key " + testCertKey + "; hash " + testHash + "; other token zzzzzz.yyyyyyyyyyyyyyyy"
	got := RedactText(s, []string{testCertKey})
	assert.NotContains(t, got, testToken)
	assert.NotContains(t, got, testCertKey)
	assert.NotContains(t, got, "zzzzzz.yyyyyyyyyyyyyyyy", "any token-shaped word")
	assert.Contains(t, got, testHash)
	other := "c0ffee" + testCertKey[6:]
	got = RedactText("[upload-certs] Using certificate key:\n"+other+"\n", nil)
	assert.NotContains(t, got, other, "any certificate-key-shaped word, even one vipctl did not know")
	assert.Contains(t, RedactText("--discovery-token-ca-cert-hash sha256:"+other, nil), "sha256:"+other, "CA hashes are public")
}

func TestRedactingWriterSplitsAndKeepsTheTail(t *testing.T) {
	var out bytes.Buffer
	w := newRedactingWriter(&out, []string{testCertKey}, 2)
	// The secret arrives in two writes.
	half := len(testCertKey) / 2
	for _, p := range []string{"line one\nkey " + testCertKey[:half], testCertKey[half:] + " end\ntoken " + testToken + "\nlast without newline"} {
		n, err := w.Write([]byte(p))
		assert.NoError(t, err)
		assert.Equal(t, len(p), n)
	}
	w.Flush()
	assert.Equal(t, "line one\nkey "+Redacted+" end\ntoken "+Redacted+"\nlast without newline\n", out.String())
	assert.Equal(t, "token "+Redacted+"\nlast without newline", w.Tail(), "the last two lines")
	assert.False(t, strings.Contains(out.String(), testToken))
}
