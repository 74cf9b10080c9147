package lab

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Calibrations are the fixed workloads run both in the VM and on the host:
// the ratio of their CPU costs is how much emulation inflates the CPU
// figures measured in the VM. Emulation slows different work differently
// (cryptography less than kernel entries and timer wake-ups), so there are
// two, and the estimate for hardware is a range.
var Calibrations = map[string]func(n int) (time.Duration, error){
	"handshake": CalibrationCPU,
	"poll":      CalibrationPollCPU,
}

// CalibrationCPU runs a workload shaped like the watchdog's probing of a
// fresh connection — n HTTPS requests to a local TLS server, each on a new
// verified connection — and returns the CPU time (user+system) this
// process spent per request.
func CalibrationCPU(n int) (time.Duration, error) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	srv.StartTLS()
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	// Warm up (first-use initialisation is not what we measure).
	for range 3 {
		if err := get(c, srv.URL); err != nil {
			return 0, err
		}
	}
	before, err := cpuTime()
	if err != nil {
		return 0, err
	}
	for range n {
		if err := get(c, srv.URL); err != nil {
			return 0, err
		}
	}
	after, err := cpuTime()
	if err != nil {
		return 0, err
	}
	return (after - before) / time.Duration(n), nil
}

// CalibrationPollCPU runs a workload shaped like the watchdog's steady
// state — per round, one HTTPS request on a kept-alive connection, one
// netlink request (the loopback link by name) and one timer wake-up — and
// returns the CPU time this process spent per round.
func CalibrationPollCPU(n int) (time.Duration, error) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	round := func() error {
		if err := get(c, srv.URL); err != nil {
			return err
		}
		if _, err := netlink.LinkByName("lo"); err != nil {
			return fmt.Errorf("calibration netlink request: %w", err)
		}
		time.Sleep(time.Millisecond) // a timer wake-up, as the watchdog's polls
		return nil
	}
	for range 3 {
		if err := round(); err != nil {
			return 0, err
		}
	}
	before, err := cpuTime()
	if err != nil {
		return 0, err
	}
	for range n {
		if err := round(); err != nil {
			return 0, err
		}
	}
	after, err := cpuTime()
	if err != nil {
		return 0, err
	}
	return (after - before) / time.Duration(n), nil
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("calibration request: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
