package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/hosts"
)

// newHostsCmd is `vipctl hosts set|remove|show`: it maps a name (normally
// apiserver.cluster.local) to one address in the hosts file.
func newHostsCmd(a *app) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "Map a name such as apiserver.cluster.local to one address in /etc/hosts",
		Example: `  vipctl hosts set apiserver.cluster.local 10.103.97.2
  vipctl hosts show apiserver.cluster.local
  vipctl hosts remove apiserver.cluster.local`,
		Long: `Map a name, normally apiserver.cluster.local, to exactly one address in the
hosts file: the virtual IP on workers, the node's own address on masters.

vipctl writes one line per name, marked with a trailing "# vipctl" comment:

    10.103.97.2 apiserver.cluster.local # vipctl

"set" replaces that line, or appends it. If other lines list the name too, the
name is removed from them (a line left without any name is dropped), so the
name maps to one address only. "remove" deletes vipctl's line and leaves
the other lines alone. Every other line, comment and blank line is kept
byte-for-byte. The file is replaced atomically, keeping its mode and owner,
and is not rewritten when nothing changes.`,
	}
	cmd.PersistentFlags().StringVar(&path, "hosts-file", hosts.DefaultPath, "hosts file to edit")
	cmd.AddCommand(
		newHostsSetCmd(a, &path),
		newHostsRemoveCmd(a, &path),
		newHostsShowCmd(a, &path),
	)
	return cmd
}

func newHostsSetCmd(a *app, path *string) *cobra.Command {
	return &cobra.Command{
		Use:   "set NAME IP",
		Short: "Make NAME map to IP, and only to IP",
		Example: `  vipctl hosts set apiserver.cluster.local 10.103.97.2
  vipctl hosts set apiserver.cluster.local fd00::2 --hosts-file /host/etc/hosts`,
		Args: hostsArgs("NAME", "IP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := hostsNameArg(args[0])
			if err != nil {
				return err
			}
			addr, err := hosts.ParseAddr(args[1])
			if err != nil {
				return fmt.Errorf("argument IP: %w", err)
			}
			log := a.log.With(zap.String("file", *path), zap.String("name", name), zap.Stringer("address", addr))
			f := hosts.File{Path: *path, NotDurable: notDurable(log)}

			// What Set will displace, to tell the user. A missing file has none.
			before, _ := f.Lookup(name)
			changed, err := f.Set(cmd.Context(), name, addr)
			if err != nil {
				return fmt.Errorf("map %s to %s in %s: %w", name, addr, *path, err)
			}
			out := cmd.OutOrStdout()
			if !changed {
				log.Debug("hosts file already up to date")
				_, err := fmt.Fprintf(out, "%s already maps %s to %s; not rewritten\n", *path, name, addr)
				return err
			}
			for _, m := range before {
				if m.Managed {
					continue
				}
				log.Warn("removed the name from a line vipctl did not write", zap.Int("line", m.Line), zap.Stringer("was", m.Addr))
				if _, err := fmt.Fprintf(out, "removed %s from line %d, which mapped it to %s\n", name, m.Line, m.Addr); err != nil {
					return err
				}
			}
			log.Info("hosts file updated")
			_, err = fmt.Fprintf(out, "%s now maps %s to %s\n", *path, name, addr)
			return err
		},
	}
}

func newHostsRemoveCmd(a *app, path *string) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove vipctl's line for NAME; lines vipctl did not write are left alone",
		Example: `  vipctl hosts remove apiserver.cluster.local
  vipctl hosts remove apiserver.cluster.local --hosts-file /host/etc/hosts`,
		Args: hostsArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := hostsNameArg(args[0])
			if err != nil {
				return err
			}
			log := a.log.With(zap.String("file", *path), zap.String("name", name))
			f := hosts.File{Path: *path, NotDurable: notDurable(log)}
			changed, err := f.Remove(cmd.Context(), name)
			if err != nil {
				return fmt.Errorf("remove %s from %s: %w", name, *path, err)
			}
			out := cmd.OutOrStdout()
			if changed {
				log.Info("hosts file updated")
				_, err = fmt.Fprintf(out, "removed vipctl's mapping of %s from %s\n", name, *path)
			} else {
				log.Debug("nothing to remove")
				_, err = fmt.Fprintf(out, "%s has no vipctl line for %s; not rewritten\n", *path, name)
			}
			if err != nil {
				return err
			}
			left, err := f.Lookup(name)
			if err != nil {
				// The file is gone or unreadable: nothing is left to report.
				log.Debug("cannot read the hosts file back", zap.Error(err))
				return nil
			}
			for _, m := range left {
				if _, err := fmt.Fprintf(out, "line %d, which vipctl did not write, still maps %s to %s; left alone\n", m.Line, name, m.Addr); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// notDurable logs a hosts file change that is made but may not survive a
// crash (its directory could not be synced).
func notDurable(log *zap.Logger) func(error) {
	return func(err error) { log.Warn("the hosts file is updated, but may not survive a crash", zap.Error(err)) }
}

// hostsShow is the JSON form of `vipctl hosts show`.
type hostsShow struct {
	File     string          `json:"file"`
	Name     string          `json:"name"`
	Mappings []hosts.Mapping `json:"mappings"`
}

func newHostsShowCmd(a *app, path *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Print the address the hosts file maps NAME to; fail if it maps it to none",
		Long: `Print the address the hosts file maps NAME to. If several lines map it, each
address is printed once, in file order (after "vipctl hosts set" there is
exactly one); --output json also gives the line numbers and which lines are
vipctl's. Exits non-zero when the file maps NAME to no address.`,
		Example: `  vipctl hosts show apiserver.cluster.local
  vipctl hosts show apiserver.cluster.local -o json`,
		Args: hostsArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("--output %q: want text or json", output)
			}
			name, err := hostsNameArg(args[0])
			if err != nil {
				return err
			}
			ms, err := hosts.File{Path: *path}.Lookup(name)
			if err != nil {
				return fmt.Errorf("look up %s: %w", name, err)
			}
			if len(ms) == 0 {
				return fmt.Errorf("%s does not map %s to any address", *path, name)
			}
			if len(ms) > 1 {
				a.log.Warn("the name maps to several addresses; `vipctl hosts set` makes it one",
					zap.String("file", *path), zap.String("name", name), zap.Int("mappings", len(ms)))
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(hostsShow{File: *path, Name: name, Mappings: ms})
			}
			seen := map[netip.Addr]bool{}
			for _, m := range ms {
				if seen[m.Addr] {
					continue
				}
				seen[m.Addr] = true
				if _, err := fmt.Fprintln(out, m.Addr); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text (the addresses) or json (with line numbers)")
	return cmd
}

// hostsNameArg validates the NAME argument.
func hostsNameArg(name string) (string, error) {
	if err := hosts.ValidateName(name); err != nil {
		return "", fmt.Errorf("argument NAME: %w", err)
	}
	return name, nil
}

// hostsArgs requires exactly the named positional arguments.
func hostsArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("want arguments %s, got %d: %q", strings.Join(names, " "), len(args), args)
		}
		return nil
	}
}
