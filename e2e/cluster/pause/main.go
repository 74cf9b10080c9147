// Command pause is the sandbox ("pause") container of the e2e cluster's pods:
// it holds the pod's namespaces open, reaps the orphans it inherits as PID 1
// and exits 0 on SIGINT or SIGTERM. Built static (CGO_ENABLED=0) into the
// pause image by e2e/cluster, since no registry is reachable.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	for _, a := range os.Args[1:] {
		if a == "-v" {
			fmt.Println("vipctl e2e pause")
			return
		}
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
