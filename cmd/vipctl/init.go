//go:build !watchdog

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/kubeadm"
	"github.com/vipctl/vipctl/manifests"
)

// initFlags are `vipctl init`'s flags besides the configuration's.
type initFlags struct {
	render     renderFlags
	nodeIP     string
	kubeadm    string
	dryRun     bool
	hostsFile  string
	secretsDir string
	// The VIP plumbing and the watchdog's static pod.
	mode        string
	iface       string
	image       string
	careFlags   []string
	manifestDir string
	modulesFile string
}

// isLocalFunc reports whether an address is one of this node's.
type isLocalFunc func(ctx context.Context, a netip.Addr) (bool, error)

func newInitCmd(a *app) *cobra.Command {
	isLocal := func(ctx context.Context, addr netip.Addr) (bool, error) {
		ifs, err := kubeadm.System{}.InterfacesWith(ctx, addr)
		return len(ifs) > 0, err
	}
	return newInitCmdWith(isLocal, func(cmd *cobra.Command, o kubeadm.InitOptions, hostsFile string) error {
		k := &lazyKernel{log: a.log}
		defer k.Close()
		j := osJoiner(a, cmd, hostsFile)
		j.Dataplane = k.Dataplane
		return j.Init(cmd.Context(), o)
	})
}

// newInitCmdWith builds `vipctl init` running init with the validated
// options; tests replace isLocal and init.
func newInitCmdWith(isLocal isLocalFunc, init func(cmd *cobra.Command, o kubeadm.InitOptions, hostsFile string) error) *cobra.Command {
	var f initFlags
	cmd := &cobra.Command{
		Use:   "init --master SELF[:PORT] --master IP[:PORT]... [flags] [-- KUBEADM-INIT-FLAGS...]",
		Short: "Set up the first master with kubeadm init, and print the other nodes' vipctl join commands",
		Long: `Set up the cluster's first master: "kubeadm init" with the configuration of
"vipctl kubeadm config" (controlPlaneEndpoint ` + kubeadm.ControlPlaneHost + `, certificate SANs
for the VIP, the name and every --master, the VIP excluded from kube-proxy's IPVS),
merged into --config when given.

In order: preflight checks (kubeadm found, --node-ip an address of this node
and one of the --master, IPVS loadable, the VIP unused), the hosts file maps
` + kubeadm.ControlPlaneHost + ` to the VIP, as on every node, once and for good; the
VIP's virtual server is set up with this master's own apiserver as its one
real server (scheduler wrr, the local weight), with the VIP plumbing
(--mode), and the modules-load file is written; then "kubeadm init --config
FILE --upload-certs" with the configuration in a private temporary file (0600,
removed afterwards): the name reaches the local apiserver through the VIP as
soon as it is up. Then the watchdog's static pod is written (every --master;
it adds the others once they are healthy and keeps preferring this one while
it is healthy; --care-flag adds watchdog flags, e.g. a longer probe --timeout
on a slow machine). vipctl puts a new bootstrap token and certificate key in the
configuration unless --config has them; after kubeadm init they are written to
--secrets-dir (0600) and the "vipctl join" command lines for the workers and
the other masters are printed with the master list filled in. No secret is
printed or logged.

When a step up to kubeadm init fails, what this run changed is undone and the
error names the step, with kubeadm's output. Undo a successful init with
"vipctl reset", then "kubeadm reset".`,
		Example: `  vipctl init --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4
  vipctl init --vip 10.103.97.2 --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 \
    --node-ip 192.168.0.2 --kube-proxy-mode nftables --config kubeadm.yaml -- --v=5
  vipctl init --master 192.168.0.2 --care-flag=--interval=3s --care-flag=--timeout=2s   # a slow master
  vipctl init --dry-run --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd, args, isLocal)
			if err != nil {
				return err
			}
			return init(cmd, o, f.hostsFile)
		},
	}
	f.render.register(cmd, false)
	fs := cmd.Flags()
	fs.StringVar(&f.nodeIP, "node-ip", "", "this master's address, one of the --master (default: the --master that is an address of this node)")
	fs.StringVar(&f.kubeadm, "kubeadm", "kubeadm", "the kubeadm command, a name in PATH or a path")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print every step and the configuration (secrets redacted), and change nothing")
	fs.StringVar(&f.hostsFile, "hosts-file", hosts.DefaultPath, "hosts file to edit")
	fs.StringVar(&f.mode, "mode", string(careconfig.ModeLink), "how the VIP is reachable locally: link (dummy interface) or route")
	fs.StringVar(&f.iface, "interface", careconfig.DefaultInterface, "dummy interface holding the VIP in link mode")
	fs.StringVar(&f.image, "image", "", "watchdog image holding vipctl at "+manifests.BinaryPath+" (default "+manifests.DefaultImage()+")")
	fs.StringArrayVar(&f.careFlags, "care-flag", nil, "a further watchdog flag for the manifest, --flag=value (e.g. --care-flag=--timeout=3s on a slow machine), checked as the watchdog checks it; repeat")
	fs.StringVar(&f.manifestDir, "manifest-dir", DefaultManifestDir, "the kubelet's static pod folder; the watchdog's manifest is "+filepath.Base(manifests.DefaultPath))
	fs.StringVar(&f.modulesFile, "modules-file", kubeadm.DefaultModulesFile, "modules-load.d file that loads the IPVS modules at boot")
	fs.StringVar(&f.secretsDir, "secrets-dir", kubeadm.DefaultSecretsDir, "write the join secrets (files "+kubeadm.TokenFileName+" and "+kubeadm.CertificateKeyFileName+", mode 0600) here after kubeadm init; \"\" writes none")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (kubeadm's own flags go after --, e.g. vipctl init --master IP -- --v=5)", err)
	})
	return cmd
}

// options validates the flags, renders the configuration and builds the
// init's options. Nothing is changed.
func (f *initFlags) options(cmd *cobra.Command, args []string, isLocal isLocalFunc) (kubeadm.InitOptions, error) {
	var o kubeadm.InitOptions
	if dash := cmd.ArgsLenAtDash(); dash != 0 && len(args) > 0 {
		return o, fmt.Errorf("unexpected argument %q: kubeadm's arguments go after --", kubeadm.RedactArgs(args[:1])[0])
	}
	vip, masters, err := kubeadm.ParseAddresses(f.render.o)
	if err != nil {
		return o, err
	}
	o.VIP, o.Masters = vip, masters
	if f.nodeIP != "" {
		if o.NodeIP, err = netip.ParseAddr(f.nodeIP); err != nil {
			return o, fmt.Errorf("--node-ip %q: not an IP address", f.nodeIP)
		}
	} else {
		var local []netip.Addr
		for _, m := range masters {
			ok, err := isLocal(cmd.Context(), m.Addr())
			if err != nil {
				return o, fmt.Errorf("--node-ip: find which --master is this node: %w", err)
			}
			if ok {
				local = append(local, m.Addr())
			}
		}
		switch len(local) {
		case 0:
			return o, errors.New("--node-ip: no --master is an address of this node: list this master among the --master, or give --node-ip")
		case 1:
			o.NodeIP = local[0]
		default:
			return o, fmt.Errorf("--node-ip: several --master are addresses of this node (%s): give --node-ip", joinNetipAddrs(local))
		}
	}
	f.render.o.AdvertiseAddress = o.NodeIP.String()
	cfg, warnings, err := f.render.render(cmd)
	if err != nil {
		return o, err
	}
	for _, w := range warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: --config: %s\n", w)
	}
	o.Config = cfg
	o.Kubeadm = f.kubeadm
	o.KubeadmArgs = args
	o.DryRun = f.dryRun
	o.SecretsDir = f.secretsDir
	o.Mode, o.Interface, o.ModulesFile = ipvs.Mode(f.mode), f.iface, f.modulesFile
	if f.manifestDir == "" {
		return o, errors.New("--manifest-dir: empty")
	}
	o.ManifestPath = filepath.Join(f.manifestDir, filepath.Base(manifests.DefaultPath))
	// The watchdog of a master: every master, this one preferred (it finds
	// its own address among them), wrr so that the weight counts.
	care := careconfig.Default()
	care.VIP, care.Masters, care.Scheduler = o.VIP, o.Masters, ipvs.MasterScheduler
	care.Mode, care.Interface = careconfig.Mode(f.mode), f.iface
	if care, err = initCareFlags(care, f.careFlags); err != nil {
		return o, err
	}
	for _, w := range care.Warnings() {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	if o.Manifest, err = manifests.Render(manifests.Options{Image: f.image, Care: care}); err != nil {
		return o, fmt.Errorf("watchdog manifest: %w", err)
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// initOwnCareFlags are the watchdog flags init sets from its own flags.
var initOwnCareFlags = []string{"vip", "master", "mode", "interface"}

// initCareFlags applies --care-flag to the first master's watchdog
// configuration, as join does: init's own flags (the VIP, the masters, the
// VIP plumbing) are not given again, and a master's scheduler stays wrr,
// which the local preference needs.
func initCareFlags(care careconfig.Config, flags []string) (careconfig.Config, error) {
	for _, a := range flags {
		if name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "="); name == "scheduler" {
			return care, fmt.Errorf("--care-flag %q: a master's watchdog uses %s, which the preference for the local apiserver needs", a, ipvs.MasterScheduler)
		}
	}
	out, err := care.ApplyArgs(flags, func(name string) bool { return slices.Contains(initOwnCareFlags, name) }, "--care-flag")
	if err != nil {
		return care, err
	}
	if err := out.ValidateForPod(); err != nil {
		return care, fmt.Errorf("watchdog manifest: %w", err)
	}
	return out, nil
}

func joinNetipAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
