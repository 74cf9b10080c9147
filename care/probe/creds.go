package probe

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Material is the TLS material of the probes: the CA bundle that verifies
// the apiservers and an optional client certificate and key, all PEM.
type Material struct {
	CA        []byte
	Cert, Key []byte
}

// Loader reads the material afresh, and names the files it came from (the
// files whose change makes Credentials load it again).
type Loader func() (m Material, files []string, err error)

// FileLoader reads a CA file and an optional client certificate and key.
func FileLoader(caFile, certFile, keyFile string) Loader {
	return func() (Material, []string, error) {
		var m Material
		var files []string
		var err error
		if caFile != "" {
			if m.CA, err = os.ReadFile(caFile); err != nil {
				return m, nil, fmt.Errorf("CA file %q: %w", caFile, err)
			}
			files = append(files, caFile)
		}
		if certFile != "" || keyFile != "" {
			if m.Cert, err = os.ReadFile(certFile); err != nil {
				return m, nil, fmt.Errorf("client certificate %q: %w", certFile, err)
			}
			if m.Key, err = os.ReadFile(keyFile); err != nil {
				return m, nil, fmt.Errorf("client key %q: %w", keyFile, err)
			}
			files = append(files, certFile, keyFile)
		}
		return m, files, nil
	}
}

// Credentials hold the CA pool and client certificate of the probes and
// reload them when their files change: the kubelet rotates its client
// certificate (the file behind kubelet.conf's client-certificate is replaced
// well before expiry), and a cluster CA may be rotated. The files are
// checked (size, modification time, and on a change their content's hash)
// at most once per Every, from the TLS handshakes themselves, so an idle
// prober costs nothing and a busy one one stat per file per Every. A reload
// that fails keeps the material in use and is reported to OnError.
type Credentials struct {
	load    Loader
	every   time.Duration
	now     func() time.Time
	onError func(error)
	onLoad  func()

	mu      sync.Mutex
	checked time.Time
	files   []string
	stamps  map[string]stamp
	sum     [32]byte
	pool    *x509.CertPool
	cert    *tls.Certificate
	loads   int
	// cache is the TLS session cache of TLSConfig, emptied when the
	// material changes so the next handshakes are full ones (with the new
	// client certificate).
	cache *sessionCache
}

// sessionCache is an LRU session cache that can be emptied. Get, the
// first thing a client handshake does, checks the files first (before
// it, refresh), so the handshake after a rotation is a full one.
type sessionCache struct {
	before func()
	mu     sync.Mutex
	c      tls.ClientSessionCache
}

func newSessionCache() *sessionCache { return &sessionCache{c: tls.NewLRUClientSessionCache(64)} }

func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	if s.before != nil {
		s.before()
	}
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	return c.Get(key)
}

func (s *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	c.Put(key, cs)
}

func (s *sessionCache) reset() {
	s.mu.Lock()
	s.c = tls.NewLRUClientSessionCache(64)
	s.mu.Unlock()
}

type stamp struct {
	size int64
	mod  time.Time
}

// NewCredentials loads the material once; an error names what could not be
// read or parsed. every bounds how often the files are checked for a
// change; onError (may be nil) hears of a failed reload.
func NewCredentials(load Loader, every time.Duration, onError func(error)) (*Credentials, error) {
	c := &Credentials{load: load, every: every, now: time.Now, onError: onError, cache: newSessionCache()}
	c.cache.before = c.refresh
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// OnError sets what hears of a failed reload.
func (c *Credentials) OnError(f func(error)) {
	c.mu.Lock()
	c.onError = f
	c.mu.Unlock()
}

// OnReload sets what hears of material reloaded after a change.
func (c *Credentials) OnReload(f func()) {
	c.mu.Lock()
	c.onLoad = f
	c.mu.Unlock()
}

// Loads is how many times the material was (re)loaded successfully.
func (c *Credentials) Loads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads
}

// reload reads the material and, when it parses and differs from the one
// in use, swaps it in.
func (c *Credentials) reload() error {
	m, files, err := c.load()
	if err != nil {
		return err
	}
	stamps := map[string]stamp{}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			stamps[f] = stamp{fi.Size(), fi.ModTime()}
		}
	}
	h := sha256.New()
	for _, b := range [][]byte{m.CA, m.Cert, m.Key} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files, c.stamps, c.checked = files, stamps, c.now()
	if c.loads > 0 && sum == c.sum {
		return nil
	}
	var pool *x509.CertPool
	if len(m.CA) > 0 {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(m.CA) {
			return errors.New("CA: no PEM certificate in it")
		}
	}
	var cert *tls.Certificate
	if len(m.Cert) > 0 || len(m.Key) > 0 {
		kp, err := tls.X509KeyPair(m.Cert, m.Key)
		if err != nil {
			return fmt.Errorf("client certificate and key: %w", err)
		}
		cert = &kp
	}
	c.pool, c.cert, c.sum = pool, cert, sum
	c.loads++
	c.cache.reset()
	return nil
}

// refresh reloads the material when a file changed since the last check,
// checking at most once per every.
func (c *Credentials) refresh() {
	c.mu.Lock()
	now := c.now()
	if now.Sub(c.checked) < c.every {
		c.mu.Unlock()
		return
	}
	c.checked = now
	changed := false
	for _, f := range c.files {
		fi, err := os.Stat(f)
		if err != nil || c.stamps[f] != (stamp{fi.Size(), fi.ModTime()}) {
			changed = true
			break
		}
	}
	onError, onLoad, loads := c.onError, c.onLoad, c.loads
	c.mu.Unlock()
	if !changed {
		return
	}
	err := c.reload()
	switch {
	case err != nil && onError != nil:
		onError(err)
	case err == nil && onLoad != nil && c.Loads() > loads:
		onLoad()
	}
}

// Pool is the CA pool in use (after a check for a change); nil when the
// material has no CA.
func (c *Credentials) Pool() *x509.CertPool {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool
}

// Cert is the client certificate in use (after a check for a change); nil
// when there is none.
func (c *Credentials) Cert() *tls.Certificate {
	c.refresh()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

// TLSConfig is a client configuration that presents the current client
// certificate and verifies the server against the current CA pool at every
// handshake (resumed ones included), so a rotated certificate or CA takes
// effect without a restart. With insecure, the server is not verified; a
// nil pool without insecure fails every handshake.
func (c *Credentials) TLSConfig(insecure bool) *tls.Config {
	cfg := TLSConfig(nil, nil, true)
	cfg.ClientSessionCache = c.cache
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert := c.Cert(); cert != nil {
			return cert, nil
		}
		return &tls.Certificate{}, nil // no certificate: the server decides
	}
	if insecure {
		return cfg
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPeer(cs, c.Pool())
	}
	return cfg
}

// verifyPeer does what crypto/tls does without InsecureSkipVerify: the
// chain to pool and the server name (the master's IP).
func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool) error {
	if pool == nil {
		return errors.New("no CA to verify the apiserver's certificate")
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, ic := range cs.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: cs.ServerName})
	return err
}
