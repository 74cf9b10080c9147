package realcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// The control endpoint lets the scenarios inside the VM inject faults into
// the host's control plane. It listens on the lab bridge (10.10.0.2:7070,
// inside the lab namespace: only the VM and the masters can reach it).
//
//	POST /v1/masters/{name}/{action}   action: kill (SIGKILL, returns once the
//	     process is gone), start (?shutdownDelay=5s), terminate (SIGTERM),
//	     wait-exit, wait-ready (?timeout=2m), etcd-down, etcd-up, link-down,
//	     link-up, heal (link up, etcd up, running, ready)
//	POST /v1/heal                      heal every master
//	GET  /v1/status                    JSON list: name, running, etcd
//
// An action answers 200 with {"tookMs": n} once done, or an error status
// with the error as text.

// ActionResult is the control endpoint's answer to an action.
type ActionResult struct {
	TookMs float64 `json:"tookMs"`
}

// MasterStatus is one master in GET /v1/status.
type MasterStatus struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	Running bool   `json:"running"`
	Etcd    bool   `json:"etcd"`
}

func (cp *ControlPlane) serveControl() error {
	ln, err := listenIn(LabNS, controlAddr)
	if err != nil {
		return fmt.Errorf("control endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/masters/{name}/{action}", cp.handleAction)
	mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
		cp.reply(w, r, "heal all", func(ctx context.Context) error { return cp.HealAll(ctx) })
	})
	mux.HandleFunc("POST /v1/node-cert", cp.handleNodeCert)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		var st []MasterStatus
		for _, m := range cp.Masters {
			st = append(st, MasterStatus{Name: m.Name, Addr: m.Addr.String(), Running: m.Running(), Etcd: m.proxy.running()})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	cp.ctl = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	cp.ctlDone = make(chan struct{})
	go func() {
		defer close(cp.ctlDone)
		cp.ctl.Serve(ln)
	}()
	return nil
}

// HealAll heals every master in parallel (see Master.Heal) and stops the
// standby ones.
func (cp *ControlPlane) HealAll(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(cp.Masters))
	for i, m := range cp.Masters {
		if m.Standby {
			m.Kill() // a scenario started it: back on standby
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Heal(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// NodeCert is a node client certificate and its key (PEM), as POST
// /v1/node-cert issues it: the kubelet's certificate rotated.
type NodeCert struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func (cp *ControlPlane) handleNodeCert(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if node == "" {
		node = "node1"
	}
	dir, err := os.MkdirTemp(cp.Dir, "node-cert-")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := cp.IssueNodeCert(dir, "node", node)
	var nc NodeCert
	if err == nil {
		var c, k []byte
		c, err = os.ReadFile(certFile)
		if err == nil {
			k, err = os.ReadFile(keyFile)
		}
		nc = NodeCert{Cert: string(c), Key: string(k)}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	cp.logf("realcp: control: issued a node certificate for %s", node)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(nc)
}

func (cp *ControlPlane) handleAction(w http.ResponseWriter, r *http.Request) {
	m := cp.Master(r.PathValue("name"))
	if m == nil {
		http.Error(w, fmt.Sprintf("no master %q", r.PathValue("name")), http.StatusNotFound)
		return
	}
	timeout := 2 * time.Minute
	if s := r.URL.Query().Get("timeout"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			http.Error(w, fmt.Sprintf("timeout %q: %v", s, err), http.StatusBadRequest)
			return
		}
		timeout = d
	}
	var act func(ctx context.Context) error
	switch a := r.PathValue("action"); a {
	case "kill":
		act = func(context.Context) error { m.Kill(); return nil }
	case "start":
		var o StartOptions
		if s := r.URL.Query().Get("shutdownDelay"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, fmt.Sprintf("shutdownDelay %q: %v", s, err), http.StatusBadRequest)
				return
			}
			o.ShutdownDelay = d
		}
		o.AnonymousAuthOff = r.URL.Query().Get("anonymous") == "false"
		act = func(context.Context) error { return m.Start(o) }
	case "terminate":
		act = func(context.Context) error { return m.Terminate() }
	case "wait-exit":
		act = func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return m.WaitExit(ctx)
		}
	case "wait-ready":
		act = func(ctx context.Context) error { return m.WaitReady(ctx, timeout) }
	case "etcd-down":
		act = func(context.Context) error { m.EtcdDown(); return nil }
	case "etcd-up":
		act = func(context.Context) error { return m.EtcdUp() }
	case "link-down":
		act = func(context.Context) error { return m.LinkDown() }
	case "link-up":
		act = func(context.Context) error { return m.LinkUp() }
	case "heal":
		act = m.Heal
	default:
		http.Error(w, fmt.Sprintf("unknown action %q", a), http.StatusNotFound)
		return
	}
	cp.reply(w, r, m.Name+" "+r.PathValue("action"), act)
}

func (cp *ControlPlane) reply(w http.ResponseWriter, r *http.Request, what string, act func(context.Context) error) {
	t0 := time.Now()
	err := act(r.Context())
	took := time.Since(t0)
	cp.logf("realcp: control: %s: %s (err %v)", what, took.Round(time.Millisecond), err)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ActionResult{TookMs: float64(took.Microseconds()) / 1000})
}
