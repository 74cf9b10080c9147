package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/kernel"
)

// DefaultVIP is the virtual IP sealos/lvscare made the convention.
const DefaultVIP = careconfig.DefaultVIP

// DefaultVIP6 is the virtual IP when the masters are IPv6 and no --vip is
// given.
const DefaultVIP6 = careconfig.DefaultVIP6

// DefaultAPIPort is the kube-apiserver's port.
const DefaultAPIPort = careconfig.DefaultPort

// serviceFlags are the flags that describe the virtual service and the VIP
// plumbing, shared by `ipvs apply` and `join`: the watchdog's flags of the
// same names (package careconfig), with the same rules.
type serviceFlags struct {
	cfg *careconfig.Flags
}

// register adds the service flags and the further watchdog flags more.
func (f *serviceFlags) register(cmd *cobra.Command, more ...string) {
	f.cfg = careconfig.NewFlags(careconfig.Default())
	f.cfg.Register(cmd.Flags(), append(slices.Clone(careconfig.ServiceFlags), more...)...)
}

// parsedService is serviceFlags validated.
type parsedService struct {
	desired ipvs.Desired
	vip     ipvs.VIPConfig
}

// parseVIP validates --vip.
func parseVIP(s string) (netip.AddrPort, error) {
	return careconfig.ParseVIP(s)
}

// serviceOf is the virtual service and VIP plumbing of a validated
// configuration. A node IP not given is detected from the route to the
// first master.
func serviceOf(ctx context.Context, c careconfig.Config) (parsedService, error) {
	var p parsedService
	p.desired.Service = ipvs.Service{VIP: c.VIP, Protocol: ipvs.ProtocolTCP, Scheduler: c.Scheduler}
	for _, m := range c.Masters {
		p.desired.RealServers = append(p.desired.RealServers, ipvs.RealServer{Addr: m, Weight: ipvs.DefaultWeight})
	}
	if err := p.desired.Validate(); err != nil {
		return p, err
	}
	p.vip = ipvs.VIPConfig{Mode: ipvs.Mode(c.Mode), Interface: c.Interface, VIP: c.VIP.Addr(), NodeIP: c.NodeIP}
	if !p.vip.NodeIP.IsValid() {
		a, err := kernel.DetectNodeIP(ctx, c.Masters[0].Addr())
		if err != nil {
			return p, fmt.Errorf("--node-ip: %w", err)
		}
		p.vip.NodeIP = a
	}
	if err := p.vip.Validate(); err != nil {
		return p, fmt.Errorf("--node-ip/--interface: %w", err)
	}
	return p, nil
}

func newIPVSCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipvs",
		Short: "Manage the IPVS virtual server directly (plumbing for tests, join and debugging)",
		Example: `  vipctl ipvs apply --master 192.0.2.11 --master 192.0.2.12
  vipctl ipvs show
  vipctl ipvs delete`,
	}
	cmd.AddCommand(newIPVSApplyCmd(a), newIPVSShowCmd(a), newIPVSDeleteCmd(a))
	return cmd
}

func newIPVSApplyCmd(a *app) *cobra.Command {
	var f serviceFlags
	var output string
	cmd := &cobra.Command{
		Use:   "apply --vip VIP[:PORT] --master IP[:PORT] [--master ...]",
		Short: "Create or converge the virtual server, its real servers and the VIP plumbing",
		Example: `  vipctl ipvs apply --vip 10.103.97.2:6443 --master 192.0.2.11:6443 --master 192.0.2.12:6443
  vipctl ipvs apply --vip 10.103.97.2 --master 192.0.2.11 --mode route --node-ip 192.0.2.20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			c, _, err := f.cfg.Config()
			if err != nil {
				return err
			}
			p, err := serviceOf(cmd.Context(), c)
			if err != nil {
				return err
			}
			k, err := kernel.New(a.log)
			if err != nil {
				return err
			}
			defer k.Close()
			changes, _, err := ipvs.Converge(cmd.Context(), k, k, p.vip, p.desired)
			if err != nil {
				return err
			}
			for _, c := range changes {
				a.log.Info("changed", zap.String("op", string(c.Op)), zap.String("kind", string(c.Kind)), zap.String("target", c.Target), zap.String("detail", c.Detail))
			}
			return printChanges(cmd.OutOrStdout(), output, changes)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func printChanges(w io.Writer, output string, changes []ipvs.Change) error {
	if output == "json" {
		if changes == nil {
			changes = []ipvs.Change{}
		}
		return writeJSON(w, map[string]any{"changes": changes})
	}
	if len(changes) == 0 {
		_, err := fmt.Fprintln(w, "no changes: the kernel already matches")
		return err
	}
	for _, c := range changes {
		if _, err := fmt.Fprintln(w, c); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newIPVSShowCmd(a *app) *cobra.Command {
	var vip, output string
	cmd := &cobra.Command{
		Use:   "show [--vip VIP[:PORT]] [-o table|json]",
		Short: "Show the virtual server, its real servers, weights and connection counts",
		Example: `  vipctl ipvs show
  vipctl ipvs show --vip 10.103.97.2:6443 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := parseVIP(vip)
			if err != nil {
				return err
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			k, err := kernel.New(a.log)
			if err != nil {
				return err
			}
			defer k.Close()
			st, err := k.Get(cmd.Context(), v)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printState(cmd.OutOrStdout(), st)
		},
	}
	cmd.Flags().StringVar(&vip, "vip", careconfig.Default().VIP.String(), "virtual server address, IP[:PORT]")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printState prints a virtual service like ipvsadm -Ln does.
func printState(w io.Writer, st ipvs.State) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "TCP  %s  %s\n", st.Service.VIP, st.Service.Scheduler)
	fmt.Fprintln(tw, "  REAL SERVER\tFORWARD\tWEIGHT\tACTIVE\tINACTIVE")
	for _, rs := range st.RealServers {
		fmt.Fprintf(tw, "  -> %s\tMasq\t%d\t%d\t%d\n", rs.Addr, rs.Weight, rs.ActiveConns, rs.InactiveConns)
	}
	return tw.Flush()
}

func newIPVSDeleteCmd(a *app) *cobra.Command {
	var vip, mode, iface, output string
	cmd := &cobra.Command{
		Use:   "delete [--vip VIP[:PORT]]",
		Short: "Delete the virtual server and the VIP plumbing vipctl created (interface, address, route)",
		Example: `  vipctl ipvs delete
  vipctl ipvs delete --vip 10.103.97.2:6443 --mode route -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := parseVIP(vip)
			if err != nil {
				return err
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			var modes []ipvs.Mode
			switch mode {
			case "":
				modes = []ipvs.Mode{ipvs.ModeLink, ipvs.ModeRoute}
			case string(ipvs.ModeLink), string(ipvs.ModeRoute):
				modes = []ipvs.Mode{ipvs.Mode(mode)}
			default:
				return fmt.Errorf("--mode %q: want link, route or empty for both", mode)
			}
			k, err := kernel.New(a.log)
			if err != nil {
				return err
			}
			defer k.Close()
			changes, err := k.Delete(cmd.Context(), v)
			if err != nil {
				return err
			}
			for _, m := range modes {
				c, err := k.RemoveVIP(cmd.Context(), ipvs.VIPConfig{Mode: m, Interface: iface, VIP: v.Addr()})
				changes = append(changes, c...)
				if err != nil {
					return err
				}
			}
			return printChanges(cmd.OutOrStdout(), output, changes)
		},
	}
	cmd.Flags().StringVar(&vip, "vip", careconfig.Default().VIP.String(), "virtual server address, IP[:PORT]")
	cmd.Flags().StringVar(&mode, "mode", "", "remove only this mode's plumbing: link or route (default both)")
	cmd.Flags().StringVar(&iface, "interface", ipvs.DefaultInterface, "dummy interface holding the VIP in link mode")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
