package probe

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSOptions say how the apiserver's certificate is verified and which
// client certificate, if any, is presented.
type TLSOptions struct {
	// CAFile is a PEM bundle with the cluster CA; the apiserver's
	// certificate must chain to it. Required unless InsecureSkipVerify.
	CAFile string
	// CertFile and KeyFile are an optional client certificate and key.
	CertFile, KeyFile string
	// InsecureSkipVerify accepts any server certificate.
	InsecureSkipVerify bool
}

// LoadTLS reads the files o names and returns the client configuration.
// System roots are never used: a kube-apiserver's certificate is signed by
// the cluster CA, so without a CA file verification is impossible and
// LoadTLS refuses unless InsecureSkipVerify is set. Errors name the file.
func LoadTLS(o TLSOptions) (*tls.Config, error) {
	var pool *x509.CertPool
	switch {
	case o.InsecureSkipVerify:
	case o.CAFile == "":
		return nil, errors.New("no CA file: the apiserver's certificate cannot be verified (give the cluster CA, or skip verification explicitly)")
	default:
		p, err := LoadCA(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file %q: %w", o.CAFile, err)
		}
		pool = p
	}
	var certs []tls.Certificate
	if o.CertFile != "" || o.KeyFile != "" {
		c, err := LoadClientCert(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %q with key %q: %w", o.CertFile, o.KeyFile, err)
		}
		certs = append(certs, c)
	}
	return TLSConfig(pool, certs, o.InsecureSkipVerify), nil
}

// LoadCA reads a PEM bundle of CA certificates.
func LoadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// LoadClientCert reads a client certificate and its key; both are needed.
func LoadClientCert(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, errors.New("give both the certificate and the key, or neither")
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}

// TLSConfig builds the client configuration: roots (nil only with
// insecure), client certificates, TLS 1.2 at least. The server name is set
// per probe to the master's IP, which kube-apiserver certificates carry.
//
// Sessions are resumed. A probe that opens a connection (the first to a
// master, one after Config.ReuseFor, after an unhealthy answer or when the
// kept connection was closed or reset) completes a TLS handshake, and after
// the first full, verified handshake it is an abbreviated one, without the
// certificate chain and its signature checks, which are most of a probe's
// CPU. Probes in between travel on the connection kept from a healthy
// answer (Config.ReuseFor), with no handshake at all.
func TLSConfig(roots *x509.CertPool, certs []tls.Certificate, insecure bool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, Certificates: certs, InsecureSkipVerify: insecure,
		ClientSessionCache: tls.NewLRUClientSessionCache(64)}
}
