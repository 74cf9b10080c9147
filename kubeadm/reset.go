package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/manifests"
)

// DefaultWatchdogWait bounds how long reset waits for the kubelet to stop
// the watchdog after its manifest is removed.
const DefaultWatchdogWait = 45 * time.Second

// ResetOptions describe one `vipctl reset`.
type ResetOptions struct {
	// VIP is the virtual server to delete.
	VIP netip.AddrPort
	// Modes are the VIP plumbings to remove (both by default).
	Modes []ipvs.Mode
	// Interface is the dummy interface of link mode.
	Interface    string
	ManifestPath string
	ModulesFile  string
	// StateFile is the watchdog's state file (its --state-file); "" reads
	// it from the manifest, else careconfig.DefaultStateFile. Its folder
	// goes too when nothing else is in it.
	StateFile string
	// SecretsDir is the join secrets' folder (DefaultSecretsDir): its
	// token and certificate-key files are removed, then the folder when
	// nothing else is in it; "" leaves it.
	SecretsDir string
	// WatchdogAddr is where a running watchdog serves its metrics, used
	// when the manifest does not say (its --metrics-addr); "" not to wait.
	WatchdogAddr string
	// WatchdogWait bounds the wait for the watchdog to stop;
	// DefaultWatchdogWait when 0.
	WatchdogWait time.Duration
	DryRun       bool
}

// Resetter undoes what `vipctl join` did on a node; kubeadm's part is left
// to `kubeadm reset`.
type Resetter struct {
	// Dataplane opens the IPVS table and plumbing; called only when IPVS
	// is loaded.
	Dataplane func() (Dataplane, error)
	// Plumbing opens the VIP plumbing alone, which needs no IPVS; called
	// when IPVS is not loaded, so that the interface, address and route
	// are removed all the same.
	Plumbing  func() (ipvs.Plumbing, error)
	Hosts     HostsEditor
	Files     Files
	Inspector Inspector
	Out       io.Writer
	Log       *zap.Logger
}

// Reset removes, in this order, the watchdog's static pod (and waits for
// the kubelet to stop it, so that it does not put the rules back), the
// virtual server, the VIP plumbing, vipctl's hosts line, the modules-load
// file, the watchdog's state file and the join secrets. It goes on after a failed step and returns every
// error. Running it again changes nothing.
func (r *Resetter) Reset(ctx context.Context, o ResetOptions) error {
	log := r.Log
	if log == nil {
		log = zap.NewNop()
	}
	if o.WatchdogWait <= 0 {
		o.WatchdogWait = DefaultWatchdogWait
	}
	if len(o.Modes) == 0 {
		o.Modes = []ipvs.Mode{ipvs.ModeLink, ipvs.ModeRoute}
	}
	say := func(format string, a ...any) {
		if r.Out != nil {
			fmt.Fprintf(r.Out, format+"\n", a...)
		}
	}
	if o.DryRun {
		say("dry run: nothing is changed")
	}
	var errs []error
	fail := func(step string, err error) {
		log.Error("reset step failed", zap.String("step", step), zap.Error(err))
		errs = append(errs, fmt.Errorf("%s: %w", step, err))
	}

	// 1. The watchdog, first: while it runs it repairs what is removed.
	watchdog := o.WatchdogAddr
	manifest, err := r.Files.ReadFile(o.ManifestPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		say("[manifest] %s: absent", o.ManifestPath)
	case err != nil:
		fail(StepManifest, err)
	default:
		if c, _, err := manifests.ReadCare(manifest); err != nil {
			log.Warn("cannot read the watchdog's metrics address from its manifest: waiting at the default", zap.String("address", watchdog), zap.Error(err))
		} else {
			watchdog = c.MetricsAddr
			if o.StateFile == "" {
				o.StateFile = c.StateFile
			}
		}
		if o.DryRun {
			say("[manifest] would remove %s", o.ManifestPath)
		} else if err := r.Files.Remove(o.ManifestPath); err != nil {
			fail(StepManifest, err)
		} else {
			say("[manifest] removed %s", o.ManifestPath)
		}
	}
	if watchdog != "" && !o.DryRun {
		r.waitWatchdog(ctx, watchdog, o.WatchdogWait, say, log)
	}

	// 2. The virtual server and the VIP plumbing. The plumbing needs no
	// IPVS: it is removed even when the module is not loaded.
	var plumbing ipvs.Plumbing
	var changes []ipvs.Change
	if !r.Inspector.IPVSAvailable() {
		say("[ipvs] IPVS is not loaded: no virtual server to delete")
		if r.Plumbing == nil {
			fail(StepIPVS, errors.New("IPVS is not loaded and no VIP plumbing can be opened"))
		} else if p, err := r.Plumbing(); err != nil {
			fail(StepIPVS, err)
		} else {
			plumbing = p
		}
	} else if dp, err := r.Dataplane(); err != nil {
		fail(StepIPVS, err)
	} else {
		plumbing = dp
		switch _, err := dp.Get(ctx, o.VIP); {
		case o.DryRun && err == nil:
			say("[ipvs] would delete the virtual server %s", o.VIP)
		case o.DryRun:
			say("[ipvs] no virtual server %s", o.VIP)
		default:
			c, err := dp.Delete(ctx, o.VIP)
			changes = append(changes, c...)
			if err != nil {
				fail(StepIPVS, err)
			}
		}
	}
	if plumbing != nil && o.DryRun {
		say("[ipvs] would remove the VIP %s from the interface %s and its route, if vipctl made them", o.VIP.Addr(), o.Interface)
	} else if plumbing != nil {
		for _, m := range o.Modes {
			c, err := plumbing.RemoveVIP(ctx, ipvs.VIPConfig{Mode: m, Interface: o.Interface, VIP: o.VIP.Addr()})
			changes = append(changes, c...)
			if err != nil {
				fail(StepIPVS, err)
			}
		}
		for _, c := range changes {
			log.Info("changed", zap.String("op", string(c.Op)), zap.String("kind", string(c.Kind)), zap.String("target", c.Target))
			say("[ipvs] %s", c)
		}
		if len(changes) == 0 {
			say("[ipvs] no virtual server %s, no VIP plumbing: nothing to remove", o.VIP)
		}
	}

	// 3. The hosts line.
	if o.DryRun {
		say("[hosts] would remove vipctl's line for %s from the hosts file, if any", ControlPlaneHost)
	} else if changed, err := r.Hosts.Remove(ctx, ControlPlaneHost); err != nil {
		fail(StepHosts, err)
	} else if changed {
		say("[hosts] removed vipctl's line for %s", ControlPlaneHost)
	} else {
		say("[hosts] no vipctl line for %s", ControlPlaneHost)
	}

	// 4. The modules-load file.
	if _, err := r.Files.ReadFile(o.ModulesFile); errors.Is(err, fs.ErrNotExist) {
		say("[modules] %s: absent", o.ModulesFile)
	} else if err != nil {
		fail(StepModules, err)
	} else if o.DryRun {
		say("[modules] would remove %s", o.ModulesFile)
	} else if err := r.Files.Remove(o.ModulesFile); err != nil {
		fail(StepModules, err)
	} else {
		say("[modules] removed %s (the loaded modules stay until reboot)", o.ModulesFile)
	}

	// 5. What the watchdog kept (once it is stopped) and the join secrets.
	if o.StateFile == "" {
		o.StateFile = careconfig.DefaultStateFile
	}
	r.removeFiles(StepState, []string{o.StateFile}, filepath.Dir(o.StateFile), o.DryRun, say, fail)
	if o.SecretsDir != "" {
		r.removeFiles(StepSecrets, []string{filepath.Join(o.SecretsDir, TokenFileName), filepath.Join(o.SecretsDir, CertificateKeyFileName)}, o.SecretsDir, o.DryRun, say, fail)
	}

	if o.DryRun {
		say("dry run: nothing was changed; run it without --dry-run to undo vipctl's part, and `kubeadm reset` to undo kubeadm's (vipctl never runs it)")
		return errors.Join(errs...)
	}
	say("vipctl's part is undone; run `kubeadm reset` to undo kubeadm's (vipctl never runs it)")
	return errors.Join(errs...)
}

// removeFiles removes files, then dir when it is empty (a folder holding
// something else is left, and said).
func (r *Resetter) removeFiles(step string, files []string, dir string, dryRun bool, say func(string, ...any), fail func(string, error)) {
	for _, f := range files {
		switch _, err := r.Files.ReadFile(f); {
		case errors.Is(err, fs.ErrNotExist):
			say("[%s] %s: absent", step, f)
		case err != nil:
			fail(step, err)
		case dryRun:
			say("[%s] would remove %s", step, f)
		default:
			if err := r.Files.Remove(f); err != nil {
				fail(step, err)
			} else {
				say("[%s] removed %s", step, f)
			}
		}
	}
	if dryRun {
		return
	}
	if err := r.Files.Remove(dir); err == nil {
		say("[%s] removed %s (empty)", step, dir)
	} else {
		say("[%s] left %s: %v", step, dir, err)
	}
}

// waitWatchdog polls the watchdog's metrics address until it stops
// answering or wait passes.
func (r *Resetter) waitWatchdog(ctx context.Context, addr string, wait time.Duration, say func(string, ...any), log *zap.Logger) {
	m, err := careconfig.ParseMetricsAddr(addr)
	if err != nil {
		log.Warn("not waiting for the watchdog", zap.Error(err))
		say("[manifest] warning: not waiting for the watchdog: %v", err)
		return
	}
	ap := m.Local()
	up := func() bool { return r.Inspector.Dial(ctx, ap, 500*time.Millisecond) == nil }
	if !up() {
		return
	}
	say("[manifest] waiting up to %s for the kubelet to stop the watchdog (%s answers)", wait, ap)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tk := time.NewTicker(250 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-wctx.Done():
			log.Warn("the watchdog still runs and may put the virtual server back", zap.Stringer("address", ap))
			say("[manifest] warning: the watchdog at %s still runs and may put the rules back; stop the kubelet (or run `kubeadm reset`) and run `vipctl reset` again", ap)
			return
		case <-tk.C:
			if !up() {
				say("[manifest] the watchdog stopped")
				return
			}
		}
	}
}
