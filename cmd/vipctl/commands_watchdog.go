//go:build watchdog

package main

import "github.com/spf13/cobra"

// nodeCommands is empty in the watchdog build (-tags watchdog), the binary
// of the watchdog's image: it runs `vipctl care` (and status, ipvs, hosts,
// version) without linking the Kubernetes API types, whose package
// initialisation alone costs several MB of resident memory.
func nodeCommands(*app) []*cobra.Command { return nil }

// watchdogManifestMetricsAddr reads no manifest in the watchdog build: the
// manifests package links the Kubernetes API types. `vipctl status` there
// asks the default address or --metrics-addr.
func watchdogManifestMetricsAddr() (string, bool, error) { return "", false, nil }
