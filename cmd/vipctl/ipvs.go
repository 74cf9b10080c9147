package main

import "github.com/spf13/cobra"

func newIPVSCmd(a *app) *cobra.Command {
	return &cobra.Command{Use: "ipvs", Short: "Manage the IPVS virtual server directly (plumbing)"}
}
