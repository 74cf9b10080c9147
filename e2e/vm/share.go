package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// BuildShare fills dir with what the VM runs: the static vipctl binary, the
// static e2e/vmtests test binary and a run.sh that starts it with the given
// extra test flags and environment. root is the module root.
func BuildShare(ctx context.Context, root, dir string, testArgs []string, env map[string]string) error {
	if err := buildStatic(ctx, root, filepath.Join(dir, "vipctl"), "./cmd/vipctl", false); err != nil {
		return err
	}
	// The watchdog's image carries the watchdog build; the lab runs `vipctl
	// care` from it, as the static pod does.
	if err := buildStatic(ctx, root, filepath.Join(dir, "vipctl-watchdog"), "./cmd/vipctl", false, "-tags", "watchdog"); err != nil {
		return err
	}
	if err := buildStatic(ctx, root, filepath.Join(dir, "vmtests.test"), "./e2e/vmtests", true); err != nil {
		return err
	}
	if err := addNginx(dir); err != nil {
		return err
	}
	return WriteRunScript(dir, testArgs, env)
}

// WriteRunScript writes the share's run.sh: it copies the binaries to the
// VM's /tmp and runs the test binary with testArgs and env (BuildShare).
// A caller that reboots the VM (Boot) may write it again between boots to
// run other scenarios on the same share.
func WriteRunScript(dir string, testArgs []string, env map[string]string) error {
	var b strings.Builder
	// Executing straight from 9p is slow under TCG (every page fault is a
	// round trip: ~3 s per vipctl run); a copy in tmpfs starts in ~0.15 s.
	b.WriteString("#!/bin/sh\nmkdir -p /tmp/bin\nfor f in vipctl vipctl-watchdog vmtests.test; do dd if=/mnt/share/$f of=/tmp/bin/$f bs=4M 2>/dev/null; chmod +x /tmp/bin/$f; done\n")
	b.WriteString("[ -d /mnt/share/nginx ] && cp -r /mnt/share/nginx /tmp/nginx && export VIPCTL_NGINX_DIR=/tmp/nginx\n")
	b.WriteString("export VIPCTL_E2E_VM=1 VIPCTL_BIN=/tmp/bin/vipctl VIPCTL_CARE_BIN=/tmp/bin/vipctl-watchdog PATH=/tmp/bin:$PATH HOME=/tmp")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, shellQuote(env[k]))
	}
	b.WriteString("\ncd /tmp\n/tmp/bin/vmtests.test -test.v -test.timeout=30m")
	for _, a := range testArgs {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString(" 2>&1\n")
	return os.WriteFile(filepath.Join(dir, "run.sh"), []byte(b.String()), 0o755)
}

// buildStatic builds pkg as a static linux/amd64 binary (its test binary
// when test is set) into out, with extra go build flags.
func buildStatic(ctx context.Context, root, out, pkg string, test bool, extra ...string) error {
	args := append(append([]string{"build", "-trimpath"}, extra...), "-o", out, pkg)
	if test {
		args = append(append([]string{"test", "-c", "-trimpath"}, extra...), "-o", out, pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ModuleRoot walks up from dir to the directory holding go.mod.
func ModuleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// Debian's nginx with its stream module, for the data-path benchmark that
// compares IPVS with the local nginx proxy kubespray uses.
const (
	nginxBinary = "/usr/sbin/nginx"
	nginxStream = "/usr/lib/nginx/modules/ngx_stream_module.so"
)

// addNginx copies nginx, its stream module and every shared library they
// load (ldd) into dir/nginx, when nginx is installed on the host; the VM
// has no libc of its own, so they run through the copied dynamic loader.
func addNginx(dir string) error {
	if _, err := os.Stat(nginxBinary); err != nil {
		return nil
	}
	if _, err := os.Stat(nginxStream); err != nil {
		return nil
	}
	out := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(out, "lib"), 0o755); err != nil {
		return err
	}
	libs := map[string]bool{}
	for _, f := range []string{nginxBinary, nginxStream} {
		b, err := exec.Command("ldd", f).Output()
		if err != nil {
			return fmt.Errorf("ldd %s: %w", f, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, field := range strings.Fields(line) {
				if strings.HasPrefix(field, "/") {
					libs[field] = true
				}
			}
		}
	}
	copies := map[string]string{nginxBinary: filepath.Join(out, "nginx"), nginxStream: filepath.Join(out, "ngx_stream_module.so")}
	for l := range libs {
		copies[l] = filepath.Join(out, "lib", filepath.Base(l))
	}
	for src, dst := range copies {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return err
		}
	}
	return nil
}
