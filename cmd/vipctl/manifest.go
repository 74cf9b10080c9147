//go:build !watchdog

package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/manifests"
)

func newManifestCmd(a *app) *cobra.Command {
	var (
		output string
		image  string
		c      manifests.Care
	)
	cmd := &cobra.Command{
		Use:   "manifest [--output-file FILE|-] [--image IMAGE] --master IP[:PORT]... [care flags] [-- extra care flags]",
		Short: "Print or write the static pod that runs the vipctl care watchdog",
		Long: `Print (or write with --output-file) the kube-system/vipctl-care static pod,
which runs "vipctl care" with the flags given here on the host network with
the NET_ADMIN capability only. Care flags left unset are left out of the pod,
so the watchdog's defaults apply; --ca-file and --metrics-addr are always
written because the pod mounts the CA and probes /healthz and /readyz there.
Further care flags may follow "--", e.g. -- --hold-down=5s.

The IPVS kernel modules must be loaded on the host (the pod cannot load them).`,
		Example: `  vipctl manifest --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4
  vipctl manifest --output-file ` + manifests.DefaultPath + ` --image registry.local/vipctl:v0.1.0 \
    --vip 10.103.97.2:6443 --master 192.168.0.2:6443 --master 192.168.0.3:6443 --mode route`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 && len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: extra care flags go after --", args[0])
			}
			c.Extra = args
			data, err := manifests.Render(manifests.Options{Image: image, Care: c})
			if err != nil {
				return err
			}
			if output == "-" || output == "" {
				_, err = cmd.OutOrStdout().Write(data)
				return err
			}
			if err := manifests.WriteFile(output, data); err != nil {
				return err
			}
			if image == "" {
				image = manifests.DefaultImage()
			}
			a.log.Info("wrote the watchdog static pod", zap.String("path", output), zap.String("image", image),
				zap.String("command", "vipctl care "+strings.Join(c.Args(), " ")))
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&output, "output-file", "-", "write the manifest to this file (atomically, mode 0600; the kubelet reads "+manifests.DefaultPath+"), or - for stdout")
	fs.StringVar(&image, "image", "", "container image holding vipctl at "+manifests.BinaryPath+" (default "+manifests.DefaultImage()+")")
	// The flags of `vipctl care`; empty means the watchdog's default.
	fs.StringVar(&c.VIP, "vip", DefaultVIP+":6443", "virtual server address, IP[:PORT]")
	fs.StringSliceVar(&c.Masters, "master", nil, "a master's apiserver address, IP[:PORT]; repeat for each master (required)")
	fs.StringVar(&c.Mode, "mode", "", "care --mode: link or route")
	fs.StringVar(&c.Interface, "interface", "", "care --interface: dummy interface holding the VIP in link mode")
	fs.StringVar(&c.NodeIP, "node-ip", "", "care --node-ip: this node's IP (default: detected by the watchdog)")
	fs.StringVar(&c.Scheduler, "scheduler", "", "care --scheduler: IPVS scheduler")
	fs.StringVar(&c.HealthPath, "health-path", "", "care --health-path: HTTP path probed on each master")
	fs.StringVar(&c.HealthScheme, "health-scheme", "", "care --health-scheme: https, http or tcp")
	fs.StringVar(&c.CAFile, "ca-file", manifests.DefaultCAFile, "care --ca-file: cluster CA on the host, mounted read-only into the pod")
	fs.DurationVar(&c.Interval, "interval", 0, "care --interval: time between two probes of a master")
	fs.DurationVar(&c.Timeout, "timeout", 0, "care --timeout: bound of one probe")
	fs.IntVar(&c.Rise, "rise", 0, "care --rise: consecutive successes that bring a master back")
	fs.IntVar(&c.Fall, "fall", 0, "care --fall: consecutive failures that take a master out")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", manifests.DefaultMetricsAddr, "care --metrics-addr: IP:PORT of /metrics, /healthz and /readyz, probed by the kubelet")
	_ = cmd.MarkFlagRequired("master")
	return cmd
}
