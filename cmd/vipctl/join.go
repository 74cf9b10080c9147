//go:build !watchdog

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/kubeadm"
	"github.com/vipctl/vipctl/manifests"
)

// DefaultManifestDir is where the kubelet of a kubeadm node reads static pods.
const DefaultManifestDir = "/etc/kubernetes/manifests"

// joinFlags are `vipctl join`'s flags besides the service flags.
type joinFlags struct {
	svc            serviceFlags
	controlPlane   bool
	kubeadm        string
	dryRun         bool
	serviceSubnet  string
	podSubnet      string
	allowInService bool
	image          string
	careFlags      []string
	hostsFile      string
	manifestDir    string
	modulesFile    string
	dialTimeout    time.Duration
	tokenFile      string
	certKeyFile    string
	joinConfig     string
}

func newJoinCmd(a *app) *cobra.Command {
	return newJoinCmdWith(func(cmd *cobra.Command, o kubeadm.JoinOptions, hostsFile string) error {
		k := &lazyKernel{log: a.log}
		defer k.Close()
		j := osJoiner(a, cmd, hostsFile)
		j.Dataplane = k.Dataplane
		return j.Join(cmd.Context(), o)
	})
}

// osJoiner is the Joiner of `vipctl join` and `vipctl init` on this machine:
// the hosts file at hostsFile, the real files, kubeadm and system, output to
// the command's streams. join adds the kernel's dataplane.
func osJoiner(a *app, cmd *cobra.Command, hostsFile string) *kubeadm.Joiner {
	return &kubeadm.Joiner{
		Hosts:         hosts.File{Path: hostsFile},
		Files:         kubeadm.OSFiles{},
		Runner:        kubeadm.ExecRunner{},
		Inspector:     kubeadm.System{},
		Out:           cmd.OutOrStdout(),
		KubeadmOutput: cmd.ErrOrStderr(),
		Log:           a.log,
		RBAC: func(ctx context.Context, kc string) error {
			return applyRBAC(ctx, a, cmd.OutOrStdout(), kc, 30*time.Second)
		},
	}
}

// newJoinCmdWith builds `vipctl join` running join with the validated
// options; tests replace join.
func newJoinCmdWith(join func(cmd *cobra.Command, o kubeadm.JoinOptions, hostsFile string) error) *cobra.Command {
	var f joinFlags
	cmd := &cobra.Command{
		Use:   "join --master IP[:PORT]... [--control-plane] [flags] -- KUBEADM-JOIN-FLAGS...",
		Short: "Join this node with kubeadm through the VIP (worker) or as a master",
		Long: `Join this node to the cluster: "kubeadm join" through apiserver.cluster.local, with
vipctl's VIP in front of the masters.

On a worker, in order: preflight checks (IPVS loadable, the VIP unused, outside
the pod and service subnets when given, masters accepting connections), the
hosts file maps ` + kubeadm.ControlPlaneHost + ` to the VIP, the IPVS virtual server and
the VIP are set up once (the watchdog keeps them from then on), the watchdog's
static pod and ` + kubeadm.DefaultModulesFile + ` are written, and finally
"kubeadm join ` + kubeadm.ControlPlaneHost + `:PORT KUBEADM-JOIN-FLAGS...".

With --control-plane (a master): the same, through the VIP over every --master
that accepts connections (not only the first), with scheduler wrr unless
--scheduler is given, and the watchdog's static pod is written after
"kubeadm join ... --control-plane" (whose preflight wants an empty manifest
folder). It lists this master too: the watchdog adds its apiserver once it is
healthy, with a weight that sends this node's new connections to it while it
is up. The hosts file is written once and never rewritten.

Secrets: --token-file and --certificate-key-file read the bootstrap token and
the certificate key from files (mode 0600; "vipctl init" writes them). Then, or
with --config (a JoinConfiguration whose endpoint vipctl sets), kubeadm gets a
JoinConfiguration in a private temporary file (0600, removed afterwards) built
from the flags after --, and no secret is on any command line. --token and
--certificate-key after -- still work, with a warning: every local user can
read them in /proc while the join runs.

When a step fails, what this run changed is undone and the error names the
step, with kubeadm's output. Token and certificate key are never printed.
"vipctl reset" undoes a successful join (kubeadm's part: "kubeadm reset").`,
		Example: `  vipctl join --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 \
    --token-file /etc/kubernetes/vipctl-join/token -- --discovery-token-ca-cert-hash sha256:...
  vipctl join --control-plane --master 192.168.0.2 --master 192.168.0.3 --node-ip 192.168.0.4 \
    --token-file /etc/kubernetes/vipctl-join/token --certificate-key-file /etc/kubernetes/vipctl-join/certificate-key -- \
    --discovery-token-ca-cert-hash sha256:...
  vipctl join --config join.yaml --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4
  vipctl join --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 -- \
    --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:...
  vipctl join --control-plane --master 192.168.0.2 --master 192.168.0.3 --node-ip 192.168.0.4 -- \
    --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:... --certificate-key ...
  vipctl join --dry-run --master 192.168.0.2 -- --token ... --discovery-token-ca-cert-hash sha256:...`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd, args)
			if err != nil {
				return err
			}
			return join(cmd, o, f.hostsFile)
		},
	}
	// The watchdog's flags: the service's, its tuning and the pod's.
	f.svc.register(cmd, append(append([]string(nil), careconfig.TuningFlags...), careconfig.PodFlags...)...)
	fs := cmd.Flags()
	fs.BoolVar(&f.controlPlane, "control-plane", false, "join a master: through the VIP like a worker (every --master that accepts connections), kubeadm join --control-plane, then the watchdog's manifest, which adds this master's own apiserver, preferred")
	fs.StringVar(&f.kubeadm, "kubeadm", "kubeadm", "the kubeadm command, a name in PATH or a path")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print every step and file the join would write, and change nothing")
	fs.StringVar(&f.serviceSubnet, "service-subnet", "", "the cluster's service subnet, CIDR[,CIDR]: the VIP must be outside it (default: unknown, not checked)")
	fs.StringVar(&f.podSubnet, "pod-subnet", "", "the cluster's pod subnet, CIDR[,CIDR]: the VIP must be outside it (default: unknown, not checked)")
	fs.BoolVar(&f.allowInService, "allow-vip-in-service-subnet", false, "only warn when --service-subnet holds the VIP (e.g. kubeadm's default 10.96.0.0/12 with 10.103.97.2; see docs/join.md)")
	f.registerNodeFiles(fs, "preflight: bound of the TCP connect to each master")
	fs.StringVar(&f.tokenFile, "token-file", "", "read the bootstrap token from this file (mode 0600), instead of --token after --")
	fs.StringVar(&f.certKeyFile, "certificate-key-file", "", "read the certificate key of a master's join from this file (mode 0600), instead of --certificate-key after --")
	fs.StringVar(&f.joinConfig, "config", "", "a kubeadm JoinConfiguration to join with; vipctl sets discovery.bootstrapToken.apiServerEndpoint, flags after -- and the secret files fill it in")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (kubeadm's own flags go after --, e.g. vipctl join --master IP -- --token ...)", err)
	})
	return cmd
}

// registerNodeFiles registers the flags of what join and migrate-master
// write on the node (image and watchdog flags of the manifest, hosts file,
// manifest folder, modules file) and the bound of their connection checks.
func (f *joinFlags) registerNodeFiles(fs *pflag.FlagSet, dialTimeoutUsage string) {
	fs.StringVar(&f.image, "image", "", "watchdog image holding vipctl at "+manifests.BinaryPath+" (default "+manifests.DefaultImage()+")")
	fs.StringArrayVar(&f.careFlags, "care-flag", nil, "a further watchdog flag for the manifest, --flag=value (e.g. --care-flag=--hold-down=10s), checked as the watchdog checks it; repeat")
	fs.StringVar(&f.hostsFile, "hosts-file", hosts.DefaultPath, "hosts file to edit")
	fs.StringVar(&f.manifestDir, "manifest-dir", DefaultManifestDir, "the kubelet's static pod folder; the watchdog's manifest is "+filepath.Base(manifests.DefaultPath))
	fs.StringVar(&f.modulesFile, "modules-file", kubeadm.DefaultModulesFile, "modules-load.d file that loads the IPVS modules at boot")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", kubeadm.DefaultDialTimeout, dialTimeoutUsage)
}

// options validates the flags and builds the join's options. Nothing is
// changed; the node IP may be detected from the routing table.
func (f *joinFlags) options(cmd *cobra.Command, args []string) (kubeadm.JoinOptions, error) {
	var o kubeadm.JoinOptions
	if dash := cmd.ArgsLenAtDash(); dash != 0 && len(args) > 0 {
		return o, fmt.Errorf("unexpected argument %q: kubeadm's arguments go after --", kubeadm.RedactArgs(args[:1])[0])
	}
	o.KubeadmArgs = args
	c, _, err := f.svc.cfg.Config()
	if err != nil {
		return o, err
	}
	controlPlane := f.controlPlane || hasArg(args, "--control-plane")
	if controlPlane && !c.NodeIP.IsValid() {
		// A master's own address: kubeadm's advertise address when given.
		if v := flagValue(args, "--apiserver-advertise-address"); v != "" {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return o, fmt.Errorf("--apiserver-advertise-address %q: not an IP address (give --node-ip)", v)
			}
			c.NodeIP = a.Unmap()
			if err := c.ValidateNodeIP(); err != nil {
				return o, fmt.Errorf("--apiserver-advertise-address %s: %w", a, err)
			}
		}
	}
	if controlPlane && !f.svc.cfg.Changed("scheduler") {
		// A master prefers its own apiserver by weight: wrr (see ipvs.LocalWeight).
		c.Scheduler = ipvs.MasterScheduler
	}
	// The watchdog's configuration, checked before anything is detected.
	care, err := c.ApplyArgs(f.careFlags, f.svc.cfg.Changed, "--care-flag")
	if err != nil {
		return o, err
	}
	if err := care.ValidateForPod(); err != nil {
		return o, fmt.Errorf("watchdog manifest: %w", err)
	}
	c = care
	for _, w := range care.Warnings() {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	p, err := serviceOf(cmd.Context(), c)
	if err != nil {
		return o, err
	}
	o.Service, o.VIP = p.desired, p.vip
	o.ControlPlane = controlPlane
	o.Kubeadm = f.kubeadm
	o.DryRun = f.dryRun
	o.DialTimeout = f.dialTimeout
	if f.dialTimeout <= 0 {
		return o, fmt.Errorf("--dial-timeout %s: must be positive", f.dialTimeout)
	}
	if o.ServiceSubnets, err = parseSubnets("--service-subnet", f.serviceSubnet); err != nil {
		return o, err
	}
	if o.PodSubnets, err = parseSubnets("--pod-subnet", f.podSubnet); err != nil {
		return o, err
	}
	o.AllowVIPInServiceSubnet = f.allowInService
	if err := f.secrets(cmd, &o); err != nil {
		return o, err
	}
	if o.ControlPlane {
		// The watchdog's manifest lists this master too: it adds its
		// apiserver, preferred, once healthy (on the first master's port
		// unless --master lists it).
		self := netip.AddrPortFrom(p.vip.NodeIP, c.Masters[0].Port())
		if !slices.ContainsFunc(care.Masters, func(m netip.AddrPort) bool { return m.Addr() == self.Addr() }) {
			care.Masters = append(care.Masters, self)
		}
	}
	if f.manifestDir == "" {
		return o, errors.New("--manifest-dir: empty")
	}
	o.ManifestPath = filepath.Join(f.manifestDir, filepath.Base(manifests.DefaultPath))
	o.ModulesFile = f.modulesFile
	// The node IP only when given: the watchdog detects it as the join did.
	if o.Manifest, err = manifests.Render(manifests.Options{Image: f.image, Care: care}); err != nil {
		return o, fmt.Errorf("watchdog manifest: %w", err)
	}
	return o, nil
}

// flagValue returns the value of --flag VALUE or --flag=VALUE in args.
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func hasArg(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || a == flag+"=true" {
			return true
		}
	}
	return false
}

// parseSubnets parses a comma-separated CIDR list; "" is none.
func parseSubnets(flag, s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %q is not a CIDR", flag, s, strings.TrimSpace(part))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// secrets reads --token-file, --certificate-key-file and --config into o,
// refusing a missing, empty or malformed file before anything is changed;
// a file other users can read is a warning.
func (f *joinFlags) secrets(cmd *cobra.Command, o *kubeadm.JoinOptions) error {
	warn := func(w string) {
		if w != "" {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
		}
	}
	var w string
	var err error
	if f.tokenFile != "" || cmd.Flags().Changed("token-file") {
		if o.Token, w, err = kubeadm.ReadSecretFile("--token-file", f.tokenFile, kubeadm.CheckToken); err != nil {
			return err
		}
		warn(w)
	}
	if f.certKeyFile != "" || cmd.Flags().Changed("certificate-key-file") {
		if !o.ControlPlane {
			return fmt.Errorf("--certificate-key-file %s: only a master's join (--control-plane) uses a certificate key", f.certKeyFile)
		}
		if o.CertificateKey, w, err = kubeadm.ReadSecretFile("--certificate-key-file", f.certKeyFile, kubeadm.CheckCertificateKey); err != nil {
			return err
		}
		warn(w)
	}
	if f.joinConfig != "" || cmd.Flags().Changed("config") {
		if f.joinConfig == "" {
			return errors.New("--config: empty path")
		}
		if o.JoinConfig, err = os.ReadFile(f.joinConfig); err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		if len(o.JoinConfig) == 0 {
			return fmt.Errorf("--config %s: the file is empty", f.joinConfig)
		}
		if st, err := os.Stat(f.joinConfig); err == nil && st.Mode().Perm()&0o044 != 0 && len(kubeadm.SecretsIn(o.JoinConfig)) > 0 {
			warn(fmt.Sprintf("--config %s: holds secrets and is readable by other users (mode %04o): `chmod 600 %s`", f.joinConfig, st.Mode().Perm(), f.joinConfig))
		}
	}
	return nil
}
