//go:build !watchdog

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/kubeadm"
)

func newMigrateMasterCmd(a *app) *cobra.Command {
	return newMigrateMasterCmdWith(func(cmd *cobra.Command, o kubeadm.JoinOptions, hostsFile string) error {
		k := &lazyKernel{log: a.log}
		defer k.Close()
		j := osJoiner(a, cmd, hostsFile)
		j.Dataplane = k.Dataplane
		return j.MigrateMaster(cmd.Context(), o)
	})
}

// newMigrateMasterCmdWith builds `vipctl migrate-master` running migrate
// with the validated options; tests replace migrate.
func newMigrateMasterCmdWith(migrate func(cmd *cobra.Command, o kubeadm.JoinOptions, hostsFile string) error) *cobra.Command {
	var f joinFlags
	f.controlPlane = true
	cmd := &cobra.Command{
		Use:   "migrate-master --master IP[:PORT]... [flags]",
		Short: "Move a master joined the old way (name -> its own address) onto the VIP, with nothing interrupted",
		Long: `Turn a master whose hosts file maps ` + kubeadm.ControlPlaneHost + ` to its own address
(joined by an older vipctl, or sealos) into the design of "vipctl join
--control-plane": the name maps to the VIP, whose virtual server prefers this
master's own apiserver and fails over to the others.

In order, nothing interrupted: preflight (this master's apiserver accepts
connections, IPVS loadable, the VIP unused), the virtual server (this
master's apiserver with the local weight, the other masters that accept
connections) and the VIP plumbing, the modules-load file, the watchdog's
static pod, a connection through the VIP, and last the hosts file, in one
atomic write. Until that write nothing uses the VIP; after it new
connections reach the same apiserver through it. When a step fails,
everything this run changed is undone and the error names the step.

List every master, this one included, as for "vipctl join --control-plane".`,
		Example: `  vipctl migrate-master --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 --node-ip 192.168.0.3
  vipctl migrate-master --dry-run --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := f.options(cmd, nil)
			if err != nil {
				return err
			}
			return migrate(cmd, o, f.hostsFile)
		},
	}
	f.svc.register(cmd, append(append([]string(nil), careconfig.TuningFlags...), careconfig.PodFlags...)...)
	fs := cmd.Flags()
	f.kubeadm = "kubeadm"
	fs.BoolVar(&f.dryRun, "dry-run", false, "print every step and file, and change nothing")
	f.registerNodeFiles(fs, "bound of the TCP connect to each master and to the VIP")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see vipctl migrate-master --help)", err)
	})
	return cmd
}
