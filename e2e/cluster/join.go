package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Secrets are what masters share to join: a bootstrap token and the key that
// encrypts the uploaded control-plane certificates. Both are written to
// files of mode 0600 in the lab folder and never put on a command line.
type Secrets struct {
	Token string
	// CertKeyFile holds the certificate key (kubeadm's --certificate-key
	// value): vipctl join reads it from a file.
	CertKeyFile string
}

// NewSecrets makes a token and a certificate key with the real kubeadm
// (`kubeadm token generate`, `kubeadm certs certificate-key`).
func (l *Lab) NewSecrets(ctx context.Context, n *Node) (Secrets, error) {
	tok, err := n.Run(ctx, "/usr/local/bin/kubeadm", "token", "generate")
	if err != nil {
		return Secrets{}, err
	}
	key, err := n.Run(ctx, "/usr/local/bin/kubeadm", "certs", "certificate-key")
	if err != nil {
		return Secrets{}, err
	}
	s := Secrets{Token: strings.TrimSpace(string(tok)), CertKeyFile: filepath.Join(l.Dir, "certificate-key")}
	if err := os.WriteFile(s.CertKeyFile, []byte(strings.TrimSpace(string(key))), 0o600); err != nil {
		return Secrets{}, err
	}
	return s, nil
}

// secretsConfig is the InitConfiguration part that makes kubeadm init
// create the token and upload the certificates under the key (with
// --upload-certs).
func (s Secrets) initConfig() (string, error) {
	key, err := os.ReadFile(s.CertKeyFile)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("certificateKey: %s\nbootstrapTokens:\n  - token: %s\n    ttl: 1h0m0s\n", strings.TrimSpace(string(key)), s.Token), nil
}

// UploadCerts uploads first's control-plane certificates again, encrypted
// under the key of s, with the real `kubeadm init phase upload-certs`: what
// a user runs before a master joins more than two hours after init (kubeadm
// deletes the uploaded certificates then). The key is read from the config
// Init wrote (0600), never put on the command line, and kubeadm is told not
// to print it.
func (l *Lab) UploadCerts(ctx context.Context, first *Node) error {
	out, err := first.Command(ctx, "/usr/local/bin/kubeadm", "init", "phase", "upload-certs", "--upload-certs",
		"--skip-certificate-key-print", "--config", filepath.Join(first.Dir, "kubeadm.yaml")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: kubeadm init phase upload-certs: %w\n%s", first.Name, err, out)
	}
	return nil
}

// CACertHash is kubeadm's discovery hash of the cluster CA that master
// wrote: sha256 of its SubjectPublicKeyInfo.
func CACertHash(n *Node) (string, error) {
	b, err := os.ReadFile(n.Path("/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("%s: ca.crt: no PEM block", n.Name)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: ca.crt: %w", n.Name, err)
	}
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(h[:]), nil
}

// JoinControlPlane makes n a master of the cluster whose first master is
// first, with the real `kubeadm join --control-plane` (stacked etcd, the
// certificates downloaded with the key of s). n's /etc/hosts maps
// controlPlaneEndpoint's name to first while it joins.
//
// Seam for `vipctl join --control-plane`: it replaces the kubeadm join
// below, given the same JoinConfiguration and the key file.
func (l *Lab) JoinControlPlane(ctx context.Context, n, first *Node, s Secrets) (time.Duration, error) {
	hash, err := CACertHash(first)
	if err != nil {
		return 0, err
	}
	return l.JoinControlPlaneAt(ctx, n, first.IP, hash, s)
}

// JoinControlPlaneAt is JoinControlPlane with the first master given by its
// address and its CA's discovery hash (a master outside the lab's nodes:
// the VM of TestClusterInit).
func (l *Lab) JoinControlPlaneAt(ctx context.Context, n *Node, first netip.Addr, hash string, s Secrets) (time.Duration, error) {
	key, err := os.ReadFile(s.CertKeyFile)
	if err != nil {
		return 0, err
	}
	cfg := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
patches:
  directory: %[7]s
nodeRegistration:
  name: %[1]s
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: Never
  kubeletExtraArgs:
    - name: node-ip
      value: %[2]s
discovery:
  bootstrapToken:
    apiServerEndpoint: %[3]s:6443
    token: %[4]s
    caCertHashes: [%[5]s]
controlPlane:
  localAPIEndpoint:
    advertiseAddress: %[2]s
    bindPort: 6443
  certificateKey: %[6]s
`, n.Name, n.IP, Hostname, s.Token, hash, strings.TrimSpace(string(key)), n.patchDir())
	if err := n.writePatches(); err != nil {
		return 0, err
	}
	p := filepath.Join(n.Dir, "join.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return 0, err
	}
	if err := n.mapEndpoint(first.String()); err != nil {
		return 0, err
	}
	n.SuperviseKubelet()
	t0 := time.Now()
	out, err := n.Command(ctx, "/usr/local/bin/kubeadm", "join", "--config", p).CombinedOutput()
	took := time.Since(t0)
	if err != nil {
		return took, fmt.Errorf("%s: kubeadm join --control-plane: %w (kubelet log %s)\n%s", n.Name, err, filepath.Join(n.Dir, "kubelet.log"), out)
	}
	return took, nil
}

// mapEndpoint points controlPlaneEndpoint's name at addr in n's /etc/hosts.
func (n *Node) mapEndpoint(addr string) error {
	p := n.Path("/etc/hosts")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == Hostname {
			continue
		}
		lines = append(lines, l)
	}
	lines = append(lines, addr+" "+Hostname)
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
