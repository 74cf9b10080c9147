package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

// The real implementations of the join's interfaces.

// OSFiles implements Files on the local file system.
type OSFiles struct{}

// ReadFile implements Files.
func (OSFiles) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// WriteFile implements Files with atomicfile: the kubelet's static pod
// source ignores the temporary file (its name starts with a dot), and once
// the file is in place a failed folder sync does not fail the write.
func (OSFiles) WriteFile(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

// MkdirAll implements Files.
func (OSFiles) MkdirAll(dir string, perm fs.FileMode) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// Remove implements Files.
func (OSFiles) Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// isNotEmpty reports whether removing a folder failed because it holds
// something.
func isNotEmpty(err error) bool {
	return errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST)
}

// ExecRunner implements Runner with os/exec.
type ExecRunner struct{}

// LookPath implements Runner.
func (ExecRunner) LookPath(name string) (string, error) { return exec.LookPath(name) }

// Run implements Runner. When ctx ends the command gets SIGTERM, and
// SIGKILL 10 s later. Its standard input is empty.
func (ExecRunner) Run(ctx context.Context, path string, args []string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd.Run()
}

// System implements Inspector on the running kernel.
type System struct{}

// IPVSAvailable implements Inspector.
func (System) IPVSAvailable() bool {
	_, err := os.Stat("/proc/net/ip_vs")
	return err == nil
}

// InterfacesWith implements Inspector.
func (System) InterfacesWith(ctx context.Context, addr netip.Addr) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fam := netlink.FAMILY_V4
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, fam)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var names []string
	for _, a := range addrs {
		x, ok := netip.AddrFromSlice(a.IP)
		if !ok || x.Unmap() != addr {
			continue
		}
		name := fmt.Sprintf("index %d", a.LinkIndex)
		if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		names = append(names, name)
	}
	return names, nil
}

// VirtualServers implements Inspector.
func (System) VirtualServers(ctx context.Context, addr netip.Addr) ([]netip.AddrPort, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := mobyipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("open IPVS: %w", err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	var out []netip.AddrPort
	for _, s := range svcs {
		a, ok := netip.AddrFromSlice(s.Address)
		if ok && a.Unmap() == addr {
			out = append(out, netip.AddrPortFrom(addr, s.Port))
		}
	}
	return out, nil
}

// Dial implements Inspector.
func (System) Dial(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	return c.Close()
}
