package kubeconf

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/probe/probetest"
)

// kubeletConf is shaped as kubeadm writes /etc/kubernetes/kubelet.conf:
// the CA inline, the client certificate and key in one rotating file.
const kubeletConf = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://10.103.97.2:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: system:node:one
  name: system:node:one@kubernetes
current-context: system:node:one@kubernetes
users:
- name: system:node:one
  user:
    client-certificate: pki/kubelet-client-current.pem
    client-key: pki/kubelet-client-current.pem
`

func TestLoaderReadsAKubeletConf(t *testing.T) {
	dir := t.TempDir()
	ca := probetest.NewCA(t, "cluster CA")
	_, cert, key := ca.Issue(t, "system:node:one", true)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "pki"), 0o700))
	pem := filepath.Join(dir, "pki", "kubelet-client-current.pem")
	require.NoError(t, os.WriteFile(pem, append(append([]byte{}, cert...), key...), 0o600))
	kc := filepath.Join(dir, "kubelet.conf")
	require.NoError(t, os.WriteFile(kc, []byte(fmt.Sprintf(kubeletConf, base64.StdEncoding.EncodeToString(ca.PEM))), 0o600))

	rc, err := Load(kc)
	require.NoError(t, err)
	assert.Equal(t, "https://10.103.97.2:6443", rc.Server.String())

	m, files, err := Loader(kc, "/unused/ca.crt")()
	require.NoError(t, err)
	assert.Equal(t, ca.PEM, m.CA, "inline CA data")
	assert.Contains(t, string(m.Cert), "CERTIFICATE")
	assert.Contains(t, string(m.Key), "PRIVATE KEY")
	assert.Equal(t, []string{kc, pem, pem}, files, "paths are relative to the kubeconfig")
}

func TestLoaderErrorsNameTheFiles(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubelet.conf")
	require.NoError(t, os.WriteFile(kc, []byte(fmt.Sprintf(kubeletConf, base64.StdEncoding.EncodeToString([]byte("x")))), 0o600))
	_, _, err := Loader(kc, "")()
	require.Error(t, err)
	assert.Contains(t, err.Error(), kc)
	assert.Contains(t, err.Error(), "kubelet-client-current.pem")

	_, err = Load(filepath.Join(dir, "missing.conf"))
	assert.ErrorContains(t, err, "missing.conf")
}
