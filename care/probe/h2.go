package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// errNoH2 is what a session dial returns when the server does not speak
// HTTP/2: the prober then uses HTTP/1.1 for that master.
var errNoH2 = errors.New("the server did not negotiate HTTP/2")

// session is the one HTTP/2 connection to a master that its probes and its
// sentinel share (Config.HTTP2).
type session struct {
	cc   *http2.ClientConn
	conn *watchedConn
	born time.Time

	mu sync.Mutex
	// ready is when a GET on this connection last answered healthy (zero:
	// never, or the last GET did not), status its status, streak the
	// healthy GETs in a row.
	ready   time.Time
	status  int
	streak  int
	retired bool // replaced by the prober, not ended by the server
}

// pingsAfter is how many healthy GETs in a row a connection must have
// answered before probes on it may be PINGs: as many as the watchdog's
// default --rise, so that a master coming up is let in on GETs alone.
const pingsAfter = 2

// readySince returns the time and status of the last healthy GET, a zero
// time unless the last pingsAfter GETs were healthy.
func (s *session) readySince() (time.Time, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streak < pingsAfter {
		return time.Time{}, 0
	}
	return s.ready, s.status
}

// answered records a GET's answer.
func (s *session) answered(t time.Time, status int, healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !healthy {
		s.ready, s.status, s.streak = time.Time{}, 0, 0
		return
	}
	s.ready, s.status = t, status
	s.streak++
}

// retire closes a session the prober replaces; its holder moves on to the
// new one instead of reporting the end.
func (s *session) retire() {
	s.mu.Lock()
	s.retired = true
	s.mu.Unlock()
	_ = s.cc.Close()
}

func (s *session) isRetired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retired
}

// watchedConn records the first read error of a connection: the server
// closing or resetting it, or a local close. done is closed then.
type watchedConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
	err  error
}

func newWatchedConn(c net.Conn) *watchedConn { return &watchedConn{Conn: c, done: make(chan struct{})} }

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.end(err)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.end(net.ErrClosed)
	return c.Conn.Close()
}

func (c *watchedConn) end(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
	})
}

// ended returns the connection's end, nil while it lives.
func (c *watchedConn) ended() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// h2Enabled tells whether probes of target go over a shared HTTP/2
// session.
func (p *Prober) h2Enabled(target netip.AddrPort) bool {
	if !p.cfg.HTTP2 || p.cfg.Scheme != HTTPS {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.noH2[target]
}

// current returns target's live session, nil when there is none; expired
// tells that it is older than ReuseFor and a probe should replace it.
func (p *Prober) current(target netip.AddrPort) (s *session, expired bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s = p.sessions[target]
	if s == nil {
		return nil, false
	}
	if s.conn.ended() != nil {
		delete(p.sessions, target)
		return nil, false
	}
	// A connection the server sent GOAWAY on takes no new request: it is
	// replaced like an old one, not failed.
	return s, !s.cc.CanTakeNewRequest() || (p.cfg.ReuseFor > 0 && p.now().Sub(s.born) >= p.cfg.ReuseFor)
}

// installed returns a channel closed when target's next session is
// installed.
func (p *Prober) installed(target netip.AddrPort) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.next[target]
	if ch == nil {
		ch = make(chan struct{})
		p.next[target] = ch
	}
	return ch
}

// drop closes s, ended by a failure, and forgets it.
func (p *Prober) drop(target netip.AddrPort, s *session) {
	p.mu.Lock()
	if p.sessions[target] == s {
		delete(p.sessions, target)
	}
	p.mu.Unlock()
	_ = s.cc.Close()
}

// dialSession opens an HTTP/2 connection to target and installs it as
// target's session in place of replacing (nil: none). If another probe
// installed one meanwhile, that one is used and this one closed.
func (p *Prober) dialSession(ctx context.Context, target netip.AddrPort, replacing *session) (*session, error) {
	raw, err := p.connect(ctx, target, true, "h2", "http/1.1")
	if err != nil {
		return nil, err
	}
	if tc, ok := raw.(*tls.Conn); !ok || tc.ConnectionState().NegotiatedProtocol != "h2" {
		_ = raw.Close()
		p.mu.Lock()
		p.noH2[target] = true
		p.mu.Unlock()
		return nil, errNoH2
	}
	_ = raw.SetDeadline(time.Time{})
	wc := newWatchedConn(raw)
	cc, err := p.h2.NewClientConn(wc) //nolint:staticcheck // net/http's ClientConn cannot send a PING
	if err != nil {
		_ = wc.Close()
		return nil, err
	}
	s := &session{cc: cc, conn: wc, born: p.now()}
	p.mu.Lock()
	if old := p.sessions[target]; old != nil && old != replacing && old.conn.ended() == nil {
		p.mu.Unlock()
		_ = cc.Close()
		return old, nil
	}
	p.sessions[target] = s
	if ch := p.next[target]; ch != nil {
		close(ch)
		delete(p.next, target)
	}
	p.mu.Unlock()
	return s, nil
}

// probeH2 is Probe on target's shared HTTP/2 session: a PING while the
// last health GET on that connection is younger than ReadyEvery and it and
// the one before were healthy, a GET otherwise. A session the server closed while idle is
// replaced within the probe; a dead master fails at once (its connection
// is reset and the new one refused).
func (p *Prober) probeH2(ctx context.Context, target netip.AddrPort) Result {
	s, expired := p.current(target)
	fresh := false
	if s == nil || expired {
		ns, err := p.dialSession(ctx, target, s)
		if err != nil {
			if errors.Is(err, errNoH2) {
				return p.probe(ctx, target)
			}
			return Result{Err: err}
		}
		if s != nil && ns != s {
			// Installed before the old one closes, so that its holder
			// finds the new one.
			s.retire()
		}
		s, fresh = ns, true
	}
	if ready, status := s.readySince(); !fresh && !ready.IsZero() && p.now().Sub(ready) < p.cfg.ReadyEvery {
		if err := p.ping(ctx, s); err != nil {
			p.drop(target, s)
			return Result{Err: err}
		}
		return Result{OK: true, Status: status, Reason: fmt.Sprintf("HTTP/2 PING (HTTP %d within %s)", status, p.cfg.ReadyEvery)}
	}
	resp, body, err := p.get(ctx, s, target)
	if err != nil {
		p.drop(target, s)
		return Result{Err: err}
	}
	s.answered(p.now(), resp.StatusCode, healthyStatus(p.cfg.Statuses, resp.StatusCode))
	return p.judge(target, nil, resp, body)
}

// ping sends an HTTP/2 PING on s and waits for its acknowledgement, which
// the server's connection handling sends without running a handler. An
// error is the connection's own end when it ended (a reset, the server
// closing it), so that it is classified as such.
func (p *Prober) ping(ctx context.Context, s *session) error {
	err := s.cc.Ping(ctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cerr := s.conn.ended(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		return cerr
	}
	return err
}

// get sends one GET of the health path on s and reads the response and
// up to 4 KiB of its body (the rest, up to 1 MiB, is discarded).
func (p *Prober) get(ctx context.Context, s *session, target netip.AddrPort) (*http.Response, []byte, error) {
	u := "https://" + target.String() + p.cfg.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("User-Agent", p.cfg.UserAgent)
	req.Header.Set("Accept", "*/*")
	resp, err := s.cc.RoundTrip(req)
	if err != nil {
		if ctx.Err() == nil {
			if cerr := s.conn.ended(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = cerr
			}
		}
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return nil, nil, err
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}

// holdH2 is Hold on target's shared HTTP/2 session: it uses the session
// the probes opened (or opens one, checked with a PING) and waits until
// the server closes or resets it. A session the prober replaces (ReuseFor,
// GOAWAY) or drops after a failed probe is followed to the next one
// without returning: the probe already reported the failure, and the
// sentinel's own connection would not have ended (a cut link leaves an
// idle connection silent).
func (p *Prober) holdH2(ctx context.Context, target netip.AddrPort, idle func()) (established bool, err error) {
	for {
		s, _ := p.current(target)
		if s == nil {
			setup, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
			s, err = p.dialSession(setup, target, nil)
			if err == nil {
				if err = p.ping(setup, s); err != nil {
					p.drop(target, s)
				}
			}
			cancel()
			if errors.Is(err, errNoH2) {
				if established {
					return true, errors.New("the server no longer speaks HTTP/2")
				}
				return p.hold(ctx, target, idle)
			}
			if err != nil {
				return established, err
			}
		}
		if !established {
			established = true
			if idle != nil {
				idle()
			}
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-s.conn.done:
		}
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		if s.isRetired() {
			continue
		}
		cerr := s.conn.err
		switch {
		case errors.Is(cerr, io.EOF):
			return true, errors.New("connection closed by the server")
		case errors.Is(cerr, net.ErrClosed):
			// Dropped after a failed probe (or the prober closed): wait
			// for the probes' next connection.
			select {
			case <-ctx.Done():
				return true, ctx.Err()
			case <-p.installed(target):
			}
			continue
		}
		return true, cerr
	}
}
