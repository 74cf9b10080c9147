package probe

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vipctl/vipctl/care/probe/probetest"
)

// whoServer is an apiserver stand-in that requires a client certificate
// from clientCA and remembers the common name of the last one presented.
type whoServer struct {
	target netip.AddrPort
	mu     sync.Mutex
	last   string
}

func (s *whoServer) lastCN() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func newWhoServer(t *testing.T, ca, clientCA *probetest.CA) *whoServer {
	t.Helper()
	w := &whoServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.last = r.TLS.PeerCertificates[0].Subject.CommonName
		w.mu.Unlock()
	}))
	pair, _, _ := ca.Issue(t, "kube-apiserver", false, "127.0.0.1")
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: clientCA.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	w.target = netip.MustParseAddrPort(srv.Listener.Addr().String())
	return w
}

// replace writes data to path through a rename, as the kubelet and
// kubeadm do.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

type credsLab struct {
	dir                 string
	ca, certF, keyF     string
	now                 time.Time
	creds               *Credentials
	errs                []error
	reloads             int
	clusterCA, clientCA *probetest.CA
}

func newCredsLab(t *testing.T) *credsLab {
	l := &credsLab{dir: t.TempDir(), now: time.Unix(1000, 0), clusterCA: probetest.NewCA(t, "cluster CA"), clientCA: probetest.NewCA(t, "client CA")}
	l.ca, l.certF, l.keyF = filepath.Join(l.dir, "ca.crt"), filepath.Join(l.dir, "client.pem"), filepath.Join(l.dir, "client.key")
	replace(t, l.ca, l.clusterCA.PEM)
	l.issue(t, "system:node:one")
	c, err := NewCredentials(FileLoader(l.ca, l.certF, l.keyF), time.Second, func(err error) { l.errs = append(l.errs, err) })
	require.NoError(t, err)
	c.now, c.checked = func() time.Time { return l.now }, l.now
	c.OnReload(func() { l.reloads++ })
	l.creds = c
	return l
}

func (l *credsLab) issue(t *testing.T, cn string) {
	_, cert, key := l.clientCA.Issue(t, cn, true)
	replace(t, l.keyF, key)
	replace(t, l.certF, cert)
}

func TestCredentialsPresentTheClientCertificate(t *testing.T) {
	l := newCredsLab(t)
	srv := newWhoServer(t, l.clusterCA, l.clientCA)
	p := httpsProber(t, l.creds.TLSConfig(false))
	r := p.Probe(context.Background(), srv.target)
	require.True(t, r.OK, r.Reason)
	assert.Equal(t, "system:node:one", srv.lastCN())
}

func TestCredentialsFollowARotatedCertificate(t *testing.T) {
	l := newCredsLab(t)
	srv := newWhoServer(t, l.clusterCA, l.clientCA)
	p := httpsProber(t, l.creds.TLSConfig(false))
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	l.issue(t, "system:node:rotated")
	// Within the check period the old material stays (no stat per probe).
	require.True(t, p.Probe(context.Background(), srv.target).OK)
	assert.Equal(t, "system:node:one", srv.lastCN())
	l.now = l.now.Add(time.Second)
	r := p.Probe(context.Background(), srv.target)
	require.True(t, r.OK, r.Reason)
	assert.Equal(t, "system:node:rotated", srv.lastCN(), "a full handshake presents the new certificate")
	assert.Equal(t, 2, l.creds.Loads())
	assert.Equal(t, 1, l.reloads, "told once")
	assert.Empty(t, l.errs)
}

func TestCredentialsFollowARotatedCA(t *testing.T) {
	l := newCredsLab(t)
	next := probetest.NewCA(t, "next cluster CA")
	srv := newWhoServer(t, next, l.clientCA)
	p := httpsProber(t, l.creds.TLSConfig(false))
	r := p.Probe(context.Background(), srv.target)
	require.False(t, r.OK)
	assert.Contains(t, r.Reason, "TLS verification failed")
	replace(t, l.ca, append(append([]byte{}, l.clusterCA.PEM...), next.PEM...))
	l.now = l.now.Add(2 * time.Second)
	r = p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
}

func TestCredentialsKeepTheirMaterialWhenAReloadFails(t *testing.T) {
	l := newCredsLab(t)
	srv := newWhoServer(t, l.clusterCA, l.clientCA)
	p := httpsProber(t, l.creds.TLSConfig(false))
	replace(t, l.certF, []byte("half-written"))
	l.now = l.now.Add(time.Second)
	r := p.Probe(context.Background(), srv.target)
	assert.True(t, r.OK, r.Reason)
	assert.Equal(t, "system:node:one", srv.lastCN())
	require.Len(t, l.errs, 1)
	assert.Contains(t, l.errs[0].Error(), "client certificate and key")
}

func TestCredentialsVerifyTheServerName(t *testing.T) {
	l := newCredsLab(t)
	srv := newWhoServer(t, l.clusterCA, l.clientCA)
	tc := l.creds.TLSConfig(false)
	p := httpsProber(t, tc)
	// The certificate names 127.0.0.1; probe it as another address.
	other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), srv.target.Port())
	r := p.Probe(context.Background(), other)
	if r.Refused {
		t.Skip("127.0.0.2 is not routed to loopback here")
	}
	assert.False(t, r.OK)
	assert.Contains(t, r.Reason, "TLS verification failed")
}

func TestNewCredentialsErrorsNameTheFile(t *testing.T) {
	_, err := NewCredentials(FileLoader("/nonexistent/ca.crt", "", ""), time.Second, nil)
	assert.ErrorContains(t, err, `CA file "/nonexistent/ca.crt"`)
}
