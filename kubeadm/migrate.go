package kubeadm

import (
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"

	"github.com/vipctl/vipctl/ipvs"
)

// Steps of MigrateMaster besides the join's.
const (
	// StepVerify connects to the VIP before the hosts file is switched.
	StepVerify = "verify"
)

// MigrateMaster turns a master joined the old way (apiserver.cluster.local
// mapped to its own address, no VIP) into the new design with nothing
// interrupted: the virtual server (this master's own apiserver preferred
// with ipvs.LocalWeight, the other masters that accept connections) and
// the VIP plumbing first, then the modules-load file and the watchdog's
// manifest, then a connection through the VIP, and the hosts file last,
// in one atomic write. Until that write the node's clients keep using the
// name's old address; after it, new connections go through the VIP to the
// same local apiserver. When a step fails, every change is undone (the
// run's one rollback stack) and a *JoinError (Op "migrate") tells the step.
// o is a master's join options (ControlPlane); kubeadm is not run.
func (j *Joiner) MigrateMaster(ctx context.Context, o JoinOptions) error {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	o.ControlPlane = true
	if o.Kubeadm == "" {
		o.Kubeadm = "kubeadm" // not run; Validate wants one
	}
	if err := o.Validate(); err != nil {
		return &JoinError{Op: "migrate", Step: StepValidate, Err: err}
	}
	self := slices.IndexFunc(o.Service.RealServers, func(rs ipvs.RealServer) bool { return rs.Addr.Addr() == o.VIP.NodeIP })
	if self < 0 {
		return &JoinError{Op: "migrate", Step: StepValidate,
			Err: fmt.Errorf("--master: none is this master's own address %s: list it (its apiserver is the preferred real server)", o.VIP.NodeIP)}
	}
	log := j.Log
	if log == nil {
		log = zap.NewNop()
	}
	r := &joinRun{j: j, o: o, log: log, op: "migrate"}
	r.say("migrating the master %s to the VIP %s (apiserver.cluster.local -> the VIP, this master's apiserver preferred)%s", o.VIP.NodeIP, o.Service.Service, dryNote(o.DryRun))

	var problems []error
	problem := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	var warnings []string
	warn := func(format string, a ...any) { warnings = append(warnings, fmt.Sprintf(format, a...)) }
	if ifs, err := j.Inspector.InterfacesWith(ctx, o.VIP.NodeIP); err != nil {
		problem("--node-ip %s: %v", o.VIP.NodeIP, err)
	} else if len(ifs) == 0 {
		problem("--node-ip %s: not an address of this node", o.VIP.NodeIP)
	}
	if _, err := j.Hosts.Snapshot(); err != nil {
		problem("hosts file: %v", err)
	}
	reachable, unreachable := r.dialMasters(ctx)
	for _, u := range unreachable {
		warn("master %s does not accept connections (%v): left out of the virtual server for now; the watchdog adds it once it is healthy", u.addr, u.err)
	}
	local := o.Service.RealServers[self]
	if !slices.Contains(reachable, local.Addr) {
		problem("--master %s: this master's own apiserver does not accept connections: migrate while it runs, so that nothing is interrupted", local.Addr)
	}
	r.desired = ipvs.Desired{Service: o.Service.Service}
	for _, rs := range o.Service.RealServers {
		switch {
		case rs.Addr == local.Addr:
			r.desired.RealServers = append(r.desired.RealServers, ipvs.RealServer{Addr: rs.Addr, Weight: ipvs.LocalWeight})
		case slices.Contains(reachable, rs.Addr):
			r.desired.RealServers = append(r.desired.RealServers, rs)
		}
	}
	r.checkSubnets(problem, warn)
	if err := r.finishPreflight(ctx, problems, warnings); err != nil {
		return err
	}

	// The VIP first: nothing uses it yet, so nothing is interrupted.
	if err := r.applyIPVS(ctx); err != nil {
		return err
	}
	if err := r.writeFile(ctx, StepModules, o.ModulesFile, ModulesFileContent(o.Service.Service.Scheduler), ModulesFileMode); err != nil {
		return err
	}
	if err := r.writeFile(ctx, StepManifest, o.ManifestPath, o.Manifest, ManifestFileMode); err != nil {
		return err
	}
	// The VIP must answer before the name is moved onto it.
	if o.DryRun {
		r.say("[%s] would connect to %s", StepVerify, o.Service.Service.VIP)
	} else if err := j.Inspector.Dial(ctx, o.Service.Service.VIP, o.DialTimeout); err != nil {
		return r.fail(ctx, StepVerify, fmt.Errorf("connect to the VIP %s: %w; the hosts file was not touched", o.Service.Service.VIP, err), "")
	} else {
		r.say("[%s] %s accepts connections", StepVerify, o.Service.Service.VIP)
	}
	// Last, in one atomic write: new connections go through the VIP.
	if err := r.setHosts(ctx, o.VIP.VIP, StepHosts); err != nil {
		return err
	}
	if o.DryRun {
		r.say("dry run: nothing was changed")
		return nil
	}
	r.say("done: %s maps to the VIP %s, which prefers this master's apiserver %s; the watchdog starts from %s. Processes that cached the old address (hostNetwork pods' copy of /etc/hosts) move at their next restart; until then they reach the same apiserver directly.",
		ControlPlaneHost, o.Service.Service, local.Addr, o.ManifestPath)
	return nil
}
