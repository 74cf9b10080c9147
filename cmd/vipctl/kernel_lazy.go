//go:build !watchdog

package main

import (
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/ipvs/kernel"
	"github.com/vipctl/vipctl/kubeadm"
)

// lazyKernel opens the IPVS netlink handle on first use, so that commands
// whose dry runs or early failures never touch the kernel do not need IPVS.
type lazyKernel struct {
	log *zap.Logger
	k   *kernel.Kernel
}

// Dataplane returns the kernel handle, opening it the first time.
func (l *lazyKernel) Dataplane() (kubeadm.Dataplane, error) {
	if l.k == nil {
		k, err := kernel.New(l.log)
		if err != nil {
			return nil, err
		}
		l.k = k
	}
	return l.k, nil
}

// Close closes the handle if it was opened.
func (l *lazyKernel) Close() {
	if l.k != nil {
		l.k.Close()
	}
}
