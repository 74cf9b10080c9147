package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vipctl/vipctl/e2e/benchreport"
	"github.com/vipctl/vipctl/e2e/fleet"
	"github.com/vipctl/vipctl/e2e/realcp"
	"github.com/vipctl/vipctl/e2e/vm"
)

// fleetUsage documents `vmlab fleet`.
const fleetUsage = `usage: vmlab fleet [flags]
  one kube-apiserver and etcd on the host (in the network namespace ` + fleet.Namespace + `)
  and N simulated nodes per load; writes docs/benchmarks.md's fleet section and
  docs/fleet.png unless -docs=false (see docs/benchmarks.md)`

// runFleet is `vmlab fleet`: it re-runs itself inside the fleet's network
// namespace, where it runs the harness and reports.
func runFleet(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), fleetUsage); fs.PrintDefaults() }
	sizes := fs.String("n", "250,500,1000,2000", "numbers of simulated nodes, comma-separated")
	loads := fs.String("loads", strings.Join(fleet.DefaultLoads, ","), "loads, comma-separated, one at a time: watchdog, kubelet, lvscare, watchdog-h2:READY_EVERY (e.g. watchdog-h2:2s), get:/PATH")
	window := fs.Duration("window", 30*time.Second, "measurement window per load and size")
	warmup := fs.Duration("warmup", 15*time.Second, "how long a load runs before its window, and the rest between loads")
	apiserver := fs.String("apiserver", "", "kube-apiserver binary (default: scripts/build-k8s.sh's, built and cached once)")
	etcd := fs.String("etcd", "", "etcd binary (default: scripts/fetch-etcd.sh's)")
	from := fs.String("from", "", "write the report from the FLEET lines of an earlier run's output instead of running (-window says its window)")
	docs := fs.Bool("docs", true, "write docs/benchmarks.md's fleet section and docs/fleet.png")
	spreads := fs.String("start-spread", "1s", "span over which each load's nodes start, each at a random instant; 0: all at once (a fleet-wide restart); with -startup, comma-separated, each run in turn")
	startup := fs.Duration("startup", 0, "measure instead how each load's requests (per tenth of its period) and the apiserver's CPU (per second) spread over its first DURATION after the nodes start; never writes docs/")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := fleet.Options{Window: *window, Warmup: *warmup, Loads: strings.Split(*loads, ",")}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-n %q: want positive numbers of nodes, comma-separated", *sizes)
		}
		o.Sizes = append(o.Sizes, n)
	}
	for _, s := range strings.Split(*spreads, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return fmt.Errorf("-start-spread %q: want durations of 0 or more, comma-separated", *spreads)
		}
		o.StartSpreads = append(o.StartSpreads, d)
	}
	if *startup < 0 {
		return fmt.Errorf("-startup %s: want a duration of 0 (off) or more", *startup)
	}
	if o.Startup = *startup; o.Startup == 0 && len(o.StartSpreads) != 1 {
		return fmt.Errorf("-start-spread %q: one value without -startup", *spreads)
	}
	if *from != "" {
		return fleetFrom(*from, *window, args)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the fleet harness needs root (a network namespace of its own)")
	}
	if !fleet.Inside() {
		return fleet.EnterNamespace(ctx)
	}
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	if err != nil {
		return err
	}
	if *apiserver != "" && *etcd != "" {
		o.Binaries = realcp.Binaries{APIServer: *apiserver, Etcd: *etcd, Version: realcp.DefaultVersion}
		if v := os.Getenv("K8S_VERSION"); v != "" {
			o.Binaries.Version = v
		}
	} else if o.Binaries, err = realcp.FindBinaries(ctx, root, os.Stderr); err != nil {
		return err
	}
	o.Dir, err = os.MkdirTemp("", "vipctl-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(o.Dir)
	o.Logf = func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+format+"\n", a...)
	}
	res, err := fleet.Run(ctx, o)
	if err != nil {
		return err
	}
	if o.Startup > 0 {
		fmt.Print(res.StartupLines())
		fmt.Println(res.StartupMarkdown())
		return nil
	}
	fmt.Print(res.Lines())
	fmt.Println(res.Markdown())
	if !*docs {
		return nil
	}
	return writeFleet(root, res, args)
}

// fleetFrom writes the report of an earlier run's FLEET lines.
func fleetFrom(file string, window time.Duration, args []string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	res, err := fleet.ParseLines(f, st.ModTime(), realcp.DefaultVersion, window)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	wd, _ := os.Getwd()
	root, err := vm.ModuleRoot(wd)
	if err != nil {
		return err
	}
	return writeFleet(root, res, args)
}

// writeFleet writes docs/fleet.png and docs/benchmarks.md's fleet section.
func writeFleet(root string, res *fleet.Result, args []string) error {
	md := res.Markdown()
	png := filepath.Join(root, "docs", "fleet.png")
	f, err := os.Create(png)
	if err != nil {
		return err
	}
	if err := res.Chart(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	path := filepath.Join(root, "docs", "benchmarks.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	body := fmt.Sprintf("vipctl %s; `go run ./e2e/cmd/vmlab fleet %s`\n\n%s\n![apiserver CPU against nodes](fleet.png)\n",
		gitRev(root), strings.Join(args, " "), md)
	if err := os.WriteFile(path, benchreport.Splice(doc, "fleet", body), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vmlab: wrote %s and %s\n", path, png)
	return nil
}
