//go:build !watchdog

package main

import "github.com/spf13/cobra"

// nodeCommands are the commands that set a node up: kubeadm configuration,
// init, join and reset, manifests, the image. They link the Kubernetes API types
// and client-go's transport; the watchdog's image is built without them
// (-tags watchdog, commands_watchdog.go) to keep its memory small.
func nodeCommands(a *app) []*cobra.Command {
	return []*cobra.Command{
		newManifestCmd(a),
		newKubeadmCmd(a),
		newImageCmd(a),
		newInitCmd(a),
		newJoinCmd(a),
		newMigrateMasterCmd(a),
		newResetCmd(a),
		newKubeProxyCmd(a),
		newRBACCmd(a),
	}
}
