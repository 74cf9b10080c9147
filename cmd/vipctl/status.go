package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/care"
	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/care/carestatus"
	"github.com/vipctl/vipctl/ipvs"
	"github.com/vipctl/vipctl/ipvs/kernel"
)

// statusGetter reads the kernel's virtual service; *kernel.Kernel.
type statusGetter interface {
	Get(ctx context.Context, vip netip.AddrPort) (ipvs.State, error)
}

// statusEnv is the outside world of `vipctl status`, replaceable in tests.
type statusEnv struct {
	fetch    func(ctx context.Context, addr string) (care.Status, error)
	openIPVS func(*zap.Logger) (statusGetter, func() error, error)
	// manifestMetricsAddr is the --metrics-addr of the watchdog's static
	// pod on this node; ok is false when there is no manifest.
	manifestMetricsAddr func() (addr string, ok bool, err error)
	now                 func() time.Time
}

func defaultStatusEnv() statusEnv {
	return statusEnv{
		fetch: care.FetchStatus,
		openIPVS: func(l *zap.Logger) (statusGetter, func() error, error) {
			k, err := kernel.New(l)
			if err != nil {
				return nil, nil, err
			}
			return k, k.Close, nil
		},
		manifestMetricsAddr: watchdogManifestMetricsAddr,
		now:                 time.Now,
	}
}

// statusReport is what `vipctl status -o json` prints.
type statusReport struct {
	VIP           netip.AddrPort `json:"vip"`
	MetricsAddr   string         `json:"metricsAddr"`
	Watchdog      *care.Status   `json:"watchdog,omitempty"`
	WatchdogError string         `json:"watchdogError,omitempty"`
	Kernel        *ipvs.State    `json:"kernel,omitempty"`
	KernelError   string         `json:"kernelError,omitempty"`
	// Masters are the watchdog's masters, in its order, with the kernel's
	// counters as read now, then the kernel's other real servers.
	Masters []carestatus.Master `json:"masters"`
}

func newStatusCmd(a *app) *cobra.Command { return newStatusCmdWith(a, defaultStatusEnv()) }

func newStatusCmdWith(a *app, env statusEnv) *cobra.Command {
	var metricsAddr, vip, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [--metrics-addr HOST:PORT] [-o table|json]",
		Short: "Show each master's health (from the running watchdog), weight and connections (from the kernel)",
		Example: `  vipctl status
  vipctl status --metrics-addr 127.0.0.1:9282 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: want a positive duration", timeout)
			}
			var v netip.AddrPort
			if cmd.Flags().Changed("vip") {
				p, err := parseVIP(vip)
				if err != nil {
					return err
				}
				v = p
			}
			addr, err := statusMetricsAddr(a.log, env, metricsAddr)
			if err != nil {
				return err
			}
			r, err := collectStatus(cmd.Context(), a.log, env, addr, v, timeout)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			return printStatus(cmd.OutOrStdout(), r, env.now())
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "where the watchdog serves /status (default: the --metrics-addr of its manifest on this node, else "+careconfig.DefaultMetricsAddr+")")
	cmd.Flags().StringVar(&vip, "vip", careconfig.Default().VIP.String(), "virtual server to show (default: the watchdog's, else "+careconfig.Default().VIP.String()+")")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the watchdog")
	return cmd
}

// statusMetricsAddr is where to ask the watchdog: --metrics-addr when
// given, else its manifest's, else the default; on this node's loopback
// when it listens on every address.
func statusMetricsAddr(log *zap.Logger, env statusEnv, flag string) (string, error) {
	addr, what := flag, "--metrics-addr"
	if addr == "" {
		addr, what = careconfig.DefaultMetricsAddr, "the default"
		if env.manifestMetricsAddr != nil {
			switch a, ok, err := env.manifestMetricsAddr(); {
			case err != nil:
				log.Warn("cannot read the watchdog's manifest: asking it at the default address", zap.Error(err))
			case ok:
				addr, what = a, "the watchdog's manifest"
			}
		}
	}
	m, err := careconfig.ParseMetricsAddr(addr)
	if err != nil {
		return "", fmt.Errorf("%s (from %s): %w", addr, what, err)
	}
	return m.Local().String(), nil
}

// collectStatus asks the watchdog and the kernel. It fails only when
// neither answers.
func collectStatus(ctx context.Context, log *zap.Logger, env statusEnv, metricsAddr string, vip netip.AddrPort, timeout time.Duration) (statusReport, error) {
	r := statusReport{MetricsAddr: metricsAddr}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	st, err := env.fetch(fctx, metricsAddr)
	cancel()
	if err != nil {
		r.WatchdogError = err.Error()
	} else {
		r.Watchdog = &st
	}
	switch {
	case vip.IsValid():
		r.VIP = vip
	case r.Watchdog != nil:
		r.VIP = r.Watchdog.VIP
	default:
		r.VIP = careconfig.Default().VIP
	}
	var kerr error
	if g, closeFn, err := env.openIPVS(log); err != nil {
		kerr = err
	} else {
		ks, err := g.Get(ctx, r.VIP)
		_ = closeFn()
		if err == nil {
			r.Kernel = &ks
		}
		kerr = err
	}
	if kerr != nil {
		r.KernelError = kerr.Error()
	}
	if r.Watchdog == nil && r.Kernel == nil && !errors.Is(kerr, ipvs.ErrNotFound) {
		return r, fmt.Errorf("neither the watchdog (%s) nor the kernel (%s) could be read", r.WatchdogError, r.KernelError)
	}
	r.Masters = mergeStatus(r.Watchdog, r.Kernel)
	return r, nil
}

// mergeStatus lists the watchdog's masters in its order, then the kernel's
// other real servers, each with the kernel's counters (nil when absent).
func mergeStatus(w *care.Status, k *ipvs.State) []carestatus.Master {
	rows := []carestatus.Master{}
	idx := map[netip.AddrPort]int{}
	if w != nil {
		for _, m := range w.Masters {
			m.Kernel = nil // the kernel as read now, below
			idx[m.Address] = len(rows)
			rows = append(rows, m)
		}
	}
	if k != nil {
		for _, rs := range k.RealServers {
			i, ok := idx[rs.Addr]
			if !ok {
				i = len(rows)
				rows = append(rows, carestatus.Master{Address: rs.Addr})
			}
			rows[i].Kernel = &carestatus.Kernel{Weight: rs.Weight, ActiveConns: rs.ActiveConns, InactiveConns: rs.InactiveConns}
		}
	}
	return rows
}

func printStatus(out io.Writer, r statusReport, now time.Time) error {
	var head []string
	if k := r.Kernel; k != nil {
		head = append(head, fmt.Sprintf("VIP %s  scheduler %s", r.VIP, k.Service.Scheduler))
	} else {
		head = append(head, fmt.Sprintf("VIP %s", r.VIP))
	}
	if w := r.Watchdog; w != nil {
		state := "ready"
		if !w.Ready {
			state = "starting (first reconcile not done)"
		}
		line := fmt.Sprintf("watchdog: %s at %s, mode %s, node IP %s", state, r.MetricsAddr, w.Mode, w.NodeIP)
		if w.FailOpen {
			line += ", FAIL-OPEN: every master is down, all kept in service"
		}
		if w.ProbesUnauthorized {
			line += ", probes unauthorized: check credentials"
		}
		head = append(head, line)
		if w.LastError != "" {
			head = append(head, "watchdog's last error: "+w.LastError)
		}
	} else {
		head = append(head, fmt.Sprintf("watchdog: not running or unreachable (%s): showing the kernel's table only", r.WatchdogError))
	}
	switch {
	case r.Kernel == nil && r.KernelError != "":
		head = append(head, "kernel: "+r.KernelError)
	case r.Kernel != nil && len(r.Kernel.RealServers) == 0:
		head = append(head, "kernel: the virtual server has no real servers")
	}
	if l := localLine(r.Masters); l != "" {
		head = append(head, l)
	}
	for _, h := range head {
		if _, err := fmt.Fprintln(out, h); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MASTER\tHEALTH\tFOR\tMEMBERSHIP\tWEIGHT\tACTIVE\tINACTIVE\tLAST PROBE")
	for _, row := range r.Masters {
		dash := func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		}
		since := ""
		if !row.Since.IsZero() {
			since = now.Sub(row.Since).Round(time.Second).String()
		}
		weight, active, inactive := "-", "-", "-"
		if k := row.Kernel; k != nil {
			weight, active, inactive = strconv.Itoa(k.Weight), strconv.Itoa(k.ActiveConns), strconv.Itoa(k.InactiveConns)
		} else if r.Kernel != nil {
			weight = "absent"
		}
		lastProbe := ""
		if p := row.LastProbe; p != nil {
			lastProbe = fmt.Sprintf("%s (%s)", p.Reason, time.Duration(p.Latency*float64(time.Second)).Round(100*time.Microsecond))
		}
		health := string(row.Phase)
		if row.HeldDown {
			health = "held-down"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Address, dash(health), dash(since), dash(string(row.Membership)),
			weight, active, inactive, dash(lastProbe))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, row := range r.Masters {
		if row.HeldDown {
			if _, err := fmt.Fprintf(out, "%s: %s\n", row.Address, row.HeldReason); err != nil {
				return err
			}
		}
		if line := sourceLine(row, now); line != "" {
			if _, err := fmt.Fprintln(out, line); err != nil {
				return err
			}
		}
	}
	return nil
}

// localLine is the status line of a master node: which real server is its
// own apiserver and whether new connections through the VIP go to it
// (it is in service with a weight above 0); "" on a worker.
func localLine(ms []carestatus.Master) string {
	for _, m := range ms {
		if !m.Local {
			continue
		}
		local := m.Membership == carestatus.InService && m.Weight > 0
		if m.Kernel != nil {
			local = local && m.Kernel.Weight > 0
		}
		if local {
			return fmt.Sprintf("local apiserver: %s; traffic local: yes", m.Address)
		}
		return fmt.Sprintf("local apiserver: %s; traffic local: no (it is %s, %s; the other masters serve)", m.Address, m.Phase, m.Membership)
	}
	return ""
}

// sourceLine says where a discovered master comes from, when the API last
// listed it and when it will be forgotten; "" for a --master seed.
func sourceLine(row carestatus.Master, now time.Time) string {
	if row.Source != care.SourceAPI {
		return ""
	}
	line := fmt.Sprintf("%s: discovered from the API", row.Address)
	if row.LastSeenInAPI.IsZero() {
		line += ", not listed since the watchdog started (from its state file)"
	} else {
		line += fmt.Sprintf(", last listed %s ago", now.Sub(row.LastSeenInAPI).Round(time.Second))
	}
	if !row.ForgetAt.IsZero() {
		line += fmt.Sprintf("; absent from the API and unhealthy: forgotten at %s (in %s) unless it comes back",
			row.ForgetAt.Format(time.RFC3339), max(row.ForgetAt.Sub(now), 0).Round(time.Second))
	}
	return line
}
