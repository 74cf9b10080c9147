package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The host's faults, asked for by the VM worker (e2e/vmtests
// TestClusterWorker) with a console line, answered through the cluster:
//
//  1. the VM prints "LAB FAULT <name> START" (FaultLine), having marked
//     the instant in its own clock;
//  2. the host, reading the console (vm.Run streams it line by line),
//     applies the fault at once, heals it when the fault has a duration,
//     and creates the ConfigMap kube-system/FaultConfigMap(name) on the
//     first master (not through the VIP) with what it did, in
//     milliseconds from reading the line: "applied", "healed", or "error";
//  3. the VM polls that ConfigMap through the VIP.
//
// So every time is on the VM's clock: the fault's instant is the line's
// plus "applied" (the console's own delay, under 10 ms, is not counted),
// and nothing depends on the two clocks agreeing.
const (
	// FaultKillAPIServer SIGKILLs the fault master's kube-apiserver
	// container; its kubelet restarts it.
	FaultKillAPIServer = "kill-apiserver"
	// FaultCutOff cuts the fault master's machine off for FaultCutFor,
	// then reconnects it (FaultDriver.CutLink says how).
	FaultCutOff = "cut-off"
	// FaultCutFor is how long a master stays cut off.
	FaultCutFor = 20 * time.Second
)

// FaultLine is the console line by which the VM asks for the fault name.
func FaultLine(name string) string { return "LAB FAULT " + name + " START" }

// FaultConfigMap is the ConfigMap (in kube-system) the host answers fault
// name with.
func FaultConfigMap(name string) string { return "vipctl-e2e-fault-" + name }

// FaultDriver applies the faults the VM asks for; it is an io.Writer of
// the VM's console (one line per Write, as vm.Run writes).
type FaultDriver struct {
	Ctx context.Context
	Lab *Lab
	// First answers (kubectl on it); Target is the master the faults hit,
	// Veth its link on the lab bridge.
	First, Target *Node
	Veth          string
	// CutLink: the cut-off sets Target's link down (its whole machine cut
	// off). Without it (two masters) only the worker loses Target: its
	// packets to the worker are dropped (a blackhole route in Target's
	// namespace), because with two etcd members a master's link down
	// stops the cluster's quorum, which no load balancer can help.
	CutLink bool
	Logf    func(string, ...any)

	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	done []string
}

// Write looks for fault lines; it never blocks the console.
func (d *FaultDriver) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\r\n"), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "LAB FAULT ")
		if !ok {
			continue
		}
		name, ok := strings.CutSuffix(rest, " START")
		if !ok {
			continue
		}
		seen := time.Now()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.apply(name, seen)
		}()
	}
	return len(b), nil
}

// Wait waits for the faults under way and returns the names of those
// applied and every error.
func (d *FaultDriver) Wait() ([]string, []error) {
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done, d.errs
}

func (d *FaultDriver) apply(name string, seen time.Time) {
	data := map[string]string{}
	err := d.run(name, seen, data)
	if err != nil {
		data["error"] = err.Error()
	}
	args := []string{"create", "configmap", "-n", "kube-system", FaultConfigMap(name)}
	for k, v := range data {
		args = append(args, "--from-literal="+k+"="+v)
	}
	var out []byte
	var kerr error
	for range 10 {
		if out, kerr = d.Lab.Kubectl(d.Ctx, d.First, args...); kerr == nil {
			break
		}
		select {
		case <-d.Ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.errs = append(d.errs, fmt.Errorf("fault %s: %w", name, err))
	}
	if kerr != nil {
		d.errs = append(d.errs, fmt.Errorf("fault %s: answering the VM: %w: %s", name, kerr, out))
	}
	if err == nil {
		d.done = append(d.done, name)
	}
	d.Logf("fault %s on %s: %v (ms after the VM's line)", name, d.Target.Name, data)
}

func (d *FaultDriver) run(name string, seen time.Time, data map[string]string) error {
	ms := func() string { return strconv.FormatInt(time.Since(seen).Milliseconds(), 10) }
	switch name {
	case FaultKillAPIServer:
		if err := d.Lab.KillAPIServer(d.Ctx, d.Target); err != nil {
			return err
		}
		data["applied"] = ms()
		return nil
	case FaultCutOff:
		cut, heal := []string{"-n", d.Target.NS(), "route", "add", "blackhole", WorkerIP.String() + "/32"},
			[]string{"-n", d.Target.NS(), "route", "del", "blackhole", WorkerIP.String() + "/32"}
		data["how"] = "blackhole-route"
		if d.CutLink {
			cut, heal = []string{"-n", LabNS, "link", "set", d.Veth, "down"}, []string{"-n", LabNS, "link", "set", d.Veth, "up"}
			data["how"] = "link-down"
		}
		if err := ip(cut...); err != nil {
			return err
		}
		data["applied"] = ms()
		select {
		case <-d.Ctx.Done():
		case <-time.After(FaultCutFor):
		}
		if err := ip(heal...); err != nil {
			return err
		}
		data["healed"] = ms()
		return nil
	}
	return fmt.Errorf("unknown fault %q", name)
}
