package vmtests

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/cluster"
	"github.com/vipctl/vipctl/e2e/lab"
	"github.com/vipctl/vipctl/e2e/vm"
)

// TestClusterWorker is the VM's part of the real-cluster e2e (e2e/cluster
// TestClusterWorker on the host, docs/lab.md): the VM becomes a worker of
// the real cluster whose masters run on the host, as a user makes one:
// Debian's containerd and runc, the offline bundle's install.sh, a real
// kubelet, and `vipctl join` driving the real `kubeadm join` through the
// VIP. The host has installed the node on the VM's disk (e2e/cluster
// writeMachine): its systemd boots it and runs containerd's and the
// kubelet's units from the first boot on. It runs only in the VM the host
// test boots (VIPCTL_E2E_CLUSTER=1); TestVM skips it.
func TestClusterWorker(t *testing.T) {
	needClusterLab(t, "VIPCTL_E2E_CLUSTER", "TestClusterWorker")
	dir := filepath.Join(lab.ShareDir, cluster.WorkerDir)
	spec, err := cluster.ReadWorkerSpec(dir)
	require.NoError(t, err)
	w := &worker{t: t, spec: spec, dir: dir}
	w.setUp("containerd_s")
	tokenFile, _ := w.installSecret(spec.TokenFile, "token")

	// What vipctl reset must give back, byte for byte (kept on the disk
	// for the teardown after the reboot).
	hostsBefore, err := os.ReadFile("/etc/hosts")
	require.NoError(t, err)
	if rootOnDisk() {
		require.NoError(t, os.MkdirAll(filepath.Dir(hostsBeforeFile), 0o755))
		require.NoError(t, os.WriteFile(hostsBeforeFile, hostsBefore, 0o644))
	}
	args := []string{"join", "--token-file", tokenFile,
		"--node-ip", strings.Split(spec.NodeIP, "/")[0], "--service-subnet", spec.ServiceSubnet}
	for _, m := range spec.Masters {
		args = append(args, "--master", m)
	}
	// The probes' bounds for a slow machine (docs/join.md): under TCG a
	// probe of a healthy master from this VM often takes more than the
	// default 800 ms, and with two masters one slow answer of the healthy
	// one makes every master look down: the watchdog fails open and keeps
	// a killed master in (the make test run of 2026-11-30 03:00).
	args = append(args, "--care-flag=--interval=3s", "--care-flag=--timeout=2s")
	args = append(args, "--", "--discovery-token-ca-cert-hash", spec.CACertHash)
	t.Logf("vipctl %s", strings.Join(args, " "))
	join := time.Now()
	cmd := exec.Command("/usr/local/bin/vipctl", args...)
	b, err := cmd.CombinedOutput()
	t.Logf("vipctl join (%s):\n%s", time.Since(join).Round(time.Millisecond), b)
	require.NoError(t, err, "vipctl join")
	w.measure("vipctl_join_s", join)
	// From here on the IPVS table is sampled: kube-proxy's start (its
	// nftables mode flushes IPVS) must not leave the VIP without masters
	// for longer than the watchdog takes to restore it.
	gaps := w.sampleIPVS()
	defer gaps.stop()

	// Through the VIP: admin.conf's server is apiserver.cluster.local,
	// which vipctl join mapped to the VIP in /etc/hosts.
	hosts, err := os.ReadFile("/etc/hosts")
	require.NoError(t, err)
	require.Contains(t, string(hosts), lab.VIP.String()+" apiserver.cluster.local")
	w.copyPrivate(spec.AdminConf, "/tmp/admin.conf")
	kubectl := func(a ...string) (string, error) {
		c := exec.Command("/usr/local/bin/kubectl", append([]string{"--kubeconfig", "/tmp/admin.conf", "--request-timeout", "20s"}, a...)...)
		o, err := c.CombinedOutput()
		return string(o), err
	}
	require.NoError(t, pollProc(3*time.Minute, func() bool {
		_, err := kubectl("get", "node", spec.Name)
		return err == nil
	}), "node %s never registered", spec.Name)
	w.measure("join_to_registered_s", join)
	w.kubeletUnit()

	// The watchdog: its static pod's container runs in containerd, and it
	// keeps every master in the IPVS table.
	last := time.Now()
	require.NoError(t, pollProc(4*time.Minute, func() bool {
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			o, _ := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "containers", "ls").CombinedOutput()
			t.Logf("waiting for the watchdog (%s after the join); ctr containers ls:\n%s", time.Since(join).Round(time.Second), o)
		}
		return w.watchdogRunning()
	}), "the watchdog's container never ran")
	w.measure("join_to_watchdog_running_s", join)
	var st string
	require.NoError(t, pollProc(2*time.Minute, func() bool {
		o, err := exec.Command("/usr/local/bin/vipctl", "status", "-o", "json").CombinedOutput()
		st = string(o)
		return err == nil && w.allMastersHealthy(o)
	}), "vipctl status never showed every master healthy:\n%s", st)
	o, _ := exec.Command("/usr/local/bin/vipctl", "status").CombinedOutput()
	t.Logf("vipctl status:\n%s", o)
	rd, err := lab.NewIPVSReader()
	require.NoError(t, err)
	rs := rd.RealServers()
	rd.Close()
	for _, m := range spec.Masters {
		require.Positive(t, rs[netip.MustParseAddrPort(m)], "IPVS real server %s (table %v)", m, rs)
	}

	// The node turns Ready once the kubelet has a CNI config and the
	// runtime reports its network ready.
	var nodes string
	err = pollProc(5*time.Minute, func() bool {
		o, err := kubectl("get", "node", spec.Name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		return err == nil && strings.TrimSpace(o) == "True"
	})
	if err != nil {
		o, _ := kubectl("describe", "node", spec.Name)
		t.Logf("kubectl describe node %s:\n%s", spec.Name, o)
	}
	require.NoError(t, err, "node %s never Ready", spec.Name)
	w.measure("join_to_ready_s", join)
	nodes, err = kubectl("get", "nodes", "-o", "wide")
	require.NoError(t, err, nodes)
	t.Logf("kubectl get nodes -o wide (from the worker, through the VIP):\n%s", nodes)
	require.Contains(t, nodes, spec.Name+" ")
	o2, err := kubectl("get", "pods", "-A", "-o", "wide", "--field-selector", "spec.nodeName="+spec.Name)
	require.NoError(t, err, o2)
	t.Logf("pods on %s:\n%s", spec.Name, o2)
	require.Contains(t, o2, "Running")

	if spec.KubeProxyMode == "" {
		w.teardown(hostsBefore)
		return
	}
	// kube-proxy, kubeadm's DaemonSet, in spec.KubeProxyMode: its pod runs
	// on the worker and its rules are synced (healthz 200).
	kp := time.Now()
	require.NoError(t, lab.Poll(5*time.Minute, func() bool {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:10256/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}), "kube-proxy never healthy on the worker")
	w.measure("ready_to_kube_proxy_healthy_s", kp)
	o3, err := kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "-o", "wide")
	require.NoError(t, err, o3)
	t.Logf("kube-proxy pods:\n%s", o3)
	o4, err := kubectl("get", "configmap", "-n", "kube-system", "kube-proxy", "-o", "jsonpath={.data.config\\.conf}")
	require.NoError(t, err, o4)
	require.Contains(t, o4, "mode: "+spec.KubeProxyMode)
	// The masters are back in the table (the watchdog restores a flush).
	require.NoError(t, lab.Poll(30*time.Second, func() bool { return w.allInIPVS() }), "the masters never came back into IPVS after kube-proxy started")
	g := gaps.stop()
	fmt.Printf("MEASURE cluster_worker_ipvs_gaps=%d\nMEASURE cluster_worker_ipvs_longest_gap_ms=%d\nMEASURE cluster_worker_ipvs_empty=%d\nMEASURE cluster_worker_ipvs_longest_empty_ms=%d\n",
		g.count, g.longest.Milliseconds(), g.empty, g.longestEmpty.Milliseconds())
	t.Logf("IPVS table sampled every 20 ms from the join to kube-proxy healthy: %d gap(s) without every master, longest %s; %d without any, longest %s",
		g.count, g.longest, g.empty, g.longestEmpty)
	pod, _ := kubectl("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-proxy", "--field-selector", "spec.nodeName="+spec.Name, "-o", "name")
	lg, _ := kubectl("logs", "-n", "kube-system", strings.TrimSpace(pod))
	t.Logf("kube-proxy's log on %s (first lines):\n%s", spec.Name, firstLines(lg, 25))
	// Every rule kube-proxy writes needs its module: a sync that failed
	// means the worker lacks one.
	require.NotContains(t, lg, "sync failed", "kube-proxy's rules on %s", spec.Name)
	if spec.KubeProxyMode == "ipvs" {
		// The shorter run (TestClusterWorkerIPVSMode): kube-proxy's ipvs
		// mode beside the VIP. The faults and the teardown are the
		// nftables run's (kube-proxy's restart there waits for its flush,
		// which the ipvs mode never makes).
		w.checkIPVSMode(t, kubectl, g)
		return
	}

	// The faults, one after the other (worker_faults_test.go), then the
	// worker torn down as docs/join.md says. On a disk the last fault is a
	// real reboot: TestClusterWorkerAfterReboot goes on after it.
	w.runFaults(kubectl)
	if _, err := os.Stat(vm.RebootRequest); err == nil {
		t.Log("the worker reboots: TestClusterWorkerAfterReboot checks its boot and tears it down")
		return
	}
	t.Run("teardown", func(st *testing.T) {
		w.t = st
		defer func() { w.t = t }()
		w.teardown(hostsBefore)
	})
}

// setUp makes the VM a machine ready for kubeadm, as a user prepares one
// on a machine the host installed and systemd booted: the machine checked,
// containerd with the node's configuration and the spec's images, the
// offline bundle's install.sh, the CNI config (systemd runs kubeadm's
// kubelet unit). Each step is measured (containerd's as containerdFigure);
// the kubelet's and containerd's logs are shown if the test fails.
func (w *worker) setUp(containerdFigure string) {
	t, spec := w.t, w.spec
	w.setPath()
	w.logsAtEnd()

	t0 := time.Now()
	w.machine()
	w.measure("machine_s", t0)

	t0 = time.Now()
	w.startContainerd(true)
	w.measure(containerdFigure, t0)

	t0 = time.Now()
	out := w.sh("mkdir -p /tmp/bundle && tar -xzf " + w.share(spec.Bundle) + " -C /tmp/bundle && cd /tmp/bundle/* && sh ./install.sh --runtime containerd")
	t.Logf("install.sh:\n%s", out)
	w.measure("install_sh_s", t0)

	require.NoError(t, os.MkdirAll("/etc/cni/net.d", 0o755))
	cni, err := os.ReadFile(w.share(spec.CNIConfig))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("/etc/cni/net.d/"+spec.CNIConfig, cni, 0o644))
}

// setPath gives the test's commands the node's PATH, Debian's for root
// (the sbin folders first: kmod's /sbin/modprobe, not busybox's
// /bin/modprobe, which lacks -n), then the share's binaries.
func (w *worker) setPath() {
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/tmp/bin")
}

// logsAtEnd shows the kubelet's and containerd's logs (their units'
// journal), the containers and the watchdog's log when the test fails.
func (w *worker) logsAtEnd() {
	t := w.t
	t.Cleanup(func() {
		if t.Failed() {
			_ = exec.Command("sh", "-c", "journalctl -u kubelet -o cat --no-pager > /tmp/kubelet.log; journalctl -u containerd -o cat --no-pager > /tmp/containerd.log").Run()
			for _, f := range []string{"/tmp/kubelet.log", "/tmp/containerd.log"} {
				t.Logf("errors and last lines of %s:\n%s", f, logErrors(f, 60, 15))
			}
			o, _ := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "tasks", "ls").CombinedOutput()
			t.Logf("ctr tasks ls:\n%s", o)
			// The watchdog's own account (its static pod's log, as the
			// kubelet keeps it): probes, falls, rises, fail-open.
			o, _ = exec.Command("sh", "-c", "for f in /var/log/pods/kube-system_vipctl-care*/*/*.log; do echo == $f; grep -v '\"msg\":\"probe\"' $f | tail -n 80; done").CombinedOutput()
			t.Logf("the watchdog's log:\n%s", o)
			// Why a static pod restarted: the kubelet's probe results and
			// kills, and the last words of the control plane's containers.
			o, _ = exec.Command("sh", "-c", "grep -E 'prober.go|Killing container|Probe failed' /tmp/kubelet.log | tail -n 30; "+
				"for f in /var/log/pods/kube-system_kube-apiserver-*/*/*.log /var/log/pods/kube-system_etcd-*/*/*.log; do echo == $f; tail -n 15 $f; done").CombinedOutput()
			t.Logf("the kubelet's probes and kills; the apiserver's and etcd's logs:\n%s", o)
		}
	})
}

// installSecret copies the share's secret file src to
// /etc/kubernetes/vipctl-join/name (mode 0600, where vipctl init writes the
// join's secrets) and returns that path and the secret.
func (w *worker) installSecret(src, name string) (string, string) {
	t := w.t
	require.NoError(t, os.MkdirAll("/etc/kubernetes/vipctl-join", 0o700))
	p := filepath.Join("/etc/kubernetes/vipctl-join", name)
	return p, strings.TrimSpace(string(w.copyPrivate(src, p)))
}

// copyPrivate copies the share's file src to the path to, mode 0600 (a
// secret, or a configuration with one), and returns its content.
func (w *worker) copyPrivate(src, to string) []byte {
	b, err := os.ReadFile(w.share(src))
	require.NoError(w.t, err)
	require.NoError(w.t, os.WriteFile(to, b, 0o600))
	return b
}

// needClusterLab skips a scenario that only runs in the VM that the host
// test hostTest of e2e/cluster boots, with env=1 in the VM's environment.
func needClusterLab(t *testing.T, env, hostTest string) {
	t.Helper()
	lab.Need(t)
	if os.Getenv(env) != "1" {
		t.Skipf("needs the host's cluster lab (%s=1): run by e2e/cluster's %s", env, hostTest)
	}
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// allInIPVS reports whether every master is a real server of the VIP with a weight.
func (w *worker) allInIPVS() bool {
	rs := procRealServers()
	for _, m := range w.spec.Masters {
		if rs[netip.MustParseAddrPort(m)] <= 0 {
			return false
		}
	}
	return true
}

// ipvsEmpty reports whether the VIP has no real server with a weight (or
// no virtual server).
func (w *worker) ipvsEmpty() bool {
	for _, wt := range procRealServers() {
		if wt > 0 {
			return false
		}
	}
	return true
}

// gapStats are the periods the sampler saw the VIP without every master
// (the watchdog's health decisions count too), and those it saw the VIP
// with no real server at all or no virtual server (a flush's signature).
type gapStats struct {
	count, empty          int
	longest, longestEmpty time.Duration
}

type sampler struct {
	done chan struct{}
	res  chan gapStats
	once sync.Once
	g    gapStats
}

// sampleIPVS samples the table every 20 ms until stop.
func (w *worker) sampleIPVS() *sampler {
	s := &sampler{done: make(chan struct{}), res: make(chan gapStats, 1)}
	go func() {
		var g gapStats
		var since, emptySince time.Time
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			ok, empty := w.allInIPVS(), w.ipvsEmpty()
			switch {
			case empty && emptySince.IsZero():
				emptySince = time.Now()
				g.empty++
			case !empty && !emptySince.IsZero():
				g.longestEmpty = max(g.longestEmpty, time.Since(emptySince))
				emptySince = time.Time{}
			}
			switch {
			case !ok && since.IsZero():
				since = time.Now()
				g.count++
			case ok && !since.IsZero():
				g.longest = max(g.longest, time.Since(since))
				since = time.Time{}
			}
			select {
			case <-s.done:
				if !since.IsZero() {
					g.longest = max(g.longest, time.Since(since))
				}
				s.res <- g
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// stop ends the sampling (once) and returns what it saw.
func (s *sampler) stop() gapStats {
	s.once.Do(func() { close(s.done); s.g = <-s.res })
	return s.g
}

// worker is the VM as a node of the cluster.
type worker struct {
	t    *testing.T
	spec cluster.WorkerSpec
	dir  string
	// name is the scenario's name in its MEASURE lines (scenario()).
	name string
}

func (w *worker) share(p string) string { return filepath.Join(w.dir, p) }

func (w *worker) measure(name string, since time.Time) { w.figure(name, time.Since(since)) }

// figure prints a duration as the MEASURE line <scenario>_<name>, in seconds.
func (w *worker) figure(name string, d time.Duration) {
	fmt.Printf("MEASURE %s_%s=%.1f\n", w.scenario(), name, d.Seconds())
}

// scenario is the prefix of the node's MEASURE lines: cluster_worker unless
// w.name says otherwise.
func (w *worker) scenario() string {
	if w.name != "" {
		return w.name
	}
	return "cluster_worker"
}

// sh runs a shell command and returns its output; failing fails the test.
func (w *worker) sh(script string) string {
	w.t.Helper()
	out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput()
	require.NoError(w.t, err, "%s:\n%s", script, out)
	return string(out)
}

// machine checks that the VM is the machine the host installed, booted
// by its systemd: PID 1, its name, its address on the lab bridge
// (lab-network.service), and waits for every master to answer.
func (w *worker) machine() {
	t, s := w.t, w.spec
	require.True(t, systemdBooted(), "systemd is PID 1 on the node the host installed")
	name, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, s.Name, name, "the hostname systemd set from /etc/hostname")
	// lab-network.service gives eth0 its address and the route.
	ip := strings.Split(s.NodeIP, "/")[0]
	require.NoError(t, lab.Poll(60*time.Second, func() bool {
		out, _ := exec.Command("ip", "-o", "addr", "show", "dev", "eth0").Output()
		return strings.Contains(string(out), " "+ip+"/")
	}), "eth0 never got %s (lab-network.service)", s.NodeIP)
	w.reachMasters()
}

// systemdBooted reports whether systemd is this boot's init (PID 1).
func systemdBooted() bool {
	b, err := os.ReadFile("/proc/1/comm")
	return err == nil && strings.TrimSpace(string(b)) == "systemd"
}

// reachMasters waits for every master to answer from the VM.
func (w *worker) reachMasters() {
	for _, m := range w.spec.Masters {
		require.NoError(w.t, lab.Poll(60*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", m, 2*time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}), "master %s unreachable from the VM", m)
	}
}

// startContainerd writes containerd's configuration for the node and
// restarts its unit with it, as a user does, and, with images, imports
// the pause image kubeadm asks for (and kube-proxy's); a reboot finds them
// in /var/lib/containerd.
func (w *worker) startContainerd(images bool) {
	t := w.t
	require.NoError(t, os.MkdirAll("/etc/containerd", 0o755))
	require.NoError(t, os.WriteFile("/etc/containerd/config.toml", []byte(cluster.WorkerContainerdConfig(w.spec.PauseRef)), 0o644))
	w.sh("systemctl restart containerd")
	require.NoError(t, pollProc(60*time.Second, func() bool {
		return exec.Command("/usr/bin/ctr", "version").Run() == nil
	}), "containerd never answered")
	for _, img := range w.spec.Images {
		if !images {
			break
		}
		w.sh("ctr -n k8s.io images import " + w.share(img))
	}
}

// kubeletUnit checks that the node's systemd runs the kubelet as kubeadm
// init or join left it: kubeadm's unit active (its kubelet-start phase
// restarted it through systemd), its main process the kubelet with the
// drop-in's arguments and kubeadm's flags.
func (w *worker) kubeletUnit() {
	t := w.t
	props := map[string]string{}
	for _, l := range strings.Split(w.sh("systemctl show -p ActiveState -p MainPID -p NRestarts kubelet"), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			props[k] = v
		}
	}
	require.Equal(t, "active", props["ActiveState"], "kubelet.service (%v)", props)
	cmdline, err := os.ReadFile("/proc/" + props["MainPID"] + "/cmdline")
	require.NoError(t, err, "kubelet.service's main process %q", props["MainPID"])
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	env, err := os.ReadFile("/var/lib/kubelet/kubeadm-flags.env")
	require.NoError(t, err)
	require.Equal(t, append([]string{"/usr/local/bin/kubelet"}, cluster.KubeletArgs(env)...), args, "the kubelet systemd runs")
	t.Logf("kubelet.service runs the kubelet kubeadm configured (pid %s, %s restarts of the unit before kubeadm wrote its configuration)", props["MainPID"], props["NRestarts"])
}

// watchdogRunning reports whether a container of the vipctl image has a
// running task in containerd's k8s.io namespace.
func (w *worker) watchdogRunning() bool {
	out, err := exec.Command("/usr/bin/ctr", "-n", "k8s.io", "containers", "ls").Output()
	if err != nil {
		return false
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.Contains(f[1], "vipctl/vipctl:") {
			ids[f[0]] = true
		}
	}
	out, err = exec.Command("/usr/bin/ctr", "-n", "k8s.io", "tasks", "ls").Output()
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && ids[f[0]] && f[2] == "RUNNING" {
			return true
		}
	}
	return false
}

// allMastersHealthy reads `vipctl status -o json` and reports whether it
// lists every master of the spec up, with a weight.
func (w *worker) allMastersHealthy(b []byte) bool {
	var st struct {
		Masters []struct {
			Address string `json:"address"`
			State   string `json:"state"`
			Weight  int    `json:"weight"`
		} `json:"masters"`
	}
	if json.Unmarshal(b, &st) != nil {
		return false
	}
	ok := map[string]bool{}
	for _, m := range st.Masters {
		ok[m.Address] = m.State == "up" && m.Weight > 0
	}
	for _, m := range w.spec.Masters {
		if !ok[m] {
			return false
		}
	}
	return true
}

// logErrors is the error lines (klog's E, containerd's level=error) of the
// log file p, the last n of them, and its last tail lines.
func logErrors(p string, n, tail int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var errs []string
	for _, l := range lines {
		if strings.HasPrefix(l, "E") || strings.Contains(l, "level=error") {
			errs = append(errs, l)
		}
	}
	if len(errs) > n {
		errs = errs[len(errs)-n:]
	}
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return strings.Join(errs, "\n") + "\n...\n" + strings.Join(lines, "\n")
}
