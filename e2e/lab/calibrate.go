package lab

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"time"
)

// CalibrationCPU runs a fixed workload shaped like the watchdog's probing —
// n HTTPS requests to a local TLS server, each on a new verified
// connection — and returns the CPU time (user+system) this process spent
// per request. Run in the VM and on the host, the ratio of the two is how
// much emulation inflates CPU figures measured in the VM.
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
