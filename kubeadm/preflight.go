package kubeadm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vipctl/vipctl/ipvs"
)

// KubeadmDefaultServiceSubnet is kubeadm's own default service subnet. It
// holds vipctl's (and sealos') default VIP 10.103.97.2.
const KubeadmDefaultServiceSubnet = "10.96.0.0/12"

// preflight checks the node before anything is changed and returns
// warnings, or an error listing every problem found. On a worker and a
// master alike it loads ip_vs when needed (not in a dry run), opens the
// dataplane and picks the real servers the join's one-shot IPVS apply
// uses: the masters that accept a connection now, this node excluded (the
// watchdog adds the others once they are healthy).
func (r *joinRun) preflight(ctx context.Context) (warnings []string, err error) {
	o := r.o
	var problems []error
	problem := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	warn := func(format string, a ...any) { warnings = append(warnings, fmt.Sprintf(format, a...)) }
	ok := func(format string, a ...any) { r.say("[preflight] "+format, a...) }

	if p, err := r.j.Runner.LookPath(o.Kubeadm); err != nil {
		problem("--kubeadm %q: not found: %v", o.Kubeadm, err)
	} else {
		ok("kubeadm: %s", p)
	}

	if ifs, err := r.j.Inspector.InterfacesWith(ctx, o.VIP.NodeIP); err != nil {
		problem("--node-ip %s: %v", o.VIP.NodeIP, err)
	} else if len(ifs) == 0 {
		problem("--node-ip %s: not an address of this node", o.VIP.NodeIP)
	} else {
		ok("node IP %s on %s", o.VIP.NodeIP, strings.Join(ifs, ", "))
	}

	reachable, unreachable := r.dialMasters(ctx)
	for _, u := range unreachable {
		warn("master %s does not accept connections (%v): left out of the virtual server for now; the watchdog adds it once it is healthy", u.addr, u.err)
	}
	if len(reachable) == 0 {
		problem("--master: no master accepts a connection on its port (tried %s)", realServers(o.Service))
	} else {
		ok("masters accepting connections: %s", joinAddrs(reachable))
	}

	// A master joins through the VIP like a worker, over every master
	// that accepts connections (not only the first). Its own apiserver is
	// not up yet: the watchdog adds it later.
	r.desired = ipvs.Desired{Service: o.Service.Service}
	for _, rs := range o.Service.RealServers {
		if slices.Contains(reachable, rs.Addr) && rs.Addr.Addr() != o.VIP.NodeIP {
			r.desired.RealServers = append(r.desired.RealServers, rs)
		}
	}
	if len(reachable) > 0 && len(r.desired.RealServers) == 0 {
		problem("--master: only this node (%s) accepts connections: a master joins through another one", o.VIP.NodeIP)
	}
	r.checkSubnets(problem, warn)
	if r.checkIPVS(ctx, problem, warn) {
		r.checkVIPFree(ctx, problem)
	}
	if len(problems) > 0 {
		return warnings, errors.Join(problems...)
	}
	return warnings, nil
}

type unreachableMaster struct {
	addr netip.AddrPort
	err  error
}

// dialMasters connects to every master at once, each bounded by the dial
// timeout, and returns the reachable ones in the order given.
func (r *joinRun) dialMasters(ctx context.Context) ([]netip.AddrPort, []unreachableMaster) {
	rss := r.o.Service.RealServers
	errs := make([]error, len(rss))
	var wg sync.WaitGroup
	for i, rs := range rss {
		wg.Go(func() { errs[i] = r.j.Inspector.Dial(ctx, rs.Addr, r.o.DialTimeout) })
	}
	wg.Wait()
	var ok []netip.AddrPort
	var bad []unreachableMaster
	for i, rs := range rss {
		if errs[i] != nil {
			bad = append(bad, unreachableMaster{rs.Addr, errs[i]})
			continue
		}
		ok = append(ok, rs.Addr)
	}
	return ok, bad
}

func joinAddrs(as []netip.AddrPort) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// checkSubnets refuses a VIP inside the pod subnet, and inside the service
// subnet unless the user accepted that risk. With no service subnet given
// it warns when the VIP lies inside kubeadm's default one (vipctl's default
// VIP does), as the cluster may well use it.
func (r *joinRun) checkSubnets(problem func(string, ...any), warn func(string, ...any)) {
	vip := r.o.VIP.VIP
	if len(r.o.ServiceSubnets) == 0 && netip.MustParsePrefix(KubeadmDefaultServiceSubnet).Contains(vip) {
		warn("no --service-subnet given, and the VIP %s lies inside kubeadm's default service subnet %s: if the cluster uses it, a Service given that ClusterIP would make kube-proxy take over the VIP's port; pass the cluster's --service-subnet to check, or pick a --vip outside it",
			vip, KubeadmDefaultServiceSubnet)
	}
	for _, p := range r.o.PodSubnets {
		if p.Contains(vip) {
			problem("--pod-subnet %s: holds the VIP %s; a pod given that address would be unreachable from this node: pick a --vip outside the pod and service subnets", p, vip)
		}
	}
	for _, p := range r.o.ServiceSubnets {
		if !p.Contains(vip) {
			continue
		}
		why := fmt.Sprintf("--service-subnet %s: holds the VIP %s; a Service given that ClusterIP would make kube-proxy bind it and take over the VIP's port", p, vip)
		if p.String() == KubeadmDefaultServiceSubnet {
			why += " (10.96.0.0/12 is kubeadm's default, 10.103.97.2 vipctl's and sealos')"
		}
		if r.o.AllowVIPInServiceSubnet {
			warn("%s; going on as --allow-vip-in-service-subnet asks (see docs/join.md)", why)
			continue
		}
		problem("%s: pick a --vip outside it (and add it to kube-proxy with `vipctl kube-proxy exclude`), or accept the risk with --allow-vip-in-service-subnet (see docs/join.md)", why)
	}
}

// checkIPVS makes sure IPVS is loaded, loading ip_vs with modprobe if
// needed (a dry run only says it would), and opens the dataplane. It
// reports whether the IPVS table can be read.
func (r *joinRun) checkIPVS(ctx context.Context, problem func(string, ...any), warn func(string, ...any)) bool {
	if !r.j.Inspector.IPVSAvailable() {
		if r.o.DryRun {
			warn("IPVS is not loaded: the join would run `modprobe ip_vs`")
			return false
		}
		var out bytes.Buffer
		path, err := r.j.Runner.LookPath("modprobe")
		if err == nil {
			err = r.j.Runner.Run(ctx, path, []string{"ip_vs"}, &out)
		}
		if err != nil || !r.j.Inspector.IPVSAvailable() {
			problem("IPVS is not available and `modprobe ip_vs` failed (%v): %s; the kernel needs CONFIG_IP_VS", err, strings.TrimSpace(out.String()))
			return false
		}
		r.say("[preflight] loaded the ip_vs module")
	} else {
		r.say("[preflight] IPVS is loaded")
	}
	dp, err := r.j.Dataplane()
	if err != nil {
		problem("IPVS: %v", err)
		return false
	}
	r.dp = dp
	return true
}

// checkVIPFree refuses a VIP that something else uses: an address of
// another interface, or an IPVS virtual server vipctl would not own.
func (r *joinRun) checkVIPFree(ctx context.Context, problem func(string, ...any)) {
	o := r.o
	vip := o.Service.Service.VIP
	free := true
	ifs, err := r.j.Inspector.InterfacesWith(ctx, vip.Addr())
	if err != nil {
		problem("--vip %s: list addresses: %v", vip.Addr(), err)
		return
	}
	for _, name := range ifs {
		if o.VIP.Mode == ipvs.ModeLink && name == o.VIP.Interface {
			continue // vipctl's own interface: a previous run or the watchdog
		}
		free = false
		problem("--vip %s: already an address of interface %s: the VIP must be an address nothing else uses", vip.Addr(), name)
	}
	svcs, err := r.j.Inspector.VirtualServers(ctx, vip.Addr())
	if err != nil {
		problem("--vip %s: list IPVS virtual servers: %v", vip.Addr(), err)
		return
	}
	for _, s := range svcs {
		if s != vip {
			free = false
			problem("--vip %s: IPVS already has a virtual server %s on that address (a kube-proxy ClusterIP?): pick another --vip", vip.Addr(), s)
			continue
		}
		st, err := r.dp.Get(ctx, vip)
		if err != nil {
			problem("--vip %s: read the virtual server: %v", vip, err)
			continue
		}
		for _, rs := range st.RealServers {
			if !slices.ContainsFunc(o.Service.RealServers, func(m ipvs.RealServer) bool { return m.Addr == rs.Addr }) {
				free = false
				problem("--vip %s: IPVS already has this virtual server with real server %s, which is not a --master: it is not vipctl's for these masters", vip, rs.Addr)
			}
		}
	}
	if free {
		r.say("[preflight] VIP %s: not used by anything else", vip.Addr())
	}
}

// finishPreflight ends the preflight of init and migrate: it checks IPVS
// and, when that works, that the VIP is free, prints the warnings, and
// returns every problem found as one error of the run's preflight step.
func (r *joinRun) finishPreflight(ctx context.Context, problems []error, warnings []string) error {
	problem := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	warn := func(format string, a ...any) { warnings = append(warnings, fmt.Sprintf(format, a...)) }
	if r.checkIPVS(ctx, problem, warn) {
		r.checkVIPFree(ctx, problem)
	}
	for _, w := range warnings {
		r.log.Warn(w)
		r.say("[preflight] warning: %s", w)
	}
	if len(problems) > 0 {
		return &JoinError{Op: r.op, Step: StepPreflight, Err: errors.Join(problems...)}
	}
	return nil
}
