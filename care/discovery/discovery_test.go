package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/wait"
)

func sliceJSON(port int, ready []bool, addrs ...string) string {
	var eps []string
	for i, a := range addrs {
		cond := "{}"
		if i < len(ready) {
			cond = fmt.Sprintf(`{"ready":%t}`, ready[i])
		}
		eps = append(eps, fmt.Sprintf(`{"addresses":[%q],"conditions":%s}`, a, cond))
	}
	out := `{"kind":"EndpointSlice","metadata":{"name":"kubernetes","namespace":"default","resourceVersion":"7"},"addressType":"IPv4","ports":[{"name":"other","port":1},{"name":"https","port":` + fmt.Sprint(port) + `,"protocol":"TCP"}],"endpoints":[`
	for i, e := range eps {
		if i > 0 {
			out += ","
		}
		out += e
	}
	return out + "]}"
}

func TestAddressesAreTheReadyEndpointsOnTheHTTPSPort(t *testing.T) {
	var s Slice
	require.NoError(t, json.Unmarshal([]byte(sliceJSON(6443, []bool{true, false}, "192.0.2.11", "192.0.2.12", "192.0.2.13", "bogus")), &s))
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.13:6443")}, Addresses(&s),
		"not ready left out (no condition means ready), unparsable left out")
	s.Ports = nil
	assert.Empty(t, Addresses(&s), "no port, no master")
}

// fakeAPI serves the slice's list and a watch the test feeds.
type fakeAPI struct {
	mu      sync.Mutex
	failing int // lists to fail first
	list    string
	events  chan string
	queries []url.Values
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, q)
	fail := f.failing > 0
	if fail {
		f.failing--
	}
	list := f.list
	f.mu.Unlock()
	if fail {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","code":403,"reason":"Forbidden","message":"endpointslices.discovery.k8s.io is forbidden: User \"system:node:n1\" cannot list resource"}`)
		return
	}
	if q.Get("watch") == "" {
		fmt.Fprintf(w, `{"kind":"EndpointSliceList","metadata":{"resourceVersion":"7"},"items":[%s]}`, list)
		return
	}
	w.(http.Flusher).Flush()
	for {
		select {
		case ev := <-f.events:
			fmt.Fprintln(w, ev)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

type reports struct {
	mu   sync.Mutex
	list [][]netip.AddrPort
	errs []error
}

func (r *reports) report(a []netip.AddrPort, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs = append(r.errs, err)
		return
	}
	r.list = append(r.list, a)
}

func (r *reports) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list), len(r.errs)
}

func (r *reports) last() []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list[len(r.list)-1]
}

func start(t *testing.T, api *fakeAPI) (*reports, func()) {
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	w := &Watcher{Server: u, Client: srv.Client(), Backoff: wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 1000, Cap: time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	r := &reports{}
	done := make(chan struct{})
	go func() { defer close(done); w.Discover(ctx, r.report) }()
	return r, func() { cancel(); <-done }
}

func TestWatcherReportsListingsAndChanges(t *testing.T) {
	api := &fakeAPI{list: sliceJSON(6443, nil, "192.0.2.11"), events: make(chan string)}
	r, stop := start(t, api)
	defer stop()
	require.Eventually(t, func() bool { n, _ := r.counts(); return n == 1 }, 5*time.Second, time.Millisecond)
	api.events <- `{"type":"BOOKMARK","object":{"kind":"EndpointSlice","metadata":{"resourceVersion":"8"}}}`
	api.events <- `{"type":"MODIFIED","object":` + sliceJSON(6443, nil, "192.0.2.11", "192.0.2.14") + `}`
	require.Eventually(t, func() bool { n, _ := r.counts(); return n == 2 }, 5*time.Second, time.Millisecond, "the watch reports the change")
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.11:6443"), netip.MustParseAddrPort("192.0.2.14:6443")}, r.last())
	api.mu.Lock()
	watchQ := api.queries[1]
	api.mu.Unlock()
	assert.Equal(t, "metadata.name=kubernetes", watchQ.Get("fieldSelector"), "by name, as RBAC's resourceNames requires")
	assert.Equal(t, "7", watchQ.Get("resourceVersion"), "from the list")
	_, nerr := r.counts()
	assert.Zero(t, nerr)

	api.events <- `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}`
	require.Eventually(t, func() bool { n, _ := r.counts(); return n == 3 }, 5*time.Second, time.Millisecond, "expired: listed again")
	_, nerr = r.counts()
	assert.Zero(t, nerr, "an expired watch is no failure")
}

func TestWatcherReportsFailuresAndRetries(t *testing.T) {
	api := &fakeAPI{failing: 2, list: sliceJSON(6443, nil, "192.0.2.11"), events: make(chan string)}
	r, stop := start(t, api)
	defer stop()
	require.Eventually(t, func() bool { n, _ := r.counts(); return n == 1 }, 5*time.Second, time.Millisecond)
	_, nerr := r.counts()
	assert.Equal(t, 2, nerr, "each failure reported, then the listing")
	r.mu.Lock()
	assert.ErrorContains(t, r.errs[0], `list EndpointSlice default/kubernetes: HTTP 403: endpointslices.discovery.k8s.io is forbidden`)
	r.mu.Unlock()
}
