//go:build !watchdog

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/kernel"
	"github.com/vipctl/vipctl/kubeadm"
	"github.com/vipctl/vipctl/manifests"
)

func newResetCmd(a *app) *cobra.Command {
	var (
		vip, mode, iface                    string
		hostsFile, manifestDir, modulesFile string
		stateFile, secretsDir               string
		watchdogAddr                        string
		wait                                time.Duration
		dryRun                              bool
	)
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Undo what vipctl join did: watchdog manifest, IPVS rules, VIP, hosts line, modules file",
		Long: `Undo vipctl's part of a join, in this order: remove the watchdog's static pod
(and wait for the kubelet to stop it, so that it does not put the rules back),
delete the IPVS virtual server, the VIP's interface, address or route that
vipctl made, vipctl's line for ` + kubeadm.ControlPlaneHost + ` in the hosts file and
` + kubeadm.DefaultModulesFile + `, the watchdog's state file and the join secrets
(` + kubeadm.DefaultSecretsDir + `). Lines and interfaces vipctl did not make are left
alone. Running it again changes nothing.

kubeadm's part is undone by "kubeadm reset", which vipctl never runs. Either
order works; "kubeadm reset" first stops the kubelet, and with it the watchdog.`,
		Example: `  vipctl reset --dry-run
  vipctl reset
  vipctl reset --mode route --vip 10.103.97.2:6443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			manifestPath := filepath.Join(manifestDir, filepath.Base(manifests.DefaultPath))
			if !cmd.Flags().Changed("vip") {
				if m, ok := manifestVIP(manifestPath); ok {
					vip = m
				}
			}
			v, err := parseVIP(vip)
			if err != nil {
				return err
			}
			var modes []ipvs.Mode
			switch mode {
			case "":
			case string(ipvs.ModeLink), string(ipvs.ModeRoute):
				modes = []ipvs.Mode{ipvs.Mode(mode)}
			default:
				return fmt.Errorf("--mode %q: want link, route or empty for both", mode)
			}
			if wait <= 0 {
				return fmt.Errorf("--wait %s: must be positive", wait)
			}
			k := &lazyKernel{log: a.log}
			defer k.Close()
			r := &kubeadm.Resetter{
				Dataplane: k.Dataplane,
				Plumbing:  func() (ipvs.Plumbing, error) { return kernel.NewPlumbing(a.log), nil },
				Hosts:     hosts.File{Path: hostsFile, NotDurable: notDurable(a.log)},
				Files:     kubeadm.OSFiles{},
				Inspector: kubeadm.System{},
				Out:       cmd.OutOrStdout(),
				Log:       a.log,
			}
			return r.Reset(cmd.Context(), kubeadm.ResetOptions{
				VIP:          v,
				Modes:        modes,
				Interface:    iface,
				ManifestPath: manifestPath,
				ModulesFile:  modulesFile,
				StateFile:    stateFile,
				SecretsDir:   secretsDir,
				WatchdogAddr: watchdogAddr,
				WatchdogWait: wait,
				DryRun:       dryRun,
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&vip, "vip", careconfig.Default().VIP.String(), "virtual server address, IP[:PORT] (default: the watchdog manifest's --vip, else "+careconfig.Default().VIP.String()+")")
	fs.StringVar(&mode, "mode", "", "remove only this mode's plumbing: link or route (default both)")
	fs.StringVar(&iface, "interface", ipvs.DefaultInterface, "dummy interface holding the VIP in link mode")
	fs.StringVar(&hostsFile, "hosts-file", hosts.DefaultPath, "hosts file to edit")
	fs.StringVar(&manifestDir, "manifest-dir", DefaultManifestDir, "the kubelet's static pod folder")
	fs.StringVar(&modulesFile, "modules-file", kubeadm.DefaultModulesFile, "modules-load.d file written by vipctl join")
	fs.StringVar(&stateFile, "state-file", "", "the watchdog's state file (default: the manifest's --state-file, else "+careconfig.DefaultStateFile+"); its folder goes too when empty")
	fs.StringVar(&secretsDir, "secrets-dir", kubeadm.DefaultSecretsDir, "the join secrets' folder: its "+kubeadm.TokenFileName+" and "+kubeadm.CertificateKeyFileName+" files are removed, then the folder when empty; \"\" leaves it")
	fs.StringVar(&watchdogAddr, "metrics-addr", careconfig.DefaultMetricsAddr, "the watchdog's metrics address, when its manifest does not say; empty not to wait for it")
	fs.DurationVar(&wait, "wait", kubeadm.DefaultWatchdogWait, "how long to wait for the kubelet to stop the watchdog")
	fs.BoolVar(&dryRun, "dry-run", false, "print what would be removed, and change nothing")
	return cmd
}

// manifestVIP is the --vip of the watchdog's manifest at path, the VIP the
// join set up (an IPv6 join's default VIP differs from --vip's default),
// read with the watchdog's own parser.
func manifestVIP(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	c, _, err := manifests.ReadCare(b)
	if err != nil {
		return "", false
	}
	return c.VIP.String(), true
}
