package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// app carries what every subcommand shares: the logger built from the global
// flags. It is created once per process in newRootCmd; there is no global state.
type app struct {
	logLevel  string
	logFormat string
	log       *zap.Logger
}

func newRootCmd() *cobra.Command {
	a := &app{log: zap.NewNop()}
	root := &cobra.Command{
		Use:   "vipctl",
		Short: "IPVS virtual IP for a highly available Kubernetes control plane",
		Long: `vipctl keeps, on every node, an IPVS virtual server VIP:6443 whose real
servers are the masters' kube-apiservers, health-checks them and integrates
with kubeadm. No keepalived, haproxy or external load balancer is needed.`,
		Example: `  vipctl join --master 192.168.0.2 --master 192.168.0.3 -- --token ... --discovery-token-ca-cert-hash sha256:...
  vipctl status
  vipctl reset --dry-run
  source <(vipctl completion bash)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLogger(a.logLevel, a.logFormat)
			if err != nil {
				return err
			}
			a.log = l
			return nil
		},
	}
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "console", "log format: console (for humans) or json (for the static pod)")
	root.AddCommand(
		newVersionCmd(),
		newIPVSCmd(a),
		newHostsCmd(a),
		newCareCmd(a),
		newStatusCmd(a),
	)
	root.AddCommand(nodeCommands(a)...)
	registerCompletions(root)
	return root
}

// newLogger builds a zap logger writing to stderr.
func newLogger(level, format string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var cfg zap.Config
	switch format {
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	case "json":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	l, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	return l, nil
}
