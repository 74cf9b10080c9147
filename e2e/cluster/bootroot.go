package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vipctl/vipctl/e2e/k8simage"
	"github.com/vipctl/vipctl/e2e/vm"
)

// BootDebs are the Debian packages of the VM node's init system, on the
// disk the host installs (writeMachine): systemd, which boots the
// machine, loads /etc/modules-load.d (systemd-modules-load) and runs
// containerd's and the kubelet's units; kmod, the modprobe and depmod a
// Debian node has; dash, Debian's /bin/sh (busybox's sh runs its own
// applets before PATH's programs: its modprobe, not kmod's).
var BootDebs = []string{"systemd", "libsystemd-shared", "kmod", "libkmod2", "dash"}

// bootSkip are the folders of BootDebs a machine without a user does not
// need: documentation, translations, shell completions.
var bootSkip = []string{"/usr/share/doc", "/usr/share/man", "/usr/share/locale", "/usr/share/bash-completion",
	"/usr/share/zsh", "/usr/share/lintian", "/usr/share/bug", "/usr/share/polkit-1", "/usr/share/dbus-1"}

// KubeletUnit and KubeadmDropIn are kubeadm's systemd unit for the kubelet
// and its drop-in, as the Kubernetes packages ship them
// (kubernetes/release, packages/deb), with the kubelet where a manual
// install puts it (/usr/local/bin, as kubeadm's install guide does with
// sed). KubeletArgs reads the same arguments for the harness's supervisor.
const (
	KubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`
	KubeadmDropIn = `# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`
)

// KubeletArgs are the kubelet's arguments as systemd runs it with
// kubeadm's drop-in (KubeadmDropIn): its last ExecStart, each $VARIABLE
// replaced by the drop-in's Environment= value or, for
// KUBELET_KUBEADM_ARGS, by the one in flagsEnv, the content of
// /var/lib/kubelet/kubeadm-flags.env (KUBELET_EXTRA_ARGS: none). The
// harness's supervisor starts the kubelet with them where there is no
// systemd.
func KubeletArgs(flagsEnv []byte) []string {
	env := map[string]string{}
	var exec string
	read := func(text string) {
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "Environment="); ok {
				line = strings.Trim(v, `"`)
			} else if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec = v
				continue
			}
			if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "KUBELET_") {
				env[k] = strings.Trim(v, `"`)
			}
		}
	}
	read(KubeadmDropIn)
	read(string(flagsEnv))
	f := strings.Fields(exec)
	var args []string
	for _, a := range f[min(1, len(f)):] {
		if v, ok := strings.CutPrefix(a, "$"); ok {
			args = append(args, strings.Fields(env[v])...)
			continue
		}
		args = append(args, a)
	}
	return args
}

// bootFiles are the files of the node's init system besides BootDebs':
// kubeadm's kubelet unit, Debian's containerd unit (from containerdRoot),
// the network (what the distribution's network configuration does: the
// address on the lab bridge, the default route, IP forwarding by
// systemd-sysctl), /etc/modules as kmod's postinst writes it, the lab's
// own unit (/init lab: the share's run.sh, the test, then power off or
// reboot), dash as /bin/sh, the units enabled as their [Install] says, the ones this
// console-less machine cannot run masked (logind wants D-Bus; no getty on
// the lab's console), and a 20 s stop timeout.
func bootFiles(spec *WorkerSpec, containerdRoot string) map[string]string {
	sys := "/etc/systemd/system/"
	return map[string]string{
		sys + "kubelet.service":                   KubeletUnit,
		sys + "kubelet.service.d/10-kubeadm.conf": KubeadmDropIn,
		sys + "lab-network.service": fmt.Sprintf(`[Unit]
Description=The lab bridge: eth0's address and the default route
DefaultDependencies=no
After=systemd-sysctl.service
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/ip addr add %s dev eth0
ExecStart=/bin/ip link set eth0 up
ExecStart=/bin/ip route add default via %s

[Install]
WantedBy=network-online.target
`, spec.NodeIP, spec.Gateway),
		sys + "vipctl-lab.service": `[Unit]
Description=vipctl lab: the share's run.sh, then power off (or reboot when asked)
# Early, but after the boot's clean-up of /tmp, where run.sh copies the test.
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service

[Service]
Type=simple
ExecStart=/init lab
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
`,
		// What kmod's postinst writes: systemd's
		// /etc/modules-load.d/modules.conf links to it.
		"/etc/modules":                                          "# /etc/modules: kernel modules to load at boot time.\n#\n# This file contains the names of kernel modules that should be loaded\n# at boot time, one per line. Lines beginning with \"#\" are ignored.\n",
		"/etc/sysctl.d/99-lab.conf":                             "net.ipv4.ip_forward = 1\n",
		"/etc/systemd/system.conf.d/lab.conf":                   "[Manager]\nDefaultTimeoutStopSec=20s\n",
		"/etc/systemd/journald.conf.d/lab.conf":                 "[Journal]\nStorage=volatile\nForwardToConsole=no\n",
		"/bin/sh":                                               "->dash",
		sys + "default.target":                                  "->/lib/systemd/system/multi-user.target",
		sys + "multi-user.target.wants/containerd.service":      "->/lib/systemd/system/containerd.service",
		sys + "multi-user.target.wants/kubelet.service":         "->" + sys + "kubelet.service",
		sys + "multi-user.target.wants/vipctl-lab.service":      "->" + sys + "vipctl-lab.service",
		sys + "network-online.target.wants/lab-network.service": "->" + sys + "lab-network.service",
		sys + "systemd-logind.service":                          "->/dev/null",
		sys + "getty.target":                                    "->/dev/null",
		"/lib/systemd/system/containerd.service":                "<" + filepath.Join(containerdRoot, "lib/systemd/system/containerd.service"),
	}
}

// bootRootFiles are the files of the node's init system: BootDebs'
// files (without bootSkip) and the libraries their programs link, and
// bootFiles; gen are the generated ones, by path. A string of bootFiles
// starting with "->" is a symbolic link, with "<" a copy of that host file.
func bootRootFiles(ctx context.Context, cache string, spec *WorkerSpec, containerdRoot string, log io.Writer) ([]k8simage.File, map[string]string, error) {
	debRoot, err := FetchDebs(ctx, cache, BootDebs, log)
	if err != nil {
		return nil, nil, err
	}
	var files []k8simage.File
	err = filepath.WalkDir(debRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := "/" + strings.TrimPrefix(strings.TrimPrefix(p, debRoot), "/")
		for _, s := range bootSkip {
			if dst == s || strings.HasPrefix(dst, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, k8simage.File{Dst: dst, Link: l})
		case d.Type().IsRegular():
			files = append(files, k8simage.File{Dst: dst, Src: p})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("the init system's packages: %w", err)
	}
	if files, err = k8simage.WithLibraries(files, []string{debRoot, "/"}); err != nil {
		return nil, nil, fmt.Errorf("the init system's libraries: %w", err)
	}
	gen := map[string]string{}
	for dst, c := range bootFiles(spec, containerdRoot) {
		switch {
		case strings.HasPrefix(c, "->"):
			files = append(files, k8simage.File{Dst: dst, Link: c[2:]})
		case strings.HasPrefix(c, "<"):
			files = append(files, k8simage.File{Dst: dst, Src: c[1:]})
		default:
			gen[dst] = c
		}
	}
	return files, gen, nil
}

// writeRoot lays files out under root, as the node's / ; a file already
// there is replaced (the later of two files with one path wins).
func writeRoot(root string, files []k8simage.File) error {
	for _, f := range files {
		dst := filepath.Join(root, f.Dst)
		if err := replaceable(dst); err != nil {
			return err
		}
		if f.Link != "" {
			if err := os.Symlink(f.Link, dst); err != nil {
				return err
			}
			continue
		}
		if err := vm.LinkOrCopy(f.Src, dst); err != nil {
			return err
		}
	}
	return nil
}

// writeContents writes each content of files (by path) under root, mode
// 0644, replacing what is there.
func writeContents(root string, files map[string]string) error {
	for dst, c := range files {
		p := filepath.Join(root, dst)
		if err := replaceable(p); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// replaceable makes p's folder and removes a file (or link) at p, so that
// writing p creates a new file: a hard link into the cache is never written
// through.
func replaceable(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", p, err)
	}
	return nil
}
