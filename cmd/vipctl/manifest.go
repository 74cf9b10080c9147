//go:build !watchdog

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/manifests"
)

// manifestCareFlags are the watchdog flags `vipctl manifest` offers itself;
// any other follows "--".
var manifestCareFlags = append(append(append([]string(nil), careconfig.ServiceFlags...), careconfig.TuningFlags...),
	"health-scheme", "ca-file", "metrics-addr")

// watchdogConfig validates the watchdog's flags of a command, with the
// further care flags extra (as --flag=value items, what names them in
// errors), into the configuration its static pod runs.
func watchdogConfig(f *careconfig.Flags, extra []string, what string) (careconfig.Config, error) {
	c, _, err := f.Config()
	if err != nil {
		return c, err
	}
	if c, err = c.ApplyArgs(extra, f.Changed, what); err != nil {
		return c, err
	}
	return c, c.ValidateForPod()
}

func newManifestCmd(a *app) *cobra.Command {
	var (
		output string
		image  string
		care   = careconfig.NewFlags(careconfig.Default())
	)
	cmd := &cobra.Command{
		Use:   "manifest [--output-file FILE|-] [--image IMAGE] --master IP[:PORT]... [care flags] [-- extra care flags]",
		Short: "Print or write the static pod that runs the vipctl care watchdog",
		Long: `Print (or write with --output-file) the kube-system/vipctl-care static pod,
which runs "vipctl care" with the flags given here on the host network with
the NET_ADMIN capability only. Care flags left at their defaults are left out
of the pod, so the watchdog's defaults apply; --ca-file and --metrics-addr are
always written because the pod mounts the CA and probes /healthz and /readyz
there. Further care flags may follow "--", e.g. -- --hold-down=10s; they are
checked like the watchdog checks them.

The IPVS kernel modules must be loaded on the host (the pod cannot load them).`,
		Example: `  vipctl manifest --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4
  vipctl manifest --output-file ` + manifests.DefaultPath + ` --image registry.local/vipctl:v0.1.0 \
    --vip 10.103.97.2:6443 --master 192.168.0.2:6443 --master 192.168.0.3:6443 --mode route`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 && len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: extra care flags go after --", args[0])
			}
			c, err := watchdogConfig(care, args, "extra care argument")
			if err != nil {
				return err
			}
			for _, w := range c.Warnings() {
				a.log.Warn(w)
			}
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
	// The flags of `vipctl care`; each flag left out leaves the watchdog's default.
	care.Register(fs, manifestCareFlags...)
	_ = cmd.MarkFlagRequired("master")
	return cmd
}

// watchdogManifestMetricsAddr is the --metrics-addr of the watchdog's
// static pod at manifests.DefaultPath; ok is false when there is none.
func watchdogManifestMetricsAddr() (addr string, ok bool, err error) {
	return manifestMetricsAddr(manifests.DefaultPath)
}

func manifestMetricsAddr(path string) (string, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	c, _, err := manifests.ReadCare(data)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", path, err)
	}
	return c.MetricsAddr, c.MetricsAddr != "", nil
}
