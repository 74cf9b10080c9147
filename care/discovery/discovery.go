// Package discovery lists the masters from the Kubernetes API: the
// addresses of the `kubernetes` Service's EndpointSlice in namespace
// `default`, which every kube-apiserver keeps up to date with the live
// apiservers (the slice the apiserver itself writes is named `kubernetes`,
// so it is watched by name: the node identity needs get, list and watch
// on that one object, see manifests.DiscoveryRBAC).
//
// It lists, then watches from the list's resource version, and starts
// over (after a backoff when the API failed) when the watch ends. It
// reports each listing, and each failure, to the watchdog (care.Discoverer);
// what a listing means (masters added, never removed for being absent) is
// the watchdog's business.
//
// It speaks the API's JSON over net/http and decodes only the fields it
// uses: the watchdog's binary links no Kubernetes API types nor client-go,
// whose initialisation alone costs several MB of resident memory.
package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
)

// The slice watched: the apiservers' own.
const (
	Namespace = "default"
	SliceName = "kubernetes"
)

// Watcher watches the kubernetes Service's EndpointSlice.
type Watcher struct {
	// Server is the apiserver's base URL (the kubeconfig's server: the
	// VIP). Client carries the TLS and the credentials.
	Server *url.URL
	Client *http.Client
	// UserAgent is sent with each request.
	UserAgent string
	// Backoff spaces the retries after a failure; DefaultBackoff when
	// zero.
	Backoff wait.Backoff
	Clock   clock.Clock
}

// DefaultBackoff retries after 1 s, doubling up to 1 min, with jitter.
func DefaultBackoff() wait.Backoff {
	return wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: time.Minute}
}

// Discover lists and watches until ctx ends, reporting every listing (the
// masters named, possibly none) and every failure.
func (w *Watcher) Discover(ctx context.Context, report func([]netip.AddrPort, error)) {
	clk := w.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	fresh := w.Backoff
	if fresh.Duration == 0 {
		fresh = DefaultBackoff()
	}
	b := fresh
	for ctx.Err() == nil {
		start := clk.Now()
		err := w.session(ctx, report)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			report(nil, err)
		}
		if clk.Since(start) > fresh.Cap {
			b = fresh // a session that lasted: start the backoff over
		}
		if err == nil && clk.Since(start) > time.Second {
			continue // the watch ended as asked: list again now
		}
		t := clk.NewTimer(b.Step())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// The few fields of the API's objects that discovery reads.
type (
	meta struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	}
	// Slice is an EndpointSlice (discovery.k8s.io/v1), what Addresses
	// reads of it.
	Slice struct {
		Metadata meta `json:"metadata"`
		Ports    []struct {
			Name string `json:"name"`
			Port *int32 `json:"port"`
		} `json:"ports"`
		Endpoints []struct {
			Addresses  []string `json:"addresses"`
			Conditions struct {
				Ready *bool `json:"ready"`
			} `json:"conditions"`
		} `json:"endpoints"`
	}
	sliceList struct {
		Metadata meta    `json:"metadata"`
		Items    []Slice `json:"items"`
	}
	event struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	status struct {
		Code    int    `json:"code"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
)

// get GETs the slices with query q and returns the response (200 only).
func (w *Watcher) get(ctx context.Context, q url.Values) (*http.Response, error) {
	q.Set("fieldSelector", "metadata.name="+SliceName)
	u := w.Server.JoinPath("/apis/discovery.k8s.io/v1/namespaces", Namespace, "endpointslices")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if w.UserAgent != "" {
		req.Header.Set("User-Agent", w.UserAgent)
	}
	resp, err := w.Client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var st status
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			msg = st.Message
		}
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	return resp, nil
}

// session lists the slice, reports it, and watches it until the watch ends
// (nil when it ended as asked, or its resource version expired).
func (w *Watcher) session(ctx context.Context, report func([]netip.AddrPort, error)) error {
	what := "EndpointSlice " + Namespace + "/" + SliceName
	resp, err := w.get(ctx, url.Values{})
	if err != nil {
		return fmt.Errorf("list %s: %w", what, err)
	}
	var list sliceList
	err = json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&list)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("list %s: %w", what, err)
	}
	var addrs []netip.AddrPort
	for i := range list.Items {
		addrs = append(addrs, Addresses(&list.Items[i])...)
	}
	report(addrs, nil)
	timeout := 5*60 + rand.IntN(5*60) // as client-go's reflector: 5 to 10 min
	resp, err = w.get(ctx, url.Values{"watch": {"1"}, "resourceVersion": {list.Metadata.ResourceVersion},
		"allowWatchBookmarks": {"true"}, "timeoutSeconds": {strconv.Itoa(timeout)}})
	if err != nil {
		return fmt.Errorf("watch %s: %w", what, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev event
		if err := dec.Decode(&ev); err != nil {
			if err == io.EOF || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch %s: %w", what, err)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			var s Slice
			if err := json.Unmarshal(ev.Object, &s); err != nil {
				return fmt.Errorf("watch %s: %w", what, err)
			}
			report(Addresses(&s), nil)
		case "DELETED":
			report(nil, nil)
		case "ERROR":
			var st status
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return nil // expired: list again
			}
			return fmt.Errorf("watch %s: %d %s: %s", what, st.Code, st.Reason, st.Message)
		}
	}
}

// Addresses returns the ready endpoints of s on its https port (its first
// port when none is named so), as IP:port. Addresses that do not parse are
// left out; whether an address can be a master is the watchdog's call.
func Addresses(s *Slice) []netip.AddrPort {
	var port int32
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if port == 0 || p.Name == "https" {
			port = *p.Port
		}
	}
	if port <= 0 || port > 65535 {
		return nil
	}
	var out []netip.AddrPort
	for _, e := range s.Endpoints {
		if e.Conditions.Ready != nil && !*e.Conditions.Ready {
			continue
		}
		for _, a := range e.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
		}
	}
	return out
}
