// Command vipctl keeps an IPVS virtual server for the Kubernetes API on every
// node, health-checks the masters behind it and integrates with kubeadm.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vipctl:", err)
		os.Exit(1)
	}
}
