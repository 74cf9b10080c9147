// Package vm boots the vipctl VM lab: Debian's kernel (which has IPVS) in
// qemu with no network device to the outside, a busybox initramfs, and a
// read-only 9p share from the host holding the binaries under test and the
// run.sh that /init executes. The serial console is the only channel back.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Assets are the kernel and initramfs prepare.sh produced.
type Assets struct {
	Kernel string // uncompressed vmlinux (PVH boot)
	Initrd string
	KVer   string
}

// Prepare runs prepare.sh (packages, kernel download, initramfs; cached) and
// returns the assets. log receives the script's progress lines.
func Prepare(ctx context.Context, log io.Writer) (Assets, error) {
	script := filepath.Join(sourceDir(), "prepare.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = log
	out, err := cmd.Output()
	if err != nil {
		return Assets{}, fmt.Errorf("%s: %w", script, err)
	}
	var a Assets
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "KERNEL":
			a.Kernel = v
		case "INITRD":
			a.Initrd = v
		case "KVER":
			a.KVer = v
		}
	}
	if a.Kernel == "" || a.Initrd == "" {
		return a, fmt.Errorf("%s printed no KERNEL/INITRD: %q", script, out)
	}
	return a, nil
}

// sourceDir is this package's directory, where prepare.sh and init.sh live.
func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Config is one boot.
type Config struct {
	Assets Assets
	// Share is the host directory exported read-only at /mnt/share; it
	// must hold run.sh.
	Share string
	// Memory and CPUs of the VM; defaults 1G and 2.
	Memory string
	CPUs   int
	// Console receives every line the VM prints.
	Console io.Writer
	// Tap, when set, gives the VM one virtio NIC (eth0 inside) on this
	// existing tap device, and NetNS names the network namespace that holds
	// it: qemu runs there (ip netns exec). The lab keeps that namespace
	// isolated, so the VM still has no path to the outside. Both empty
	// (the default): no network device at all.
	NetNS string
	Tap   string
	// Disk, when set, is a raw ext4 image (NewDisk) given to the VM as a
	// virtio disk that becomes its root: /init fills an empty one from the
	// initramfs on its first boot, boots a filled one (NewDisk from a
	// folder) as it is, and keeps everything but /tmp, /run, /proc, /sys
	// and /dev from one boot to the next (init.sh). Empty (the default):
	// the VM runs from its initramfs and keeps nothing.
	Disk string
	// BootDeadline bounds the time from qemu's start to /init's first
	// line; 0 means DefaultBootDeadline (see Boot).
	BootDeadline time.Duration
}

// DefaultBootDeadline is the time a boot may take to reach /init's first
// line ("LAB: ..."): 3-10 s normally, under TCG on a loaded host well under
// a minute.
const DefaultBootDeadline = 2 * time.Minute

// ErrBootHung means the VM's kernel printed no line of /init within the
// boot deadline, twice (Boot).
var ErrBootHung = errors.New("the VM's kernel hung before /init's first line")

// MAC is the address of the VM's NIC when Config.Tap is set.
const MAC = "52:54:00:76:69:70"

// ErrNoExit means the VM ended without /init reporting run.sh's exit code.
var ErrNoExit = errors.New("VM ended without a LAB EXIT line")

// RebootRequest is the file a program in the VM creates to have the VM
// rebooted once run.sh has ended with 0 (as `systemctl reboot` asks
// systemd): /init then prints RebootLine and restarts the kernel, and qemu
// (run with -no-reboot) exits. Only a VM with a Config.Disk keeps anything
// across it.
const RebootRequest = "/run/lab-reboot"

// RebootLine is the console line by which /init reports a reboot asked
// for with RebootRequest.
const RebootLine = "LAB REBOOT"

// Run boots the VM, streams its console to cfg.Console and returns run.sh's
// exit code as /init reported it ("LAB EXIT n"). By default the VM has no
// network device (-nic none): the lab's networks live in namespaces inside
// it; see Config.Tap for the one exception. A VM that asks for a reboot
// (RebootRequest) is an error here: see Boot.
func Run(ctx context.Context, cfg Config) (int, error) {
	r, err := Boot(ctx, cfg)
	if err == nil && r.Reboot {
		return -1, errors.New("the VM asked for a reboot (use vm.Boot)")
	}
	return r.Code, err
}

// Result is how one boot ended: run.sh's exit code as /init reported it,
// or Reboot when run.sh ended with 0 having asked for a reboot
// (RebootRequest; Code is then 0).
type Result struct {
	Code   int
	Reboot bool
	// PowerCycles counts the boots whose kernel hung before /init and
	// that Boot powered off and booted again (0 or 1).
	PowerCycles int
	// Wall is how long qemu ran, and CPU the host CPU time it used (user
	// and system, its threads together: under TCG each vCPU is a host
	// thread), over every qemu Boot started. CPU/Wall above 1 means the VM
	// took more than one of the host's cores.
	Wall, CPU time.Duration
}

// Boot boots the VM once, as Run does, and reports how it ended: with run.sh's
// exit code, or with a reboot asked for. The caller reboots the VM by
// calling Boot again with the same Disk (and Tap): a new kernel, the
// disk's files.
//
// A kernel that has printed no line of /init within the boot deadline
// (Config.BootDeadline) hung in its own start-up: under TCG on this
// two-core machine it happened to 2 boots in ~40, both vCPUs busy, no
// lockup report, nothing printed for minutes. Boot then powers the VM off
// and boots it again, once, as an operator power-cycles a stuck machine,
// and says so on the console and in Result.PowerCycles. /init's first
// line comes before it mounts a disk, so the disk was never in use.
func Boot(ctx context.Context, cfg Config) (Result, error) {
	r, err := bootOnce(ctx, cfg)
	if !errors.Is(err, ErrBootHung) {
		return r, err
	}
	if cfg.Console != nil {
		fmt.Fprintf(cfg.Console, "LAB HARNESS: no line from /init %s after qemu's start: the kernel hung at boot; powering the VM off and booting it again\n", bootDeadline(cfg))
	}
	first := r
	r, err = bootOnce(ctx, cfg)
	r.PowerCycles = 1
	r.Wall += first.Wall
	r.CPU += first.CPU
	return r, err
}

func bootDeadline(cfg Config) time.Duration {
	if cfg.BootDeadline > 0 {
		return cfg.BootDeadline
	}
	return DefaultBootDeadline
}

// bootOnce is one boot: qemu started, its console scanned until it exits;
// ErrBootHung (qemu killed) when /init printed nothing within the deadline.
func bootOnce(ctx context.Context, cfg Config) (Result, error) {
	res := Result{Code: -1}
	if _, err := os.Stat(filepath.Join(cfg.Share, "run.sh")); err != nil {
		return res, fmt.Errorf("share %s: %w", cfg.Share, err)
	}
	mem, cpus := cfg.Memory, cfg.CPUs
	if mem == "" {
		mem = "1G"
	}
	if cpus == 0 {
		cpus = 2
	}
	cmdline := "console=ttyS0 panic=-1 loglevel=5 softlockup_panic=1 softlockup_all_cpu_backtrace=1 clocksource=tsc tsc=reliable"
	if cfg.Disk != "" {
		cmdline += " vipctl.disk=/dev/vda" // the only virtio disk
	}

	args := []string{
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-m", mem, "-smp", fmt.Sprint(cpus),
		"-accel", accel(), "-cpu", "max",
		"-kernel", cfg.Assets.Kernel, "-initrd", cfg.Assets.Initrd,
		// The kernel's command line: loglevel=5: warnings, and so the stacks of a lockup report, reach
		// the console. softlockup_panic=1 with panic=-1 and -no-reboot: a
		// kernel stuck for 20 s ends the VM at once with its report
		// (KernelLockup) instead of hanging until the harness's timeout.
		"-append", cmdline,
		"-virtfs", "local,path=" + cfg.Share + ",mount_tag=share,security_model=none,readonly=on",
	}
	if (cfg.Tap == "") != (cfg.NetNS == "") {
		return res, fmt.Errorf("VM config: Tap %q and NetNS %q: set both or neither", cfg.Tap, cfg.NetNS)
	}
	if cfg.Disk != "" {
		if _, err := os.Stat(cfg.Disk); err != nil {
			return res, fmt.Errorf("VM config: Disk: %w", err)
		}
		// cache=unsafe: the guest's flushes are not passed to the host's
		// disk. The image lives for one test; what the guest wrote is in
		// it once qemu has exited, which is all a reboot needs.
		args = append(args, "-drive", "file="+cfg.Disk+",format=raw,if=virtio,cache=unsafe")
	}
	if cfg.Tap == "" {
		args = append(args, "-nic", "none")
	} else {
		// romfile= : no PXE option ROM (it is not needed for -kernel and
		// ipxe-qemu may not be installed).
		args = append(args, "-netdev", "tap,id=lab,ifname="+cfg.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=lab,romfile=,mac="+MAC)
	}
	name := "qemu-system-x86_64"
	if cfg.NetNS != "" {
		args = append([]string{"netns", "exec", cfg.NetNS, name}, args...)
		name = "ip" // ip netns exec execs qemu: same process
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start qemu: %w", err)
	}
	code, reboot := -1, false
	scanDone, initLine := make(chan struct{}), make(chan struct{})
	hung := make(chan bool, 1)
	go func() {
		t := time.NewTimer(bootDeadline(cfg))
		defer t.Stop()
		select {
		case <-initLine:
		case <-scanDone:
		case <-t.C:
			hung <- true
			_ = cmd.Process.Kill()
		}
	}()
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if !seen && strings.HasPrefix(line, "LAB") {
				seen = true
				close(initLine)
			}
			if rest, ok := strings.CutPrefix(line, "LAB EXIT "); ok {
				fmt.Sscan(rest, &code)
			}
			if line == RebootLine {
				reboot = true
			}
			if cfg.Console != nil {
				fmt.Fprintln(cfg.Console, line)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	werr := cmd.Wait()
	res.Wall = time.Since(started)
	if st := cmd.ProcessState; st != nil {
		res.CPU = st.UserTime() + st.SystemTime()
	}
	pw.Close()
	<-scanDone
	res.Code = code
	if reboot && code < 0 {
		res.Code, res.Reboot = 0, true
	}
	select {
	case <-hung:
		return res, ErrBootHung
	default:
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("VM: %w", ctx.Err())
	}
	if werr != nil {
		return res, fmt.Errorf("qemu: %w", werr)
	}
	if res.Code < 0 {
		return res, ErrNoExit
	}
	return res, nil
}

// NewDisk creates path, a sparse raw image of size bytes with an ext4 file
// system, for Config.Disk: empty, or, when root is set, holding that
// folder's files with their owners and modes (an installed machine: /init
// finds it filled and boots it as it is). It needs mkfs.ext4 (e2fsprogs
// 1.43 or later for root); no mount, no loop device.
func NewDisk(ctx context.Context, path string, size int64, root string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("VM disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("VM disk %s: %w", path, err)
	}
	// The inode tables and the journal written now, on the host, rather
	// than by the guest's ext4lazyinit thread under emulation.
	args := []string{"-q", "-F", "-L", "vipctl-lab", "-E", "lazy_itable_init=0,lazy_journal_init=0"}
	if root != "" {
		args = append(args, "-d", root)
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", append(args, path)...).CombinedOutput()
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// accel picks KVM only where it can run a stock kernel. Sandboxes often
// expose a /dev/kvm backed by kvm_pvm (no VMX/SVM), which cannot: use TCG.
func accel() string {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		if _, err := os.Stat("/sys/module/kvm_pvm"); err != nil {
			if b, err := os.ReadFile("/proc/cpuinfo"); err == nil && (bytes.Contains(b, []byte(" vmx")) || bytes.Contains(b, []byte(" svm"))) {
				return "kvm"
			}
		}
	}
	return "tcg"
}

// lockupLines are what the kernel prints when it hangs: a CPU stuck in the
// kernel, or RCU unable to make progress; the panic that
// softlockup_panic=1 turns the first into.
var lockupLines = []string{"BUG: soft lockup", "rcu_preempt self-detected stall", "rcu: INFO: rcu_preempt detected stalls", "Kernel panic"}

// KernelLockup returns, when the VM's console shows that its kernel locked
// up, the console from the first such line on (at most 120 lines: the
// report and the stacks); "" when it did not.
func KernelLockup(console []byte) string {
	lines := strings.Split(string(console), "\n")
	for i, l := range lines {
		for _, m := range lockupLines {
			if strings.Contains(l, m) {
				return strings.Join(lines[i:min(len(lines), i+120)], "\n")
			}
		}
	}
	return ""
}
