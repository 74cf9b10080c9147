package realcp

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacclient "k8s.io/client-go/kubernetes/typed/rbac/v1"
	"k8s.io/client-go/rest"

	"github.com/vipctl/vipctl/care/discovery"
	"github.com/vipctl/vipctl/care/kubeconf"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/care/rbac"
)

// nodeClient is what a node's watchdog has: the kubelet's kubeconfig read
// by care/kubeconf into probe.Credentials, over the lab network.
type nodeClient struct {
	creds     *probe.Credentials
	http      *http.Client
	server    *url.URL
	certFile  string
	keyFile   string
	reloadErr []error
}

func newNodeClient(t *testing.T, cp *ControlPlane, server netip.AddrPort) *nodeClient {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, err := cp.IssueNodeCert(dir, "kubelet-client", "node1")
	require.NoError(t, err)
	ca, err := os.ReadFile(cp.CAFile)
	require.NoError(t, err)
	kc := filepath.Join(dir, "kubelet.conf")
	require.NoError(t, os.WriteFile(kc, fmt.Appendf(nil, kubeletConf, base64.StdEncoding.EncodeToString(ca), server, certFile, keyFile), 0o600))
	n := &nodeClient{certFile: certFile, keyFile: keyFile}
	n.creds, err = probe.NewCredentials(kubeconf.Loader(kc, ""), time.Second, func(err error) { n.reloadErr = append(n.reloadErr, err) })
	require.NoError(t, err)
	cfg, err := kubeconf.Load(kc)
	require.NoError(t, err)
	n.server = cfg.Server
	n.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dialIn(LabNS), TLSClientConfig: n.creds.TLSConfig(false)}}
	return n
}

func (n *nodeClient) get(t *testing.T, u string) int {
	t.Helper()
	resp, err := n.http.Get(u)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// adminRBAC is an RBAC client with the lab's admin certificate.
func adminRBAC(t *testing.T, cp *ControlPlane) rbacclient.RbacV1Interface {
	cfg := &rest.Config{Host: "https://" + cp.Masters[0].Addr.String(), Dial: dialIn(LabNS),
		TLSClientConfig: rest.TLSClientConfig{CAFile: cp.CAFile, CertFile: cp.AdminCert, KeyFile: cp.AdminKey}}
	c, err := rbacclient.NewForConfig(cfg)
	require.NoError(t, err)
	return c
}

type listings struct {
	mu   sync.Mutex
	last []netip.AddrPort
	at   time.Time
	errs []error
}

func (l *listings) report(a []netip.AddrPort, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	l.last, l.at = slices.Clone(a), time.Now()
}

func (l *listings) has(a netip.AddrPort) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.last, a), l.at
}

// TestNodeIdentityDiscoversTheMasters checks, against real kube-apiservers
// with anonymous requests off, what the watchdog does with the kubelet's
// identity: authenticated probes, the RBAC master discovery needs (and
// nothing wider), the EndpointSlice watch seeing a master added to a
// running cluster, and a rotated client certificate taking over.
func TestNodeIdentityDiscoversTheMasters(t *testing.T) {
	cp := startLabWith(t, Options{AnonymousAuthOff: true, Standby: 1})
	m1, standby := cp.Masters[0], cp.Masters[3]
	node := newNodeClient(t, cp, m1.Addr)
	slices := node.server.JoinPath("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices").String()
	byName := slices + "?fieldSelector=metadata.name%3Dkubernetes"

	t.Run("anonymous auth off", func(t *testing.T) {
		for _, m := range cp.Masters[:3] {
			code, err := status(t, cp, m, "/readyz", false, 2*time.Second)
			require.NoError(t, err)
			assert.Equal(t, http.StatusUnauthorized, code, "%s: anonymous /readyz", m.Name)
			assert.Equal(t, http.StatusOK, node.get(t, "https://"+m.Addr.String()+"/readyz"), "%s: /readyz with the node's certificate", m.Name)
		}
	})

	t.Run("rbac", func(t *testing.T) {
		assert.Equal(t, http.StatusForbidden, node.get(t, byName), "a node cannot list the slice without the grant")
		changes, err := rbac.Apply(context.Background(), adminRBAC(t, cp))
		require.NoError(t, err)
		t.Logf("rbac apply: %v", changes)
		// RBAC is cached per apiserver: wait until the grant is seen.
		require.Eventually(t, func() bool { return node.get(t, byName) == http.StatusOK }, 30*time.Second, 100*time.Millisecond, "list by name with the grant")
		assert.Equal(t, http.StatusOK, node.get(t, slices+"/kubernetes"), "get by name")
		assert.Equal(t, http.StatusOK, node.get(t, byName+"&watch=1&timeoutSeconds=1"), "watch by name")
		assert.Equal(t, http.StatusForbidden, node.get(t, slices), "list without the name: not granted")
		assert.Equal(t, http.StatusForbidden, node.get(t, node.server.JoinPath("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices").String()+"?fieldSelector=metadata.name%3Dkubernetes"),
			"another namespace: not granted")
		again, err := rbac.Apply(context.Background(), adminRBAC(t, cp))
		require.NoError(t, err)
		for _, c := range again {
			assert.Equal(t, "unchanged", c.Op, c.String())
		}
	})

	t.Run("discovery", func(t *testing.T) {
		w := &discovery.Watcher{Server: node.server, Client: &http.Client{Transport: node.http.Transport}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var l listings
		done := make(chan struct{})
		go func() { defer close(done); w.Discover(ctx, l.report) }()
		defer func() { cancel(); <-done }()
		require.Eventually(t, func() bool {
			for _, m := range cp.Masters[:3] {
				if ok, _ := l.has(m.Addr); !ok {
					return false
				}
			}
			return true
		}, 30*time.Second, 10*time.Millisecond, "the three masters listed")

		require.NoError(t, standby.Start(StartOptions{}))
		require.NoError(t, standby.WaitReady(context.Background(), 3*time.Minute))
		ready := time.Now()
		require.Eventually(t, func() bool { ok, _ := l.has(standby.Addr); return ok }, time.Minute, 10*time.Millisecond, "the added master listed")
		_, at := l.has(standby.Addr)
		t.Logf("MEASURE real_discovery_listed_after_readyz %.3f s (negative: listed before its /readyz 200 was seen)", at.Sub(ready).Seconds())
		l.mu.Lock()
		assert.Empty(t, l.errs, "no failure while the API is up")
		l.mu.Unlock()

		t.Run("rotation", func(t *testing.T) {
			loads := node.creds.Loads()
			_, _, err := cp.IssueNodeCert(filepath.Dir(node.certFile), "kubelet-client", "node1")
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				return node.get(t, "https://"+standby.Addr.String()+"/readyz") == http.StatusOK && node.creds.Loads() > loads
			}, 10*time.Second, 100*time.Millisecond, "the rotated certificate is loaded and accepted")
			assert.Empty(t, node.reloadErr)
			assert.Equal(t, http.StatusOK, node.get(t, byName), "the grant follows the identity, not the certificate")
			l.mu.Lock()
			assert.Empty(t, l.errs, "the watch goes on")
			l.mu.Unlock()
		})
	})
}
