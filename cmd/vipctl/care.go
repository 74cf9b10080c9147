package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care"
	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/discovery"
	"github.com/vipctl/vipctl/care/kubeconf"
	"github.com/vipctl/vipctl/care/probe"
	"github.com/vipctl/vipctl/internal/version"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/kernel"
)

// careKernel is what the watchdog needs from the kernel; *kernel.Kernel.
type careKernel interface {
	care.Dataplane
	care.Plumbing
	care.ConnCloser
	care.EventSource
	Close() error
}

// careProber probes masters and holds sentinel connections; *probe.Prober.
type careProber interface {
	care.Prober
	care.Sentinel
}

// careEnv is the outside world of `vipctl care`, replaceable in tests.
type careEnv struct {
	getenv       func(string) string
	detectNodeIP func(context.Context, netip.Addr) (netip.Addr, error)
	// isLocal reports whether an address is the node's own (a master's
	// own apiserver); nil: no master is local.
	isLocal   func(context.Context, netip.Addr) (bool, error)
	newKernel func(*zap.Logger) (careKernel, error)
	newProber func(probe.Config) (careProber, error)
	serve     func(context.Context, string, http.Handler, *zap.Logger) error
}

func defaultCareEnv() careEnv {
	return careEnv{
		getenv:       os.Getenv,
		detectNodeIP: kernel.DetectNodeIP,
		isLocal:      kernel.IsLocalAddr,
		newKernel:    func(l *zap.Logger) (careKernel, error) { return kernel.New(l) },
		newProber:    func(c probe.Config) (careProber, error) { return probe.New(c) },
		serve:        care.Serve,
	}
}

// careFlags are the flags of `vipctl care`: every watchdog flag, with
// lvscare's names.
type careFlags struct {
	cfg *careconfig.Flags
	fs  *pflag.FlagSet
}

func (f *careFlags) register(fs *pflag.FlagSet) {
	f.cfg, f.fs = careconfig.NewFlags(careconfig.Default()), fs
	f.cfg.Register(fs)
	f.cfg.RegisterLvscare(fs)
}

// careSetup is the validated outcome of the flags.
type careSetup struct {
	cfg       care.Config
	probe     probe.Config
	sentinel  bool
	once      bool
	lvscare   bool
	livezPath string
	// metricsAddr is where /metrics, /status... are served; "" for none.
	metricsAddr string
	warnings    []string
	// notes are logged at info level: a setting's consequence, not a
	// problem.
	notes []string
	// creds are the probes' credentials from --kubeconfig, nil without.
	creds *probe.Credentials
	// kubeconfig, when set, is the kubeconfig masters are discovered
	// through (with creds), stateFile where they are kept ("" nowhere),
	// insecure whether the apiservers' certificates go unverified.
	kubeconfig, stateFile string
	insecure              bool
}

// build validates every flag and reads the TLS files; it changes nothing.
// Errors name the flag and the value. The node IP is detected last, when
// everything else is valid.
func (f *careFlags) build(ctx context.Context, env careEnv) (careSetup, error) {
	var s careSetup
	c, warnings, err := f.cfg.Config()
	if err != nil {
		return s, err
	}
	s.warnings = warnings
	s.lvscare = f.cfg.Lvscare()
	if err := buildProbe(c, &s); err != nil {
		return s, err
	}
	s.metricsAddr, s.once, s.livezPath = c.MetricsAddr, c.Once, c.LivenessPath
	s.sentinel = c.Sentinel && s.probe.Scheme != probe.TCP
	if !c.NodeIP.IsValid() {
		if c.NodeIP, err = resolveNodeIP(ctx, env, c.Masters[0].Addr()); err != nil {
			return s, err
		}
	}
	local, err := localMaster(ctx, env, c.Masters)
	if err != nil {
		return s, err
	}
	if local.IsValid() && c.Mode == careconfig.ModeRoute {
		return s, fmt.Errorf("--mode %s: --master %s is this node's own apiserver; %s", c.Mode, local, ipvs.ErrRouteModeLocal)
	}
	if local.IsValid() && c.Scheduler == careconfig.DefaultScheduler {
		// rr ignores weights: on a master the preference needs wrr.
		c.Scheduler = ipvs.MasterScheduler
		s.warnings = append(s.warnings, fmt.Sprintf("--master %s is this node's own apiserver: scheduler %s instead of %s, so that it gets the new connections while it is healthy", local, ipvs.MasterScheduler, careconfig.DefaultScheduler))
	}
	if s.cfg, err = care.FromConfig(c, version.Get().Version); err != nil {
		return s, err
	}
	s.cfg.Health.Local, s.cfg.Health.LocalWeight = local, ipvs.LocalWeight
	return s, nil
}

// localMaster returns the master whose address is one of this node's (on
// a master node: its own apiserver), the first one if several; none on a
// worker.
func localMaster(ctx context.Context, env careEnv, masters []netip.AddrPort) (netip.AddrPort, error) {
	if env.isLocal == nil {
		return netip.AddrPort{}, nil
	}
	for _, m := range masters {
		ok, err := env.isLocal(ctx, m.Addr())
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("--master %s: is it this node's own apiserver: %w", m, err)
		}
		if ok {
			return m, nil
		}
	}
	return netip.AddrPort{}, nil
}

// resolveNodeIP finds the node IP when --node-ip is not given: from
// lvscare's variable, else from the route to the first master.
func resolveNodeIP(ctx context.Context, env careEnv, firstMaster netip.Addr) (netip.Addr, error) {
	if v := strings.TrimSpace(env.getenv(careconfig.LvscareNodeIPEnv)); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return a, fmt.Errorf("$%s %q: not an IP address (give --node-ip)", careconfig.LvscareNodeIPEnv, v)
		}
		return a.Unmap(), nil
	}
	a, err := env.detectNodeIP(ctx, firstMaster)
	if err != nil {
		return a, fmt.Errorf("--node-ip: not given, and detecting it from the route to %s failed: %w", firstMaster, err)
	}
	return a, nil
}

// buildProbe makes the probe's configuration and loads the TLS files.
func buildProbe(c careconfig.Config, s *careSetup) error {
	s.probe = probe.Config{Scheme: probe.Scheme(c.HealthScheme), Path: c.HealthPath, Statuses: c.HealthStatuses,
		Timeout: c.EffectiveTimeout(), UserAgent: "vipctl-care/" + version.Get().Version, ReuseFor: c.ProbeReuse,
		HTTP2: c.ProbeHTTP2, ReadyEvery: c.ReadyEvery}
	if c.HealthScheme != careconfig.HTTPS {
		return nil
	}
	insecure := c.InsecureSkipVerify
	if !insecure && c.CAFile == careconfig.DefaultCAFile && s.lvscare {
		if _, err := os.Stat(c.CAFile); errors.Is(err, fs.ErrNotExist) {
			// lvscare never verified certificates and sealos does not
			// mount the CA into its pod: keep such a manifest working.
			s.warnings = append(s.warnings, fmt.Sprintf("lvscare command line and no %s: not verifying the apiservers' certificates, as lvscare did (mount the CA to verify them)", c.CAFile))
			insecure = true
		}
	}
	if c.Kubeconfig == careconfig.DefaultKubeconfig {
		if _, err := os.Stat(c.Kubeconfig); errors.Is(err, fs.ErrNotExist) {
			// Not a kubeadm node, or a pod that does not mount it (an
			// lvscare manifest): probe as before.
			s.notes = append(s.notes, fmt.Sprintf("no %s (the default --kubeconfig): probing anonymously and discovering no masters; mount it, or pass --kubeconfig=\"\" to say so", c.Kubeconfig))
			c.Kubeconfig = ""
		}
	}
	if c.Kubeconfig != "" {
		// The kubeconfig's client certificate and CA (--ca-file when it
		// has none), re-read when they change: the kubelet rotates its
		// certificate. Checked at most once per probe interval.
		creds, err := probe.NewCredentials(kubeconf.Loader(c.Kubeconfig, c.CAFile), c.Interval, nil)
		if err != nil {
			return err
		}
		s.creds, s.probe.TLS = creds, creds.TLSConfig(insecure)
		s.kubeconfig, s.stateFile, s.insecure = c.Kubeconfig, c.StateFile, insecure
		return nil
	}
	var roots *x509.CertPool
	if !insecure {
		p, err := probe.LoadCA(c.CAFile)
		if err != nil {
			hint := ""
			if errors.Is(err, fs.ErrNotExist) {
				hint = " (mount the cluster CA into the pod, or pass --insecure-skip-verify)"
			}
			return fmt.Errorf("--ca-file %q: %w%s", c.CAFile, err, hint)
		}
		roots = p
	}
	var certs []tls.Certificate
	if c.CertFile != "" {
		cert, err := probe.LoadClientCert(c.CertFile, c.KeyFile)
		if err != nil {
			return fmt.Errorf("--cert-file %q/--key-file %q: %w", c.CertFile, c.KeyFile, err)
		}
		certs = append(certs, cert)
	}
	s.probe.TLS = probe.TLSConfig(roots, certs, insecure)
	return nil
}

func newCareCmd(a *app) *cobra.Command { return newCareCmdWith(a, defaultCareEnv()) }

func newCareCmdWith(a *app, env careEnv) *cobra.Command {
	var f careFlags
	cmd := &cobra.Command{
		Use:   "care --vip VIP[:PORT] --master IP[:PORT] [--master ...]",
		Short: "Health-check the masters and keep the IPVS virtual server in line (the watchdog)",
		Long: `care is vipctl's watchdog, run as a static pod on every node. It probes each
master's kube-apiserver (HTTPS GET of --health-path, verified against the
cluster CA), takes a master out of the virtual server after --fall failed
probes (weight 0, its connections reset, deleted once drained) and puts it
back after --rise good ones. It re-asserts the virtual server, its real
servers and the VIP plumbing every --interval, on every netlink event and
polls the IPVS table every --resync-period, so a flush is repaired at once.
When every master is down it keeps them all (fail-open). On SIGTERM it
leaves the kernel's rules in place; 'vipctl ipvs delete' removes them.

lvscare's flag names are accepted (--vs, --rs, --health-schem,
--health-insecure-skip-verify, --health-timeout, --ip, --iface, --run-once;
--interval in seconds), so a sealos manifest keeps working; see docs/care.md.`,
		Example: `  vipctl care --vip 10.103.97.2:6443 --master 192.0.2.11 --master 192.0.2.12 --master 192.0.2.13
  vipctl care --vs 10.103.97.2:6443 --rs 192.0.2.11:6443 --rs 192.0.2.12:6443 --health-path /healthz --health-schem https`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: boolean flags take their value as --flag=true", args[0])
			}
			s, err := f.build(cmd.Context(), env)
			if err != nil {
				return err
			}
			return runCare(cmd.Context(), a.log, env, s)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// runCare starts the watchdog from a validated setup.
func runCare(ctx context.Context, log *zap.Logger, env careEnv, s careSetup) error {
	if s.creds != nil {
		s.creds.OnError(func(err error) {
			log.Warn("cannot reload the probes' credentials: keeping the ones in use", zap.Error(err))
		})
		s.creds.OnReload(func() {
			log.Info("probes' credentials reloaded: a file changed", zap.String("kubeconfig", s.kubeconfig))
		})
	}
	for _, w := range s.warnings {
		log.Warn(w)
	}
	for _, n := range s.notes {
		log.Info(n)
	}
	p, err := env.newProber(s.probe)
	if err != nil {
		return err
	}
	k, err := env.newKernel(log)
	if err != nil {
		return err
	}
	defer k.Close()
	d := care.Deps{Dataplane: k, Plumbing: k, Closer: k, Events: k, Prober: p, Log: log}
	if s.probe.Scheme != probe.TCP && s.livezPath != "" {
		lc := s.probe
		lc.Path, lc.Statuses = s.livezPath, []int{200}
		lp, err := env.newProber(lc)
		if err != nil {
			return err
		}
		d.Liveness = lp
	}
	if s.sentinel && !s.once {
		d.Sentinel = p
	}
	if s.kubeconfig != "" && !s.once {
		w, err := newDiscovery(s)
		if err != nil {
			return err
		}
		d.Discovery = w
		if s.stateFile != "" {
			d.Store = care.FileStore{Path: s.stateFile}
		}
	}
	w, err := care.New(s.cfg, d)
	if err != nil {
		return err
	}
	if s.once {
		return w.Once(ctx)
	}
	if s.metricsAddr != "" {
		if err := env.serve(ctx, s.metricsAddr, w.Handler(), log); err != nil {
			return err
		}
	}
	return w.Run(ctx)
}

// newDiscovery watches the masters through the kubeconfig's server (the
// VIP), with the probes' credentials, so they rotate together.
func newDiscovery(s careSetup) (*discovery.Watcher, error) {
	kc, err := kubeconf.Load(s.kubeconfig)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     s.creds.TLSConfig(s.insecure),
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}
	return &discovery.Watcher{Server: kc.Server, Client: &http.Client{Transport: tr},
		UserAgent: "vipctl-care/" + version.Get().Version}, nil
}
