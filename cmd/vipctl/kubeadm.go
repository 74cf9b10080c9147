//go:build !watchdog

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/kubeadm"
	"github.com/vipctl/vipctl/manifests"
)

func newKubeadmCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "kubeadm",
		Short:   "kubeadm integration: configuration for a cluster behind the vipctl VIP",
		Example: `  vipctl kubeadm config --master 192.168.0.2 --master 192.168.0.3 > kubeadm.yaml`,
	}
	cmd.AddCommand(newKubeadmConfigCmd(a))
	return cmd
}

// renderFlags are the flags of kubeadm's configuration rendering, shared by
// `vipctl kubeadm config` and `vipctl init`.
type renderFlags struct {
	o          kubeadm.Options
	configFile string
}

// register adds the flags; advertise names the flag of this master's IP
// (--advertise-address or --node-ip) and whether to register it here.
func (f *renderFlags) register(cmd *cobra.Command, advertise bool) {
	fs := cmd.Flags()
	fs.StringVar(&f.o.VIP, "vip", DefaultVIP+":6443", "virtual server address, IP[:PORT]; its port is controlPlaneEndpoint's (default ["+DefaultVIP6+"]:6443 when the masters are IPv6)")
	fs.StringSliceVar(&f.o.Masters, "master", nil, "a master's apiserver address, IP[:PORT]; repeat for each master (required)")
	if advertise {
		fs.StringVar(&f.o.AdvertiseAddress, "advertise-address", "", "this master's IP for localAPIEndpoint (default: the first --master)")
	}
	fs.StringVar(&f.o.KubeadmAPI, "kubeadm-api", kubeadm.DefaultAPIVersion, "kubeadm config API: v1beta4, or v1beta3 for kubeadm older than 1.31 (with --config: that file's version)")
	fs.StringVar(&f.o.KubernetesVersion, "kubernetes-version", kubeadm.DefaultKubernetesVersion, "kubernetesVersion")
	fs.StringVar(&f.o.PodSubnet, "pod-subnet", "", "networking.podSubnet, CIDR (two comma-separated for dual stack)")
	fs.StringVar(&f.o.ServiceSubnet, "service-subnet", kubeadm.DefaultServiceSubnet, "networking.serviceSubnet, CIDR; must not hold the VIP (default "+kubeadm.DefaultServiceSubnet6+" for an IPv6 VIP)")
	fs.StringVar(&f.o.ImageRepository, "image-repository", "", "imageRepository, e.g. a registry mirror for air-gapped installs")
	fs.StringVar(&f.o.KubeProxyMode, "kube-proxy-mode", "", "kube-proxy's mode: "+strings.Join(kubeadm.KubeProxyModes, ", ")+
		" (default: none written, kube-proxy's own default; a mode in --config wins)")
	fs.StringVar(&f.configFile, "config", "", "merge into this kubeadm config file instead of starting from scratch")
	_ = cmd.MarkFlagRequired("master")
}

// render reads --config and returns the merged configuration and the
// warnings about values of --config it replaced. Nothing is written.
func (f *renderFlags) render(cmd *cobra.Command) ([]byte, []string, error) {
	o := f.o
	if !cmd.Flags().Changed("vip") && len(o.Masters) > 0 {
		if m, err := careconfig.ParseMasters(o.Masters[:1]); err == nil {
			o.VIP = careconfig.DefaultVIPFor(m).String()
		}
	}
	if v, err := careconfig.ParseVIP(o.VIP); err == nil && v.Addr().Is6() && !cmd.Flags().Changed("service-subnet") {
		o.ServiceSubnet = "" // kubeadm.Merge's IPv6 default, kubeadm.DefaultServiceSubnet6
	}
	var existing []byte
	if f.configFile != "" {
		// Pass-through flags count only when given, so that --config's
		// values win over the defaults.
		unlessGiven := func(name string, v *string) {
			if !cmd.Flags().Changed(name) {
				*v = ""
			}
		}
		unlessGiven("kubeadm-api", &o.KubeadmAPI)
		unlessGiven("kubernetes-version", &o.KubernetesVersion)
		unlessGiven("service-subnet", &o.ServiceSubnet)
		var err error
		if existing, err = os.ReadFile(f.configFile); err != nil {
			return nil, nil, fmt.Errorf("--config: %w", err)
		}
	}
	return kubeadm.Merge(o, existing)
}

func newKubeadmConfigCmd(a *app) *cobra.Command {
	var (
		f      renderFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "config --master IP[:PORT]... [--config FILE] [flags]",
		Short: "Print the kubeadm init config of the first master",
		Long: `Print the kubeadm configuration for "kubeadm init" on the first master:
controlPlaneEndpoint ` + kubeadm.ControlPlaneHost + `, certificate SANs for the VIP and every
master, and the VIP in kube-proxy's ipvs.excludeCIDRs so that kube-proxy in
IPVS mode leaves vipctl's virtual server alone (harmless in the other modes).
kube-proxy's mode is --config's, else --kube-proxy-mode, else none: kube-proxy's
default (see docs/join.md for what each mode does to vipctl's rules).
"vipctl init" renders the same configuration and runs kubeadm init with it.

With --config, the settings are merged into that multi-document kubeadm config:
every field, comment and document of yours is kept; vipctl sets
controlPlaneEndpoint, appends to apiServer.certSANs and ipvs.excludeCIDRs, and
writes the values of the flags you give. Values you give neither as flags nor
in the file get the defaults shown below.`,
		Example: `  vipctl kubeadm config --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 > kubeadm.yaml
  vipctl kubeadm config --kube-proxy-mode nftables --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4
  vipctl kubeadm config --config kubeadm.yaml --output-file kubeadm.yaml --master 192.168.0.2 --master 192.168.0.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, warnings, err := f.render(cmd)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				a.log.Warn("--config: "+w, zap.String("config", f.configFile))
			}
			if output == "-" || output == "" {
				_, err = cmd.OutOrStdout().Write(out)
				return err
			}
			if err := manifests.WriteFile(output, out); err != nil {
				return err
			}
			a.log.Info("wrote the kubeadm config", zap.String("path", output))
			return nil
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&output, "output-file", "-", "write to this file (atomically, mode 0600), or - for stdout")
	return cmd
}
