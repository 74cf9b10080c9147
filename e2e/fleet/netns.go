package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Namespace is the fleet's network namespace: only its loopback, with Addr
// on it. Nothing in it can reach another address.
const Namespace = "vipctl-fleet"

const (
	envInside = "VIPCTL_FLEET_NETNS"
	lockFile  = "/run/lock/vipctl-fleet.lock"
)

// Inside tells whether this process is the copy EnterNamespace started.
func Inside() bool { return os.Getenv(envInside) == Namespace }

// EnterNamespace creates the fleet's namespace and runs this program again
// inside it with the same arguments, waits for it, removes the namespace
// and returns the copy's error. One fleet runs at a time (a lock file
// serialises them). Call it only when Inside is false.
func EnterNamespace(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("fleet lock: %w", err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("fleet lock %s: another fleet run is going on: %w", lockFile, err)
	}
	removeNamespace()
	defer removeNamespace()
	for _, c := range [][]string{
		{"netns", "add", Namespace},
		{"-n", Namespace, "link", "set", "lo", "up"},
		{"-n", Namespace, "addr", "add", Addr.Addr().String() + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", Namespace, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), envInside+"="+Namespace)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("the fleet run in namespace %s failed (%s)", Namespace, ee.ProcessState)
	}
	return err
}

// removeNamespace kills what runs in the fleet's namespace (a run that was
// itself killed) and deletes it.
func removeNamespace() {
	pids, _ := exec.Command("ip", "netns", "pids", Namespace).Output()
	for _, p := range strings.Fields(string(pids)) {
		var pid int
		if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = exec.Command("ip", "netns", "del", Namespace).Run()
}
