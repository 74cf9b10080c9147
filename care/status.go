package care

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/ipvs"
)

// Status is what /status serves: the watchdog's view of every master.
type Status struct {
	VIP       netip.AddrPort `json:"vip"`
	Scheduler string         `json:"scheduler"`
	Mode      ipvs.Mode      `json:"mode"`
	Interface string         `json:"interface,omitempty"`
	NodeIP    netip.Addr     `json:"nodeIP"`
	Version   string         `json:"version,omitempty"`
	// Ready is set once the first reconcile is done.
	Ready bool `json:"ready"`
	// FailOpen is set while every master is down and all are kept.
	FailOpen bool `json:"failOpen"`
	// ProbesUnauthorized is set while the masters refuse the probes'
	// credentials: every master that answers says 401 or 403.
	ProbesUnauthorized bool `json:"probesUnauthorized,omitempty"`
	// LastReconcile is the time of the last successful reconcile.
	LastReconcile time.Time `json:"lastReconcile,omitzero"`
	// LastError is the last reconcile error, cleared by a success.
	LastError string              `json:"lastError,omitempty"`
	Masters   []carestatus.Master `json:"masters"`
}

// Handler serves /metrics, /healthz (the loop is ticking), /readyz (the
// first reconcile is done) and /status (JSON).
func (w *Watchdog) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.met.reg, promhttp.HandlerOpts{Registry: w.met.reg}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		if age, ok := w.alive(); !ok {
			http.Error(rw, fmt.Sprintf("loop stuck: last tick %s ago", age.Round(time.Millisecond)), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.ready.Load() {
			http.Error(rw, "first reconcile not done yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(rw, "ok\n")
	})
	mux.HandleFunc("GET /status", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rw)
		enc.SetIndent("", "  ")
		_ = enc.Encode(w.Status())
	})
	return mux
}

// Serve listens on addr at once (so that a bad or busy address fails at
// start) and serves h until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler, log *zap.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	log.Info("serving metrics, health and status", zap.String("addr", ln.Addr().String()))
	return nil
}

// FetchStatus asks the watchdog listening on addr (HOST:PORT) for /status.
func FetchStatus(ctx context.Context, addr string) (Status, error) {
	var st Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return st, fmt.Errorf("watchdog status at %s: %w", addr, err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return st, fmt.Errorf("watchdog status at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("watchdog status at %s: HTTP %d", addr, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("watchdog status at %s: decode: %w", addr, err)
	}
	return st, nil
}
