//go:build !watchdog

package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

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

func newKubeadmConfigCmd(a *app) *cobra.Command {
	var (
		o          kubeadm.Options
		configFile string
		output     string
	)
	cmd := &cobra.Command{
		Use:   "config --master IP[:PORT]... [--config FILE] [flags]",
		Short: "Print the kubeadm init config of the first master",
		Long: `Print the kubeadm configuration for "kubeadm init" on the first master:
controlPlaneEndpoint ` + kubeadm.ControlPlaneHost + `, certificate SANs for the VIP and every
master, and kube-proxy in IPVS mode with the VIP in ipvs.excludeCIDRs so that
kube-proxy leaves vipctl's virtual server alone.

With --config, the settings are merged into that multi-document kubeadm config:
every field, comment and document of yours is kept; vipctl sets
controlPlaneEndpoint and the kube-proxy mode, appends to apiServer.certSANs and
ipvs.excludeCIDRs, and writes the values of the flags you give. Values you give
neither as flags nor in the file get the defaults shown below.`,
		Example: `  vipctl kubeadm config --master 192.168.0.2 --master 192.168.0.3 --master 192.168.0.4 > kubeadm.yaml
  vipctl kubeadm config --config kubeadm.yaml --output-file kubeadm.yaml --master 192.168.0.2 --master 192.168.0.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Pass-through flags count only when given, so that --config's
			// values win over the defaults.
			if configFile != "" {
				unlessGiven := func(name string, v *string) {
					if !cmd.Flags().Changed(name) {
						*v = ""
					}
				}
				unlessGiven("kubeadm-api", &o.KubeadmAPI)
				unlessGiven("kubernetes-version", &o.KubernetesVersion)
				unlessGiven("service-subnet", &o.ServiceSubnet)
			}
			var existing []byte
			if configFile != "" {
				var err error
				if existing, err = os.ReadFile(configFile); err != nil {
					return fmt.Errorf("--config: %w", err)
				}
			}
			out, warnings, err := kubeadm.Merge(o, existing)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				a.log.Warn("replaced a value of --config", zap.String("config", configFile), zap.String("change", w))
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
	fs := cmd.Flags()
	fs.StringVar(&o.VIP, "vip", DefaultVIP+":6443", "virtual server address, IP[:PORT]; its port is controlPlaneEndpoint's")
	fs.StringSliceVar(&o.Masters, "master", nil, "a master's apiserver address, IP[:PORT]; repeat for each master (required)")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", "", "this master's IP for localAPIEndpoint (default: the first --master)")
	fs.StringVar(&o.KubeadmAPI, "kubeadm-api", kubeadm.DefaultAPIVersion, "kubeadm config API: v1beta4, or v1beta3 for kubeadm older than 1.31 (with --config: that file's version)")
	fs.StringVar(&o.KubernetesVersion, "kubernetes-version", kubeadm.DefaultKubernetesVersion, "kubernetesVersion")
	fs.StringVar(&o.PodSubnet, "pod-subnet", "", "networking.podSubnet, CIDR (two comma-separated for dual stack)")
	fs.StringVar(&o.ServiceSubnet, "service-subnet", kubeadm.DefaultServiceSubnet, "networking.serviceSubnet, CIDR; must not hold the VIP")
	fs.StringVar(&o.ImageRepository, "image-repository", "", "imageRepository, e.g. a registry mirror for air-gapped installs")
	fs.StringVar(&configFile, "config", "", "merge into this kubeadm config file instead of starting from scratch")
	fs.StringVar(&output, "output-file", "-", "write to this file (atomically, mode 0600), or - for stdout")
	_ = cmd.MarkFlagRequired("master")
	return cmd
}
