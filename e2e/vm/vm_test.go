package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRebootKeepsTheDisk boots the VM twice on one disk: the first boot
// writes files and asks for a reboot, the second reads what was kept. A
// real reboot: another kernel (boot_id), / on the disk, /tmp and /run
// fresh, and IPVS not loaded until the node loads it.
func TestRebootKeepsTheDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the VM boots")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (prepare.sh installs qemu and the kernel package)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs) for the VM's disk")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var prep bytes.Buffer
	assets, err := Prepare(ctx, &prep)
	require.NoError(t, err, prep.String())
	disk := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, NewDisk(ctx, disk, 1<<30, ""))
	lockLab(ctx, t)

	share := t.TempDir()
	boot := func(script string) (Result, string) {
		require.NoError(t, os.WriteFile(filepath.Join(share, "run.sh"), []byte("#!/bin/sh\nset -e\n"+script), 0o755))
		var console bytes.Buffer
		r, err := Boot(ctx, Config{Assets: assets, Share: share, Console: &console, Memory: "512M", CPUs: 1, Disk: disk})
		t.Logf("console:\n%s", console.String())
		require.NoError(t, err)
		return r, console.String()
	}
	r, _ := boot(`cat /proc/sys/kernel/random/boot_id > /etc/lab-boot-1
mkdir -p /var/lib && echo kept > /var/lib/lab-kept
echo gone > /tmp/lab-gone
echo gone > /run/lab-gone
touch ` + RebootRequest + "\n")
	assert.Equal(t, Result{Code: 0, Reboot: true}, outcome(r), "the first boot asked for a reboot")

	r, console := boot(`echo "LAB-TEST root=$(awk '$2=="/"{print $3}' /proc/mounts)"
echo "LAB-TEST kept=$(cat /var/lib/lab-kept)"
echo "LAB-TEST boot1=$(cat /etc/lab-boot-1)"
echo "LAB-TEST boot2=$(cat /proc/sys/kernel/random/boot_id)"
echo "LAB-TEST tmp=$(ls /tmp/lab-gone /run/lab-gone ` + RebootRequest + ` 2>/dev/null | tr '\n' ' ')"
echo "LAB-TEST ipvs=$(test -e /proc/net/ip_vs && echo loaded)"
modprobe ip_vs
echo "LAB-TEST modprobe=$(test -e /proc/net/ip_vs && echo loaded)"
`)
	assert.Equal(t, Result{Code: 0}, outcome(r), "the second boot ended its run.sh with 0")
	got := map[string]string{}
	for _, l := range strings.Split(console, "\n") {
		if kv, ok := strings.CutPrefix(strings.TrimSpace(l), "LAB-TEST "); ok {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = strings.TrimSpace(v)
		}
	}
	assert.Equal(t, "ext4", got["root"], "/ on the disk")
	assert.Equal(t, "kept", got["kept"], "a file of /var/lib written in the first boot")
	assert.NotEmpty(t, got["boot1"], "/etc/lab-boot-1 written in the first boot")
	assert.NotEqual(t, got["boot1"], got["boot2"], "another kernel: another boot_id")
	assert.Empty(t, got["tmp"], "/tmp and /run start empty")
	assert.Empty(t, got["ipvs"], "IPVS not loaded at boot on a disk: the node loads it")
	assert.Equal(t, "loaded", got["modprobe"], "IPVS loadable on demand")
}

// lockLab takes the lab lock the VM labs serialise on (e2e/cluster's
// lockFile), released when t ends; it fails t when ctx ends first.
func lockLab(ctx context.Context, t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/run/lock/vipctl-lab.lock", os.O_CREATE|os.O_RDWR, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return
		}
		require.True(t, errors.Is(err, syscall.EWOULDBLOCK), "lab lock: %v", err)
		select {
		case <-ctx.Done():
			t.Fatalf("lab lock: another lab is running: %v", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// A disk made from a folder holds that folder's files, modes and links:
// the machine the host installs is the one the VM boots. debugfs (e2fsprogs,
// like mkfs.ext4) reads the image back without mounting it.
func TestNewDiskFromAFolder(t *testing.T) {
	for _, p := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s (e2fsprogs)", p)
		}
	}
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/kubernetes"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("worker1\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/kubernetes/secret"), []byte("s\n"), 0o600))
	require.NoError(t, os.Symlink("hostname", filepath.Join(root, "etc/name")))
	disk := filepath.Join(t.TempDir(), "disk.img")
	ctx := context.Background()
	require.NoError(t, NewDisk(ctx, disk, 64<<20, root))
	debugfs := func(req string) string {
		out, err := exec.Command("debugfs", "-R", req, disk).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	assert.Contains(t, debugfs("cat /etc/hostname"), "worker1\n")
	assert.Contains(t, debugfs("stat /etc/kubernetes/secret"), "Mode:  0600")
	assert.Contains(t, debugfs("stat /etc/name"), `Fast link dest: "hostname"`)

	// Without a folder: an empty file system; an existing image is not overwritten.
	empty := filepath.Join(t.TempDir(), "empty.img")
	require.NoError(t, NewDisk(ctx, empty, 64<<20, ""))
	out, _ := exec.Command("debugfs", "-R", "ls /", empty).CombinedOutput()
	assert.NotContains(t, string(out), "etc")
	assert.Error(t, NewDisk(ctx, disk, 64<<20, root), "an existing image")
}

// A boot whose kernel prints nothing of /init within the deadline is
// powered off and booted again, once, and reported; two such boots are an
// error. qemu here is a stand-in on PATH that hangs on the boots listed
// in $FAKE_QEMU_HANG (by count) and otherwise prints what /init prints.
func TestBootPowerCyclesAKernelHungAtBoot(t *testing.T) {
	bin, share := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(share, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	count := filepath.Join(t.TempDir(), "boots")
	fake := `#!/bin/sh
n=$(( $(cat "$FAKE_QEMU_COUNT" 2>/dev/null || echo 0) + 1 ))
echo $n > "$FAKE_QEMU_COUNT"
echo "SeaBIOS"
case " $FAKE_QEMU_HANG " in *" $n "*) exec sleep 600 ;; esac
echo "LAB: modules loaded at 3.1s"
echo "LAB EXIT 0"
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "qemu-system-x86_64"), []byte(fake), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("FAKE_QEMU_COUNT", count)
	boots := func() string { b, _ := os.ReadFile(count); return strings.TrimSpace(string(b)) }
	ctx := context.Background()
	cfg := Config{Share: share, BootDeadline: 300 * time.Millisecond}

	t.Setenv("FAKE_QEMU_HANG", "")
	r, err := Boot(ctx, cfg)
	require.NoError(t, err)
	assert.Equal(t, Result{Code: 0}, outcome(r), "a boot that reaches /init")
	assert.Equal(t, "1", boots())

	require.NoError(t, os.Remove(count))
	t.Setenv("FAKE_QEMU_HANG", "1")
	var console bytes.Buffer
	cfg.Console = &console
	r, err = Boot(ctx, cfg)
	require.NoError(t, err)
	assert.Equal(t, Result{Code: 0, PowerCycles: 1}, outcome(r), "hung once: booted again")
	assert.GreaterOrEqual(t, r.Wall, cfg.BootDeadline, "the hung boot's time counted")
	assert.Equal(t, "2", boots())
	assert.Contains(t, console.String(), "the kernel hung at boot; powering the VM off and booting it again")

	require.NoError(t, os.Remove(count))
	t.Setenv("FAKE_QEMU_HANG", "1 2")
	_, err = Boot(ctx, cfg)
	assert.ErrorIs(t, err, ErrBootHung, "hung twice")
	assert.Equal(t, "2", boots(), "booted twice, no more")
}

// outcome is r without its times.
func outcome(r Result) Result {
	r.Wall, r.CPU = 0, 0
	return r
}

func TestBootReportsQemusHostCPU(t *testing.T) {
	bin, share := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(share, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	// A stand-in qemu that computes for a while, as a vCPU thread does,
	// then sleeps, as an idle guest does.
	fake := `#!/bin/sh
echo "LAB: modules loaded at 3.1s"
i=0
while [ $i -lt 300000 ]; do i=$((i+1)); done
sleep 0.3
echo "LAB EXIT 0"
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "qemu-system-x86_64"), []byte(fake), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	r, err := Boot(context.Background(), Config{Share: share})
	require.NoError(t, err)
	assert.Equal(t, 0, r.Code)
	assert.Positive(t, r.CPU, "the computing is counted")
	assert.GreaterOrEqual(t, r.Wall, r.CPU+300*time.Millisecond, "one thread: its CPU and its sleep fit in the wall time")
}
