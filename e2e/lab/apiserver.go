package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// The fake apiserver runs as a separate process (the test binary re-executed
// with these variables set) so that a scenario can SIGKILL it like a
// crashing kube-apiserver.
const (
	envRole   = "VIPCTL_LAB_ROLE"
	envNS     = "VIPCTL_LAB_NETNS"
	envName   = "VIPCTL_LAB_NAME"
	envCert   = "VIPCTL_LAB_CERT"
	envKey    = "VIPCTL_LAB_KEY"
	envStatus = "VIPCTL_LAB_STATUS"
	// envListen is the address to listen on; envNS empty keeps the root
	// namespace (the node's own apiserver in a master lab).
	envListen = "VIPCTL_LAB_LISTEN"
)

// MaybeServe turns this process into a fake apiserver when it was started
// as one by Master.Start; it never returns then. Call it first in TestMain.
func MaybeServe() {
	if os.Getenv(envRole) == roleKubeadm {
		os.Exit(runFakeKubeadm()) // the stand-in kubeadm: see fakekubeadm.go
	}
	if os.Getenv(envRole) != "apiserver" {
		return
	}
	if err := serveAPIServer(); err != nil {
		fmt.Fprintln(os.Stderr, "fake apiserver:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveAPIServer listens on :6443 inside the master's network namespace and
// answers like a kube-apiserver's health endpoints: /readyz, /livez and
// /healthz return the status code written in the status file (200 when the
// file is missing), so scenarios can play 403-then-500-then-200. Any other
// path answers "NAME saw REMOTE"; /watch streams a line every 100 ms until
// the client goes away, standing in for a long-lived watch.
func serveAPIServer() error {
	name := os.Getenv(envName)
	cert, err := tls.LoadX509KeyPair(os.Getenv(envCert), os.Getenv(envKey))
	if err != nil {
		return err
	}
	listen := ":6443"
	if p := os.Getenv(envNS); p != "" {
		ns, err := netns.GetFromPath(p)
		if err != nil {
			return fmt.Errorf("netns %s: %w", p, err)
		}
		// The socket belongs to the namespace the thread is in when it is
		// created; it stays there whichever thread later serves it.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
	} else if a := os.Getenv(envListen); a != "" {
		// In the root namespace: only the node's own address, never the
		// VIP, so that nothing but IPVS brings VIP traffic here.
		listen = a
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	statusFile := os.Getenv(envStatus)
	status := func() int {
		b, err := os.ReadFile(statusFile)
		if err != nil {
			return http.StatusOK
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return http.StatusOK
		}
		return n
	}
	mux := http.NewServeMux()
	health := func(w http.ResponseWriter, _ *http.Request) {
		code := status()
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s %d\n", name, code)
	}
	mux.HandleFunc("/readyz", health)
	mux.HandleFunc("/livez", health)
	mux.HandleFunc("/healthz", health)
	mux.HandleFunc("/watch", func(w http.ResponseWriter, r *http.Request) {
		fl, _ := w.(http.Flusher)
		for {
			if _, err := fmt.Fprintf(w, "%s event\n", name); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s\n", name, r.RemoteAddr)
	})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Printf("LAB: %s serving on %s\n", name, ln.Addr())
	if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
