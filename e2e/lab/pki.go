package lab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// CA is a lab certificate authority: it signs the apiservers' serving
// certificates and the clients' certificates. Its key never leaves memory.
type CA struct {
	Cert     *x509.Certificate
	CertFile string // PEM, what --client-ca-file, --ca-file and kubeconfigs use
	key      crypto.Signer
}

// CertSpec is what a lab certificate says. A serving certificate lists its
// names in DNSNames and IPs; a client certificate's user is CommonName and
// its groups are Organization (O=system:masters for an admin).
type CertSpec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []netip.Addr
	Server       bool // ExtKeyUsageServerAuth
	Client       bool // ExtKeyUsageClientAuth
}

// certLifetime is long enough for any test run, short enough that a
// leftover lab certificate is useless.
const certLifetime = 48 * time.Hour

// NewCA makes a CA and writes its certificate to dir/ca.crt.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vipctl-lab-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca := &CA{Cert: cert, CertFile: filepath.Join(dir, "ca.crt"), key: key}
	if err := writePEM(ca.CertFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return ca, nil
}

// Issue signs a certificate for spec with a new P-256 key and writes
// dir/name.crt and dir/name.key (PEM; the key as "EC PRIVATE KEY", which
// kube-apiserver, kubectl and Go all read).
func (ca *CA) Issue(dir, name string, spec CertSpec) (certFile, keyFile string, err error) {
	if !spec.Server && !spec.Client {
		return "", "", fmt.Errorf("certificate %s: neither Server nor Client is set", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("key for %s: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     spec.DNSNames,
	}
	for _, ip := range spec.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("certificate %s: %w", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("key for %s: %w", name, err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", kder); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// WriteServiceAccountKeys writes the key pair kube-apiserver signs and
// verifies service-account tokens with: dir/sa.key (--service-account-
// signing-key-file) and dir/sa.pub (--service-account-key-file).
func WriteServiceAccountKeys(dir string) (keyFile, pubFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("service-account key: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("service-account key: %w", err)
	}
	pder, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("service-account public key: %w", err)
	}
	keyFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := writePEM(keyFile, "EC PRIVATE KEY", kder); err != nil {
		return "", "", err
	}
	if err := writePEM(pubFile, "PUBLIC KEY", pder); err != nil {
		return "", "", err
	}
	return keyFile, pubFile, nil
}

// APIServerNames are the DNS names kubeadm puts in an apiserver certificate,
// plus the name vipctl's nodes use.
func APIServerNames() []string {
	return []string{"apiserver.cluster.local", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}
}

// writePKI writes a lab CA (ca.crt) and, for each master, a serving
// certificate whose SANs hold the master's IP, the VIP and
// apiserver.cluster.local, like kubeadm's apiserver certificate.
func writePKI(dir string, vip netip.Addr, masters []*Master) error {
	ca, err := NewCA(dir)
	if err != nil {
		return err
	}
	for _, m := range masters {
		m.CertFile, m.KeyFile, err = ca.Issue(dir, m.Name, CertSpec{
			CommonName: "kube-apiserver",
			DNSNames:   APIServerNames(),
			IPs:        []netip.Addr{m.IP, vip, netip.MustParseAddr("127.0.0.1")},
			Server:     true,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
