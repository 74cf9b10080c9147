// Package kernel implements the ipvs package's Table, Plumbing and
// ConnCloser on the running Linux kernel through netlink. It is the only
// place that talks to the kernel: the ipvs package itself holds the pure
// types, validation and planning, so packages that decide (the watchdog's
// health core) do not pull in netlink.
package kernel
