package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/e2e/realcp"
)

// server is the control plane under load: one etcd and one kube-apiserver,
// started in the current network namespace.
type server struct {
	dir        string
	addr       netip.AddrPort
	ca         *lab.CA
	caPool     *x509.CertPool
	caPEM      []byte
	adminCert  tls.Certificate
	etcd, apis *exec.Cmd
	etcdDone   chan error
	apisDone   chan error
}

// startServer writes the PKI and starts etcd and kube-apiserver with
// anonymous authentication off, client certificates against the lab CA and
// the Node and RBAC authorizers, as a hardened kubeadm cluster has them.
func startServer(ctx context.Context, dir string, bin realcp.Binaries, addr netip.AddrPort, logf func(string, ...any)) (*server, error) {
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	ca, err := lab.NewCA(pki)
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, addr: addr, ca: ca, caPool: x509.NewCertPool()}
	s.caPool.AddCert(ca.Cert)
	if s.caPEM, err = os.ReadFile(ca.CertFile); err != nil {
		return nil, err
	}
	crt, key, err := ca.Issue(pki, "apiserver", lab.CertSpec{CommonName: "kube-apiserver", DNSNames: lab.APIServerNames(),
		IPs: []netip.Addr{addr.Addr(), netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("127.0.0.1")}, Server: true})
	if err != nil {
		return nil, err
	}
	acrt, akey, err := ca.Issue(pki, "admin", lab.CertSpec{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		return nil, err
	}
	if s.adminCert, err = tls.LoadX509KeyPair(acrt, akey); err != nil {
		return nil, err
	}
	saKey, saPub, err := lab.WriteServiceAccountKeys(pki)
	if err != nil {
		return nil, err
	}
	const etcdURL = "http://127.0.0.1:2379"
	s.etcd, s.etcdDone, err = startLogged(filepath.Join(dir, "etcd.log"), bin.Etcd,
		"--name", "fleet", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "fleet=http://127.0.0.1:2380", "--log-level", "warn")
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	s.apis, s.apisDone, err = startLogged(filepath.Join(dir, "kube-apiserver.log"), bin.APIServer,
		"--etcd-servers="+etcdURL,
		"--advertise-address="+addr.Addr().String(),
		"--bind-address="+addr.Addr().String(),
		fmt.Sprintf("--secure-port=%d", addr.Port()),
		"--cert-dir="+filepath.Join(dir, "apiserver"),
		"--tls-cert-file="+crt, "--tls-private-key-file="+key,
		"--client-ca-file="+ca.CertFile,
		"--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=Node,RBAC",
		"--profiling=false",
	)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	t0 := time.Now()
	c := s.adminClient(2 * time.Second)
	for {
		resp, err := c.Get("https://" + addr.String() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-s.apisDone:
			s.close()
			return nil, fmt.Errorf("kube-apiserver exited before it was ready: %v (log %s)", err, filepath.Join(dir, "kube-apiserver.log"))
		case <-ctx.Done():
			s.close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(t0) > 3*time.Minute {
			s.close()
			return nil, fmt.Errorf("kube-apiserver not ready within 3m (log %s)", filepath.Join(dir, "kube-apiserver.log"))
		}
	}
	logf("fleet: kube-apiserver (pid %d) ready at %s in %s", s.pid(), addr, time.Since(t0).Round(time.Millisecond))
	return s, nil
}

func (s *server) pid() int { return s.apis.Process.Pid }

// issueNode gives a simulated node its client certificate: user
// system:node:NAME in group system:nodes, as a kubelet's.
func (s *server) issueNode(name string) (*node, error) {
	dir := filepath.Join(s.dir, "pki", "nodes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	crt, key, err := s.ca.Issue(dir, name, lab.CertSpec{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}, Client: true})
	if err != nil {
		return nil, err
	}
	n := &node{name: name}
	if n.certPEM, err = os.ReadFile(crt); err != nil {
		return nil, err
	}
	if n.keyPEM, err = os.ReadFile(key); err != nil {
		return nil, err
	}
	if n.cert, err = tls.X509KeyPair(n.certPEM, n.keyPEM); err != nil {
		return nil, fmt.Errorf("node %s certificate: %w", name, err)
	}
	return n, nil
}

// adminClient is an HTTP client with the admin certificate.
func (s *server) adminClient(timeout time.Duration) *http.Client {
	tc := &tls.Config{RootCAs: s.caPool, Certificates: []tls.Certificate{s.adminCert}}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

// close kills the apiserver and etcd and waits for them.
func (s *server) close() {
	for _, p := range []struct {
		cmd  *exec.Cmd
		done chan error
	}{{s.apis, s.apisDone}, {s.etcd, s.etcdDone}} {
		if p.cmd == nil || p.cmd.Process == nil {
			continue
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startLogged starts bin, its output appended to logPath; the returned
// channel receives its end.
func startLogged(logPath, bin string, args ...string) (*exec.Cmd, chan error, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(lf, "\n==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		lf.Close()
		done <- err
	}()
	return cmd, done, nil
}
