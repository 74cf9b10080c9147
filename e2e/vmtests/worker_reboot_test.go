package vmtests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/cluster"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/e2e/vm"
)

// The worker's real reboot (docs/lab.md, "The reboot"). The host boots the
// VM on a disk (vm.Config.Disk) where it installed the node, systemd
// included: TestClusterWorker's last fault asks for a reboot
// (vm.RebootRequest), which the node's systemd carries out once the test
// has ended; the kernel restarts, the host boots the VM again on the same
// disk, systemd boots the node, and TestClusterWorkerAfterReboot, run by
// the lab's unit, checks that the node comes back, then tears it down. The test's own memory
// across the reboot is on the disk, under stateDir.

const (
	stateDir = "/var/lib/vipctl-e2e"
	// hostsBeforeFile is /etc/hosts before the join, for the teardown.
	hostsBeforeFile = stateDir + "/hosts-before"
	// rebootFile is the reboot's start (rebootState).
	rebootFile = stateDir + "/reboot.json"
)

// rebootState is what the first boot tells the second about the reboot.
type rebootState struct {
	// Start is the fault's start, on the VM's clock (which each boot
	// reads from the host's RTC: ±1 s across the reboot).
	Start time.Time `json:"start"`
	// BootID is the first boot's kernel boot_id.
	BootID string `json:"bootID"`
	// LastRenewal is the node Lease's last renewal the first boot saw:
	// the Lease's gap across the reboot starts there.
	LastRenewal time.Time `json:"lastRenewal"`
}

// rootOnDisk reports whether the VM's / is a disk (vm.Config.Disk), not the
// initramfs: what the node writes survives a reboot.
func rootOnDisk() bool {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "/" && f[2] == "ext4" {
			return true
		}
	}
	return false
}

func bootID(t *testing.T) string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// requestReboot is the first half of the real reboot: the reboot's start
// kept on the disk, and the reboot asked for. The test binary then ends,
// and the lab's unit has the node's systemd reboot it (`systemctl start
// reboot.target`: the kubelet and containerd stopped, what is left killed,
// the disk unmounted), as `systemctl reboot` does.
func (w *worker) requestReboot(fr *faultRun) {
	t := w.t
	st := rebootState{Start: fr.start, BootID: bootID(t)}
	fr.nw.mu.Lock()
	if n := len(fr.nw.renewals); n > 0 {
		st.LastRenewal = fr.nw.renewals[n-1]
	}
	fr.nw.mu.Unlock()
	b, err := json.Marshal(st)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(rebootFile, b, 0o644))
	require.NoError(t, os.WriteFile(vm.RebootRequest, nil, 0o644))
	t.Log("reboot: asked for; the node's shutdown follows the test's end")
}

// TestClusterWorkerAfterReboot is the second boot of TestClusterWorker's
// VM, after its real reboot: a new kernel on the same disk, booted by the
// node's systemd as at its first boot (the hostname, the network, the modules of
// /etc/modules-load.d, containerd, the kubelet). It starts nothing of the
// node and runs nothing of vipctl: the kubelet starts the watchdog from its
// static pod, which must put the VIP back before the kubelet can reach the
// API through it. It checks that, and what systemd did (systemdBoot). Then
// the teardown.
func TestClusterWorkerAfterReboot(t *testing.T) {
	needClusterLab(t, "VIPCTL_E2E_CLUSTER", "TestClusterWorker")
	up, err := os.ReadFile("/proc/uptime")
	require.NoError(t, err)
	f := strings.Fields(string(up))
	require.NotEmpty(t, f)
	secs, err := strconv.ParseFloat(f[0], 64)
	require.NoError(t, err)
	// The boot: the kernel's start, on this boot's clock.
	boot := time.Now().Add(-time.Duration(secs * float64(time.Second)))
	require.True(t, rootOnDisk(), "/ on the disk the first boot wrote")
	dir := filepath.Join(lab.ShareDir, cluster.WorkerDir)
	spec, err := cluster.ReadWorkerSpec(dir)
	require.NoError(t, err)
	w := &worker{t: t, spec: spec, dir: dir}
	var st rebootState
	b, err := os.ReadFile(rebootFile)
	require.NoError(t, err, "the first boot's state on the disk")
	require.NoError(t, json.Unmarshal(b, &st))
	hostsBefore, err := os.ReadFile(hostsBeforeFile)
	require.NoError(t, err)

	// A real reboot: another kernel (so nothing of what lived in memory:
	// no IPVS table, no vipctl0), booted by the machine's init system,
	// systemd, installed on the disk by the host: the modules of
	// /etc/modules-load.d, the network, containerd's and the kubelet's
	// units. The harness starts nothing of the node.
	require.NotEqual(t, st.BootID, bootID(t), "another kernel (boot_id)")
	require.True(t, systemdBooted(), "systemd is PID 1 (the init system the host installed)")
	t.Logf("reboot: the kernel started %s after the reboot's start (±1 s: each boot reads the RTC); the test starts %.1f s after the kernel",
		boot.Sub(st.Start).Round(100*time.Millisecond), secs)
	w.setPath()
	w.logsAtEnd()
	w.copyPrivate(spec.AdminConf, "/tmp/admin.conf")
	kubectl := func(a ...string) (string, error) {
		c := exec.Command("/usr/local/bin/kubectl", append([]string{"--kubeconfig", "/tmp/admin.conf", "--request-timeout", "20s"}, a...)...)
		o, err := c.CombinedOutput()
		return string(o), err
	}
	t.Run("reboot", func(st2 *testing.T) {
		w.t = st2
		defer func() { w.t = t }()
		fr := &faultRun{w: w, figs: &faultFigures{scenario: w.scenario(), name: "reboot"}, start: st.Start, nw: w.watchNode()}
		defer fr.nw.stop()
		fr.nw.seedRenewal(st.LastRenewal)
		fr.figs.dur("down", boot.Sub(st.Start))
		w.afterBoot(fr, lab.Clients(st2, "/usr/local/bin/kubectl", "/tmp/admin.conf"), kubectl, boot)
		assert.True(st2, w.watchdogRunning(), "the watchdog's container, started by the kubelet from its static pod")
	})
	t.Run("teardown", func(st2 *testing.T) {
		w.t = st2
		defer func() { w.t = t }()
		w.teardown(hostsBefore)
	})
}

// seedRenewal records a renewal of the node Lease seen before this watch
// began (the first boot's last), so that the gap across the reboot counts.
func (nw *nodeWatch) seedRenewal(at time.Time) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if !at.IsZero() && (len(nw.renewals) == 0 || at.Before(nw.renewals[0])) {
		nw.renewals = append([]time.Time{at}, nw.renewals...)
	}
}

// afterBoot waits for the VIP with every master back after the boot at
// boot, starts the clients, waits for the node Ready as the kubelet posts
// it after the boot, and ends the fault (fr.end: a Lease renewal after the
// rules are back, no unexcused failure). kube-proxy's start after the boot
// flushes IPVS, which the watchdog restores: each period with no real
// server is excused, as in its restart's fault.
func (w *worker) afterBoot(fr *faultRun, clients *lab.Real, kubectl func(...string) (string, error), boot time.Time) {
	t := w.t
	if err := lab.Poll(5*time.Minute, w.allInIPVS); err != nil {
		w.bootDiagnostics()
		require.NoError(t, err, "the VIP with every master after the boot")
	}
	rules := time.Now()
	fr.figs.dur("boot_to_rules", rules.Sub(boot))
	fr.tr = clients.StartTraffic()
	fr.iw = w.watchIPVS("", fr.tr, true)
	// Ready as the kubelet posts it after the boot: the condition True
	// with a heartbeat after the boot (the API kept the old one).
	var readyAt time.Time
	require.NoError(t, pollProc(5*time.Minute, func() bool {
		o, err := kubectl("get", "node", w.spec.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}`)
		f := strings.Fields(o)
		if err != nil || len(f) != 2 || f[0] != "True" {
			return false
		}
		hb, err := time.Parse(time.RFC3339, f[1])
		readyAt = time.Now()
		return err == nil && !hb.Before(boot.Truncate(time.Second))
	}), "node %s never Ready after the boot", w.spec.Name)
	fr.figs.dur("boot_to_ready", readyAt.Sub(boot))
	w.systemdBoot(fr.figs, boot)
	time.Sleep(5 * time.Second) // the clients' run after the boot, at least
	fr.end(rules, true)
}

// systemdBoot checks what systemd did at this boot and records when
// (figures from boot, the kernel's start): systemd-modules-load loaded
// every module of /etc/modules-load.d (its journal says "Inserted module"
// for each one not built in), then containerd's and the kubelet's units
// became active and stay so.
func (w *worker) systemdBoot(figs *faultFigures, boot time.Time) {
	t := w.t
	mono := func(unit, prop string) time.Duration {
		o := strings.TrimSpace(w.sh("systemctl show -p " + prop + " --value " + unit))
		us, err := strconv.ParseInt(o, 10, 64)
		require.NoError(t, err, "%s %s: %q", unit, prop, o)
		require.NotZero(t, us, "%s %s", unit, prop)
		return time.Duration(us) * time.Microsecond
	}
	files, _ := filepath.Glob("/etc/modules-load.d/*.conf")
	var mods []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ";") {
				mods = append(mods, l)
			}
		}
	}
	require.NotEmpty(t, mods, "modules to load at boot in %v", files)
	assert.Equal(t, "active", strings.TrimSpace(w.sh("systemctl show -p ActiveState --value systemd-modules-load")), "systemd-modules-load")
	journal := w.sh("journalctl -b -t systemd-modules-load -o cat --no-pager")
	for _, m := range mods {
		_, err := os.Stat("/sys/module/" + m)
		require.NoError(t, err, "module %s loaded", m)
		assert.Contains(t, journal, "Inserted module '"+m+"'", "systemd-modules-load loaded %s at boot", m)
	}
	figs.dur("boot_to_modules_loaded", mono("systemd-modules-load", "ExecMainExitTimestampMonotonic"))
	for _, u := range []string{"containerd", "kubelet"} {
		assert.Equal(t, "active", strings.TrimSpace(w.sh("systemctl show -p ActiveState --value "+u)), u)
		figs.dur("boot_to_"+u+"_active", mono(u, "ActiveEnterTimestampMonotonic"))
	}
	t.Logf("reboot: systemd loaded %v from %v; its boot:\n%s", mods, files,
		w.sh("systemd-analyze 2>&1 || true; systemctl list-units --failed --no-pager --no-legend 2>&1 || true"))
}

// bootDiagnostics logs what the node runs after a boot that did not bring
// the VIP back: containerd's containers and tasks, the watchdog's
// container logs, the links and the IPVS modules.
func (w *worker) bootDiagnostics() {
	t := w.t
	for _, c := range []string{
		"ctr -n k8s.io containers ls", "ctr -n k8s.io tasks ls", "ip -o link", "grep -E '^(ip_vs|dummy)' /proc/modules",
		"ls -la /etc/kubernetes/manifests /var/lib/vipctl",
		"for f in /var/log/pods/kube-system_vipctl-care*/*/*.log; do echo == $f; tail -n 30 $f; done",
		"systemctl --no-pager status containerd kubelet systemd-modules-load 2>&1 | head -n 40",
		"journalctl -b -u kubelet -o cat --no-pager | grep -i vipctl-care | tail -n 30",
	} {
		o, err := exec.Command("/bin/sh", "-c", c).CombinedOutput()
		t.Logf("after the boot: %s (%v):\n%s", c, err, o)
	}
}
