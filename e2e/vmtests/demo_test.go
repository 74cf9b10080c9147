package vmtests

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// say prints a demo line; the host's vmlab shows only these.
func say(format string, a ...any) {
	for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, a...), "\n"), "\n") {
		fmt.Println("demo| " + l)
	}
}

func sayRun(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	say("$ vipctl %s", strings.Join(args, " "))
	out, err := l.Run(args...)
	require.NoError(t, err)
	say("%s", out)
	return out
}

// TestDemo is `make demo`: a node and three masters in the VM, vipctl
// pointing the VIP at them, the IPVS table, and traffic through the VIP.
func TestDemo(t *testing.T) {
	if os.Getenv("VIPCTL_DEMO") != "1" {
		t.Skip("the demo runs only from `make demo` (VIPCTL_DEMO=1)")
	}
	l := lab.New(t, 3)
	say("Lab: node %s (root namespace); masters %s, %s, %s each in a network namespace with an HTTPS server on :6443",
		lab.NodeIP, l.Masters[0].Addr, l.Masters[1].Addr, l.Masters[2].Addr)
	args := []string{"ipvs", "apply", "--vip", lab.VIPPort.String()}
	for _, m := range l.Masters {
		args = append(args, "--master", m.Addr.String())
	}
	sayRun(t, l, args...)
	sayRun(t, l, "ipvs", "show", "--vip", lab.VIPPort.String())
	say("Six new TLS connections to https://%s/ from the node:", lab.VIPPort)
	for _, h := range l.HitVIP(6, 3*time.Second) {
		if h.Err != nil {
			say("  error: %v", h.Err)
			continue
		}
		say("  answered by %s, which saw the client as %s", h.Master, h.Src)
	}
	sayRun(t, l, "ipvs", "show", "--vip", lab.VIPPort.String())

	say("")
	say("Now the watchdog, as its static pod runs it on every node:")
	c := l.StartCare()
	say("$ vipctl %s &", strings.Join(c.Args, " "))
	lab.WaitFor(t, 10*time.Second, "all in", allServing(l))
	sayRun(t, l, "status", "--vip", lab.VIPPort.String(), "--metrics-addr", lab.MetricsAddr)
	m := l.Masters[1]
	say("SIGKILL %s's apiserver...", m.Name)
	t0 := time.Now()
	m.Kill()
	d := lab.WaitFor(t, 10*time.Second, "out", out(m))
	say("... %s is out of service after %s (new connections go to the others)", m.Name, d.Round(time.Millisecond))
	sayRun(t, l, "status", "--vip", lab.VIPPort.String(), "--metrics-addr", lab.MetricsAddr)
	say("kube-proxy in nftables mode flushes IPVS when it starts; simulating that with a flush...")
	t0 = time.Now()
	lab.FlushIPVS(t)
	lab.WaitFor(t, 5*time.Second, "restored", in(l.Masters[0]))
	say("... the watchdog restored the service in %s", time.Since(t0).Round(time.Millisecond))
	say("Restarting %s's apiserver...", m.Name)
	t0 = time.Now()
	m.Start()
	lab.WaitFor(t, 15*time.Second, "back", in(m))
	say("... back in service after %s (rise: 2 healthy probes)", time.Since(t0).Round(time.Millisecond))
	sayRun(t, l, "ipvs", "show", "--vip", lab.VIPPort.String())
	c.Stop()
	say("The watchdog stopped (SIGTERM leaves the rules for the node to keep working); removing them:")
	sayRun(t, l, "ipvs", "delete", "--vip", lab.VIPPort.String())
}

// sayFile prints a file (at most max lines) as the demo's output.
func sayFile(t *testing.T, path string, max int) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	say("$ cat %s", path)
	for i, l := range lines {
		if i == max {
			say("  ... (%d more lines)", len(lines)-max)
			break
		}
		say("  %s", l)
	}
}

// TestDemoJoin is the node-integration half of `make demo`: the kubeadm
// config for the first master, a worker join (through a stand-in kubeadm
// that checks the VIP reaches a master when it runs), the files and the
// table it leaves, reset, then a master join.
func TestDemoJoin(t *testing.T) {
	if os.Getenv("VIPCTL_DEMO") != "1" {
		t.Skip("the demo runs only from `make demo` (VIPCTL_DEMO=1)")
	}
	l := lab.New(t, 3)
	base := realHosts(t)
	p := newJoinPaths(t)
	say("")
	say("=== Node integration: kubeadm config, join, reset ===")
	cfgArgs := []string{"kubeadm", "config", "--vip", lab.VIP.String()}
	for _, m := range l.Masters {
		cfgArgs = append(cfgArgs, "--master", m.IP.String())
	}
	say("$ vipctl %s   # for kubeadm init on the first master", strings.Join(cfgArgs, " "))
	cfg, err := l.Run(cfgArgs...)
	require.NoError(t, err)
	for i, line := range strings.Split(strings.TrimRight(cfg, "\n"), "\n") {
		if i == 40 {
			say("  ...")
			break
		}
		say("  %s", line)
	}

	fk := l.FakeKubeadm(0)
	args := append(joinArgs(l, fk, p, "--"), kubeadmFlags...)
	say("")
	say("A worker joins (kubeadm is a stand-in here that records what it saw):")
	say("$ vipctl %s", hideSecrets(strings.Join(args, " ")))
	stdout, stderr, err := l.RunWith(fk.Env, args...)
	require.NoError(t, err, stderr)
	say("%s", stdout)
	calls := fk.Calls(t)
	require.Len(t, calls, 1)
	say("kubeadm was called as: kubeadm %s", hideSecrets(strings.Join(calls[0].Args, " ")))
	say("and at that moment apiserver.cluster.local resolved to %v and https://apiserver.cluster.local:6443/ answered %q",
		calls[0].Resolved, calls[0].Answer)
	sayFile(t, etcHosts, 20)
	sayFile(t, p.manifest, 30)
	sayFile(t, p.modules, 10)
	sayRun(t, l, "ipvs", "show", "--vip", lab.VIPPort.String())

	say("$ vipctl reset --vip %s", lab.VIPPort)
	out, err := l.Run(append([]string{"reset", "--vip", lab.VIPPort.String()}, p.flags()...)...)
	require.NoError(t, err)
	say("%s", out)
	after, err := os.ReadFile(etcHosts)
	require.NoError(t, err)
	say("/etc/hosts is byte-identical to before the join: %v; IPVS service present: %v", string(after) == string(base), lab.RealServers(t) != nil)

	fk = l.FakeKubeadm(0)
	args = append(joinArgs(l, fk, p, "--control-plane", "--node-ip", lab.NodeIP.String(), "--"), kubeadmFlags...)
	args = append(args, "--certificate-key", e2eCertKey)
	say("")
	say("A master joins through the VIP too, over every master that answers; the name is written once and never rewritten:")
	say("$ vipctl %s", hideSecrets(strings.Join(args, " ")))
	stdout, stderr, err = l.RunWith(fk.Env, args...)
	require.NoError(t, err, stderr)
	say("%s", stdout)
	calls = fk.Calls(t)
	require.Len(t, calls, 1)
	say("during kubeadm, apiserver.cluster.local resolved to %v", calls[0].Resolved)
	sayFile(t, etcHosts, 20)
	_, err = l.Run(append([]string{"reset", "--vip", lab.VIPPort.String()}, p.flags()...)...)
	require.NoError(t, err)
}

// hideSecrets keeps the demo's own echo of a command line from showing the
// (fake) token and certificate key, as vipctl's own output never does.
func hideSecrets(s string) string {
	return strings.NewReplacer(e2eToken, "<token>", e2eCertKey, "<certificate-key>").Replace(s)
}
