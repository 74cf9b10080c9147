package lab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// NginxAddr is where the lab's nginx stream proxy listens, like kubespray's
// localhost load balancer in front of the apiservers.
const NginxAddr = "127.0.0.1:6444"

// StartNginx runs Debian's nginx as a TCP (stream) proxy to every master
// with kubespray's settings (least_conn, proxy_connect_timeout 1s), and
// stops it when the test ends. It skips the test when the VM has no nginx
// (the host had none installed when the share was built).
func (l *Lab) StartNginx() {
	t := l.t
	t.Helper()
	dir := os.Getenv("VIPCTL_NGINX_DIR")
	if dir == "" {
		t.Skip("no nginx in the VM: install Debian's nginx-light and libnginx-mod-stream on the host (make bench does)")
	}
	// nginx looks its worker user up; the VM's initramfs has no user database.
	if _, err := os.Stat("/etc/passwd"); os.IsNotExist(err) {
		must(t, os.WriteFile("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644), "/etc/passwd")
		must(t, os.WriteFile("/etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644), "/etc/group")
	}
	prefix := filepath.Join(l.Dir, "nginx")
	must(t, os.MkdirAll(filepath.Join(prefix, "logs"), 0o755), "nginx prefix")
	var servers strings.Builder
	for _, m := range l.Masters {
		fmt.Fprintf(&servers, "    server %s;\n", m.Addr)
	}
	conf := fmt.Sprintf(`load_module %s/ngx_stream_module.so;
daemon off;
error_log stderr warn;
pid %s/nginx.pid;
worker_processes 2;
worker_rlimit_nofile 130048;
worker_shutdown_timeout 10s;
events {
  multi_accept on;
  use epoll;
  worker_connections 16384;
}
stream {
  upstream kube_apiserver {
    least_conn;
%s  }
  server {
    listen %s;
    proxy_pass kube_apiserver;
    proxy_timeout 10m;
    proxy_connect_timeout 1s;
  }
}
`, dir, prefix, servers.String(), NginxAddr)
	confFile := filepath.Join(prefix, "nginx.conf")
	must(t, os.WriteFile(confFile, []byte(conf), 0o644), "nginx.conf")
	lib := filepath.Join(dir, "lib")
	cmd := exec.Command(filepath.Join(lib, "ld-linux-x86-64.so.2"), "--library-path", lib,
		filepath.Join(dir, "nginx"), "-p", prefix, "-c", confFile, "-e", "stderr")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	must(t, cmd.Start(), "start nginx")
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	must(t, Poll(20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", NginxAddr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}), "nginx listening")
}
