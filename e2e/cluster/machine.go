package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vipctl/vipctl/e2e/k8simage"
)

// MachineFiles are the files that make a VM node a machine of its own,
// by path: its name (/etc/hostname, and /etc/hosts with localhost), root
// in /etc/passwd and /etc/group (the kubelet reads the users and groups for
// its user-namespace mappings), a machine ID of its own, an empty
// resolv.conf (no DNS: nothing outside the lab) and an os-release naming
// InstalledOS.
func MachineFiles(spec WorkerSpec) map[string]string {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return map[string]string{
		"/etc/hostname":    spec.Name + "\n",
		"/etc/hosts":       "127.0.0.1 localhost\n" + strings.Split(spec.NodeIP, "/")[0] + " " + spec.Name + "\n",
		"/etc/passwd":      "root:x:0:0:root:/root:/bin/sh\n",
		"/etc/group":       "root:x:0:\n",
		"/etc/machine-id":  hex.EncodeToString(id) + "\n",
		"/etc/resolv.conf": "",
		"/etc/os-release":  fmt.Sprintf("PRETTY_NAME=%q\nID=vipctl-lab\n", InstalledOS),
	}
}

// InstalledOS is the os-release name of a VM node (writeMachine).
const InstalledOS = "vipctl lab node (busybox, Debian 12's systemd)"

// writeMachine lays out in root, which becomes the VM node's disk
// (vm.NewDisk), the node installed as a machine image is built: the lab's
// base system (the initramfs unpacked: busybox, /init, the modules it
// loads); files, the node's programs with their libraries; its init system
// (bootRootFiles: systemd, kmod, kubeadm's kubelet unit, Debian's
// containerd unit, the network, the lab's unit); the modules of n where a
// kernel package puts them, /lib/modules/<version>/extra, indexed by
// depmod; the kernel's config in /boot (kubeadm's SystemVerification
// reads it); and the machine's own files (MachineFiles). systemd boots it
// from the first boot on.
func writeMachine(ctx context.Context, root string, n vmNode, spec *WorkerSpec, files []k8simage.File, containerdRoot string, log io.Writer) error {
	if err := os.Chmod(root, 0o755); err != nil { // it becomes /, which every user must traverse
		return err
	}
	unpack := exec.CommandContext(ctx, "sh", "-c", `gzip -dc "$1" | cpio -idm --quiet`, "sh", n.Assets.Initrd)
	unpack.Dir = root
	if out, err := unpack.CombinedOutput(); err != nil {
		return fmt.Errorf("unpack the initramfs %s: %w: %s", n.Assets.Initrd, err, out)
	}
	boot, gen, err := bootRootFiles(ctx, n.Cache, spec, containerdRoot, log)
	if err != nil {
		return err
	}
	kroot, kver := filepath.Dir(filepath.Dir(n.Assets.Kernel)), n.Assets.KVer
	kconfig := k8simage.File{Dst: "/boot/config-" + kver, Src: filepath.Join(kroot, "boot", "config-"+kver)}
	if err := writeRoot(root, append(append(files, boot...), kconfig)); err != nil {
		return err
	}
	for p, c := range MachineFiles(*spec) {
		gen[p] = c
	}
	if err := writeContents(root, gen); err != nil {
		return err
	}
	if _, err := copyModules(ctx, kroot, kver, filepath.Join(root, "lib", "modules", kver, "extra"), n.Modules); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "depmod", "-b", root, kver).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b %s %s: %w: %s", root, kver, err, out)
	}
	return nil
}
