package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/vipctl/vipctl/hosts"
	"github.com/vipctl/vipctl/internal/rollback"
	"github.com/vipctl/vipctl/ipvs"
)

// Paths and file modes of what a join writes.
const (
	// DefaultModulesFile makes systemd-modules-load load the IPVS modules at
	// boot, before the watchdog's static pod (which cannot load modules).
	DefaultModulesFile = "/etc/modules-load.d/vipctl.conf"
	// ModulesFileMode is the modules-load file's mode.
	ModulesFileMode fs.FileMode = 0o644
	// ManifestFileMode is the static pod's mode, as kubeadm writes its own.
	ManifestFileMode fs.FileMode = 0o600
	// DefaultDialTimeout bounds the preflight connect to each master.
	DefaultDialTimeout = 3 * time.Second
	// outputLines is how many of kubeadm's last output lines an error shows.
	outputLines = 40
)

// Dataplane is the node's IPVS table and VIP plumbing; *kernel.Kernel.
type Dataplane interface {
	ipvs.Table
	ipvs.Plumbing
}

// HostsEditor edits the hosts file; hosts.File.
type HostsEditor interface {
	Set(ctx context.Context, name string, addr netip.Addr) (bool, error)
	Remove(ctx context.Context, name string) (bool, error)
	Snapshot() (hosts.Snapshot, error)
	Restore(ctx context.Context, s hosts.Snapshot) (bool, error)
}

// Files reads and writes whole files; OSFiles on a real node.
type Files interface {
	// ReadFile returns the file's content, or an error wrapping
	// fs.ErrNotExist when there is none.
	ReadFile(path string) ([]byte, error)
	// WriteFile replaces path with data atomically, with mode perm. The
	// folder must exist.
	WriteFile(path string, data []byte, perm fs.FileMode) error
	// MkdirAll creates dir and its missing parents with mode perm and
	// returns the folders it created, deepest last.
	MkdirAll(dir string, perm fs.FileMode) ([]string, error)
	// Remove deletes a file or an empty folder; a missing one is not an
	// error.
	Remove(path string) error
}

// Runner runs commands; ExecRunner on a real node.
type Runner interface {
	// LookPath resolves a command name as exec.LookPath does.
	LookPath(name string) (string, error)
	// Run runs path with args, its stdout and stderr going to out, and
	// returns when it exits or ctx ends (then it is stopped).
	Run(ctx context.Context, path string, args []string, out io.Writer) error
}

// Inspector answers the preflight's questions about the node; System on a
// real node. It changes nothing.
type Inspector interface {
	// IPVSAvailable reports whether the kernel has IPVS loaded.
	IPVSAvailable() bool
	// InterfacesWith returns the names of the interfaces holding addr.
	InterfacesWith(ctx context.Context, addr netip.Addr) ([]string, error)
	// VirtualServers returns the IPVS virtual servers on addr, any port.
	VirtualServers(ctx context.Context, addr netip.Addr) ([]netip.AddrPort, error)
	// Dial opens and closes a TCP connection to addr within timeout.
	Dial(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error
}

// JoinOptions describe one `vipctl join`, validated by the caller.
type JoinOptions struct {
	// Service is the virtual server and its real servers, the masters in
	// the order given.
	Service ipvs.Desired
	// VIP is the VIP plumbing; VIP.NodeIP is this node's address.
	VIP ipvs.VIPConfig
	// ControlPlane joins a master: like a worker, through the VIP over
	// every master that accepts connections, but the watchdog's manifest
	// is written after kubeadm join (kubeadm's control-plane preflight
	// wants an empty manifest folder) and lists this master too, which
	// the watchdog adds, preferred, once its apiserver is healthy.
	ControlPlane bool
	// ServiceSubnets and PodSubnets are the cluster's, when the user gave
	// them; the VIP must not be inside them.
	ServiceSubnets []netip.Prefix
	PodSubnets     []netip.Prefix
	// AllowVIPInServiceSubnet turns a VIP inside the service subnet into a
	// warning (see docs/join.md for the risk).
	AllowVIPInServiceSubnet bool
	// Kubeadm is the kubeadm command, a name looked up in PATH or a path.
	Kubeadm string
	// KubeadmArgs follow `kubeadm join ENDPOINT`: token, discovery hash,
	// certificate key... They must not hold the endpoint. With a
	// JoinConfiguration (UsesConfig) they are rendered into it.
	KubeadmArgs []string
	// Token and CertificateKey are secrets read from files (--token-file,
	// --certificate-key-file), checked by the caller; "" when not given.
	Token          string
	CertificateKey string
	// JoinConfig is the user's JoinConfiguration (--config); nil for none.
	JoinConfig []byte
	// Manifest is the watchdog's static pod, written to ManifestPath.
	Manifest     []byte
	ManifestPath string
	// ModulesFile is the modules-load.d file.
	ModulesFile string
	// DialTimeout bounds the connect to each master; DefaultDialTimeout when 0.
	DialTimeout time.Duration
	// DryRun prints every step and file and changes nothing.
	DryRun bool
}

// UsesConfig reports whether kubeadm gets a JoinConfiguration file rather
// than flags: whenever a secret comes from a file or a config.
func (o JoinOptions) UsesConfig() bool {
	return o.Token != "" || o.CertificateKey != "" || len(o.JoinConfig) > 0
}

// Joiner runs `vipctl join` on a node through the interfaces it owns.
type Joiner struct {
	// Dataplane opens the IPVS table and plumbing; called once, on a
	// worker, after the preflight made sure IPVS is loaded.
	Dataplane func() (Dataplane, error)
	Hosts     HostsEditor
	Files     Files
	Runner    Runner
	Inspector Inspector
	// Temp writes kubeadm's configuration file; nil is OSTemp{}.
	Temp TempFiles
	// Out gets the steps, for the user (stdout).
	Out io.Writer
	// KubeadmOutput gets kubeadm's output, redacted (stderr); nil drops it.
	KubeadmOutput io.Writer
	Log           *zap.Logger
	// RBAC, when set, grants the nodes' watchdogs master discovery
	// (`vipctl rbac apply`) with the admin kubeconfig, after kubeadm init.
	RBAC func(ctx context.Context, adminKubeconfig string) error
}

func (j *Joiner) temp() TempFiles {
	if j.Temp == nil {
		return OSTemp{}
	}
	return j.Temp
}

// Step names, as JoinError reports them.
const (
	StepValidate  = "validate"
	StepPreflight = "preflight"
	StepHosts     = "hosts"
	StepIPVS      = "ipvs"
	StepManifest  = "manifest"
	StepModules   = "modules"
	// StepState is reset's removal of the watchdog's state file (it
	// removes the join secrets as StepSecrets).
	StepState   = "state"
	StepKubeadm = "kubeadm"
	// StepManifestAfter writes a master's watchdog manifest after kubeadm.
	StepManifestAfter = "manifest (after kubeadm)"
)

// JoinError is a failed join: the step, its error, kubeadm's last output
// lines when kubeadm failed, and what was done to undo the run's changes.
type JoinError struct {
	// Op is the command that failed, "join" when empty, or "init".
	Op   string
	Step string
	Err  error
	// Output is the end of kubeadm's output, redacted.
	Output string
	// Undone lists the changes that were undone, in the order undone.
	Undone []string
	// UndoErr is set when undoing failed: the node is not as before.
	UndoErr error
	// Kept explains why nothing was undone (a step after kubeadm join).
	Kept string
}

func (e *JoinError) Error() string {
	var b strings.Builder
	op := e.Op
	if op == "" {
		op = "join"
	}
	fmt.Fprintf(&b, "%s failed at step %q: %v", op, e.Step, e.Err)
	if e.Output != "" {
		fmt.Fprintf(&b, "\n--- kubeadm output (last lines, secrets redacted) ---\n%s\n---", e.Output)
	}
	switch {
	case e.Kept != "":
		fmt.Fprintf(&b, "\n%s", e.Kept)
	case e.UndoErr != nil:
		fmt.Fprintf(&b, "\nundoing this run's changes failed, the node is NOT as before: %v", e.UndoErr)
		if len(e.Undone) > 0 {
			fmt.Fprintf(&b, "\nundone: %s", strings.Join(e.Undone, "; "))
		}
	case len(e.Undone) > 0:
		fmt.Fprintf(&b, "\nundone, the node is as before: %s", strings.Join(e.Undone, "; "))
	default:
		b.WriteString("\nnothing had been changed")
	}
	if e.Step == StepKubeadm {
		fmt.Fprintf(&b, "\nif kubeadm got past its preflight checks it may have written files: run `kubeadm reset` before trying again")
	}
	return b.String()
}

func (e *JoinError) Unwrap() error { return e.Err }

// joinRun is the state of one Join call.
type joinRun struct {
	j    *Joiner
	o    JoinOptions
	log  *zap.Logger
	undo rollback.Stack
	// dp is the dataplane, opened by the preflight on a worker.
	dp Dataplane
	// desired is what the join applies: the masters that accepted a
	// connection in the preflight.
	desired ipvs.Desired
	// op is "join" or "init", for errors.
	op string
	// config is the configuration kubeadm gets in a private temporary
	// file (nil: flags only), configName its file name, and pass the
	// flags it gets along with --config.
	config     []byte
	configName string
	pass       []string
}

// Endpoint returns the API endpoint kubeadm joins through, on a worker and
// a master alike: apiserver.cluster.local with the VIP's port.
func (o JoinOptions) Endpoint() string {
	return ControlPlaneHost + ":" + strconv.Itoa(int(o.Service.Service.VIP.Port()))
}

// KubeadmCommand returns kubeadm's arguments: join, the endpoint, the
// user's arguments, and --control-plane on a master unless given.
func (o JoinOptions) KubeadmCommand() []string {
	args := append([]string{"join", o.Endpoint()}, o.KubeadmArgs...)
	if o.ControlPlane && !hasFlag(o.KubeadmArgs, "--control-plane") {
		args = append(args, "--control-plane")
	}
	return args
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// ModulesFileContent is the modules-load.d file of a worker: ip_vs and the
// module of the scheduler in use (the kernel loads others on demand).
func ModulesFileContent(scheduler string) []byte {
	return []byte("# Written by `vipctl join`: IPVS modules for vipctl's virtual server, loaded at\n" +
		"# boot before the watchdog's static pod starts. `vipctl reset` removes this file.\n" +
		"ip_vs\nip_vs_" + scheduler + "\n")
}

// Validate checks o before anything is read or changed; errors name the
// flag and the value.
func (o JoinOptions) Validate() error {
	if err := o.Service.Validate(); err != nil {
		return err
	}
	if len(o.Service.RealServers) == 0 {
		return errors.New("--master: at least one master is required")
	}
	if !o.VIP.NodeIP.IsValid() {
		return errors.New("--node-ip: this node's address is required")
	}
	if err := o.VIP.Validate(); err != nil {
		return err
	}
	if o.ControlPlane && o.VIP.Mode == ipvs.ModeRoute {
		return fmt.Errorf("--mode %s: %s", o.VIP.Mode, ipvs.ErrRouteModeLocal)
	}
	if o.VIP.VIP != o.Service.Service.VIP.Addr() {
		return fmt.Errorf("--vip %s: differs from the virtual server %s", o.VIP.VIP, o.Service.Service)
	}
	for _, rs := range o.Service.RealServers {
		if rs.Addr.Addr() == o.VIP.NodeIP && !o.ControlPlane {
			return fmt.Errorf("--master %s: is this node's address %s; a master joins with --control-plane", rs.Addr, o.VIP.NodeIP)
		}
	}
	if o.Kubeadm == "" {
		return errors.New("--kubeadm: empty")
	}
	if len(o.KubeadmArgs) > 0 && !strings.HasPrefix(o.KubeadmArgs[0], "-") {
		return fmt.Errorf("kubeadm argument %q: vipctl passes the endpoint %s itself; give only flags after --", RedactArgs(o.KubeadmArgs[:1])[0], o.Endpoint())
	}
	if hasFlag(o.KubeadmArgs, "--config") {
		return errors.New("kubeadm argument --config: give the JoinConfiguration to vipctl's own --config, before --: vipctl sets its endpoint")
	}
	if o.Token != "" {
		if err := CheckToken(o.Token); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
	}
	if o.CertificateKey != "" {
		if err := CheckCertificateKey(o.CertificateKey); err != nil {
			return fmt.Errorf("--certificate-key-file: %w", err)
		}
	}
	return validateNodeFiles(o.ManifestPath, o.Manifest, o.ModulesFile)
}

// validateNodeFiles checks the files every node operation writes: the
// watchdog manifest (where and what) and the IPVS modules file.
func validateNodeFiles(manifestPath string, manifest []byte, modulesFile string) error {
	if manifestPath == "" {
		return errors.New("--manifest-dir: empty")
	}
	if len(manifest) == 0 {
		return errors.New("watchdog manifest: empty")
	}
	if modulesFile == "" {
		return errors.New("--modules-file: empty")
	}
	return nil
}

// Join joins the node. On a worker: preflight, hosts file -> VIP, IPVS
// rules and VIP plumbing, watchdog static pod, modules-load file, then
// `kubeadm join`. On a master the same, through the VIP too, except that
// the watchdog's static pod is written after `kubeadm join
// --control-plane`. The hosts file is written once, before kubeadm, and
// never rewritten. When a step up to and including kubeadm join fails,
// what this run changed is undone and a *JoinError tells the step, the
// error and kubeadm's output.
func (j *Joiner) Join(ctx context.Context, o JoinOptions) error {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if err := o.Validate(); err != nil {
		return &JoinError{Step: StepValidate, Err: err}
	}
	log := j.Log
	if log == nil {
		log = zap.NewNop()
	}
	r := &joinRun{j: j, o: o, log: log, op: "join"}
	if o.UsesConfig() {
		cfg, pass, warnings, err := RenderJoinConfiguration(JoinConfigInput{
			Endpoint: o.Endpoint(), ControlPlane: o.ControlPlane, Args: o.KubeadmArgs,
			Token: o.Token, CertificateKey: o.CertificateKey, Config: o.JoinConfig,
		})
		if err != nil {
			return &JoinError{Step: StepValidate, Err: err}
		}
		r.config, r.configName, r.pass = cfg, "join.yaml", pass
		for _, w := range warnings {
			log.Warn(w)
			r.say("[config] warning: %s", w)
		}
	} else if len(Secrets(o.KubeadmArgs)) > 0 {
		w := "a secret is on the command line (--token, --certificate-key...): every local user can read it in /proc while vipctl and kubeadm run, and it stays in the shell's history; prefer --token-file and --certificate-key-file"
		log.Warn(w)
		r.say("[preflight] warning: %s", w)
	}
	role := "worker"
	if o.ControlPlane {
		role = "master"
	}
	r.say("joining as a %s through %s (the VIP %s, node IP %s)%s", role, o.Endpoint(), o.VIP.VIP, o.VIP.NodeIP, dryNote(o.DryRun))
	warnings, err := r.preflight(ctx)
	for _, w := range warnings {
		log.Warn(w)
		r.say("[preflight] warning: %s", w)
	}
	if err != nil {
		return &JoinError{Step: StepPreflight, Err: err}
	}
	if o.ControlPlane {
		return r.master(ctx)
	}
	return r.worker(ctx)
}

func dryNote(dry bool) string {
	if dry {
		return " — dry run: nothing is changed"
	}
	return ""
}

func (r *joinRun) say(format string, a ...any) {
	if r.j.Out != nil {
		fmt.Fprintf(r.j.Out, format+"\n", a...)
	}
}

// fail undoes the run's changes and builds the error of step.
func (r *joinRun) fail(ctx context.Context, step string, err error, output string) error {
	e := &JoinError{Op: r.op, Step: step, Err: err, Output: output}
	r.log.Error(r.op+" step failed, undoing this run's changes", zap.String("step", step), zap.Error(err))
	e.Undone, e.UndoErr = r.undo.Undo(context.WithoutCancel(ctx), r.log)
	return e
}

func (r *joinRun) worker(ctx context.Context) error {
	o := r.o
	if err := r.setHosts(ctx, o.VIP.VIP, StepHosts); err != nil {
		return err
	}
	if err := r.applyIPVS(ctx); err != nil {
		return err
	}
	if err := r.writeFile(ctx, StepManifest, o.ManifestPath, o.Manifest, ManifestFileMode); err != nil {
		return err
	}
	// The modules file is written before kubeadm join: kubeadm join is the
	// one step vipctl cannot undo, so it comes last and any failure before
	// or in it leaves the node as it was.
	if err := r.writeFile(ctx, StepModules, o.ModulesFile, ModulesFileContent(o.Service.Service.Scheduler), ModulesFileMode); err != nil {
		return err
	}
	if err := r.kubeadm(ctx); err != nil {
		return err
	}
	if o.DryRun {
		r.say("dry run: nothing was changed")
		return nil
	}
	r.say("done: the node joined through the VIP %s; the watchdog starts from %s with the kubelet", o.Service.Service, o.ManifestPath)
	return nil
}

// master joins a master through the VIP: the hosts file maps the name to
// the VIP once, for good; kubeadm reaches every master that accepted a
// connection in the preflight; the watchdog's manifest comes after kubeadm
// (whose control-plane preflight wants an empty manifest folder) and adds
// this master's own apiserver, preferred, once it is healthy.
func (r *joinRun) master(ctx context.Context) error {
	o := r.o
	if err := r.setHosts(ctx, o.VIP.VIP, StepHosts); err != nil {
		return err
	}
	if err := r.applyIPVS(ctx); err != nil {
		return err
	}
	if err := r.writeFile(ctx, StepModules, o.ModulesFile, ModulesFileContent(o.Service.Service.Scheduler), ModulesFileMode); err != nil {
		return err
	}
	if err := r.kubeadm(ctx); err != nil {
		return err
	}
	if err := r.writeAfterKubeadm(StepManifestAfter, o.ManifestPath, o.Manifest, ManifestFileMode); err != nil {
		return err
	}
	if o.DryRun {
		r.say("dry run: nothing was changed")
		return nil
	}
	r.say("done: the master joined through the VIP %s, where %s stays mapped; the watchdog starts from %s and adds this master's apiserver, preferred, once it is healthy",
		o.Service.Service, ControlPlaneHost, o.ManifestPath)
	return nil
}

// writeAfterKubeadm writes a file once kubeadm succeeded: nothing is
// undone any more, so a failure keeps the node as it is (the name maps to
// the VIP, the one-shot IPVS rules work) and says how to finish.
func (r *joinRun) writeAfterKubeadm(step, path string, data []byte, perm fs.FileMode) error {
	if r.o.DryRun {
		r.say("[%s] would write %s (mode %04o):\n%s", step, path, perm, indent(data))
		return nil
	}
	_, err := r.j.Files.MkdirAll(dirOf(path), 0o700)
	if err == nil {
		err = r.j.Files.WriteFile(path, data, perm)
	}
	if err != nil {
		return &JoinError{Op: r.op, Step: step, Err: fmt.Errorf("write %s: %w", path, err),
			Kept: fmt.Sprintf("kubeadm %s succeeded, so nothing was undone: %s maps to the VIP, whose rules work but are not watched; write the watchdog's manifest with `vipctl manifest --output-file %s ...` (the join's flags)", r.op, ControlPlaneHost, path)}
	}
	r.say("[%s] wrote %s", step, path)
	return nil
}

// setHosts maps the API name to addr, remembering how to undo it.
func (r *joinRun) setHosts(ctx context.Context, addr netip.Addr, step string) error {
	if r.o.DryRun {
		r.say("[%s] would map %s to %s in the hosts file (one line marked %q)", step, ControlPlaneHost, addr, hosts.Marker)
		return nil
	}
	snap, err := r.j.Hosts.Snapshot()
	if err != nil {
		return r.fail(ctx, step, fmt.Errorf("read the hosts file: %w", err), "")
	}
	changed, err := r.j.Hosts.Set(ctx, ControlPlaneHost, addr)
	if changed || err != nil {
		// Restore even after an error: the file may have changed.
		r.undo.Push("hosts file restored", func(ctx context.Context) error {
			_, err := r.j.Hosts.Restore(ctx, snap)
			return err
		})
	}
	if err != nil {
		return r.fail(ctx, step, fmt.Errorf("map %s to %s: %w", ControlPlaneHost, addr, err), "")
	}
	r.say("[%s] %s -> %s", step, ControlPlaneHost, addr)
	return nil
}

// applyIPVS converges the virtual server and the VIP plumbing once, so that
// kubeadm reaches the apiservers through the VIP, and remembers how to put
// back what was there.
func (r *joinRun) applyIPVS(ctx context.Context) error {
	o := r.o
	if o.DryRun {
		r.say("[%s] would converge the virtual server %s (scheduler %s, masquerade) with real servers %s", StepIPVS,
			o.Service.Service, o.Service.Service.Scheduler, realServers(r.desired))
		switch o.VIP.Mode {
		case ipvs.ModeRoute:
			r.say("[%s] would add the route %s/32 via this node's interface, source %s", StepIPVS, o.VIP.VIP, o.VIP.NodeIP)
		default:
			r.say("[%s] would put %s/32 on the dummy interface %s, local route source %s", StepIPVS, o.VIP.VIP, o.VIP.Interface, o.VIP.NodeIP)
		}
		return nil
	}
	dp := r.dp
	if dp == nil {
		return r.fail(ctx, StepIPVS, errors.New("IPVS dataplane not opened"), "")
	}
	changes, undo, err := ipvs.Converge(ctx, dp, dp, o.VIP, r.desired)
	if err != nil {
		// Converge has undone its own changes.
		return r.fail(ctx, StepIPVS, err, "")
	}
	for _, c := range changes {
		r.log.Info("changed", zap.String("op", string(c.Op)), zap.String("kind", string(c.Kind)), zap.String("target", c.Target), zap.String("detail", c.Detail))
		r.say("[%s] %s", StepIPVS, c)
	}
	if len(changes) == 0 {
		r.say("[%s] the virtual server and the VIP are already in place", StepIPVS)
	}
	// A later step's failure puts the virtual server and the VIP plumbing
	// back as they were, by Converge's own record.
	r.undo.Adopt(undo)
	return nil
}

func realServers(d ipvs.Desired) string {
	s := make([]string, len(d.RealServers))
	for i, rs := range d.RealServers {
		s[i] = rs.Addr.String()
	}
	return strings.Join(s, ", ")
}

// writeFile writes path atomically, remembering its previous content (or
// absence, and the folders it created) to put back.
func (r *joinRun) writeFile(ctx context.Context, step, path string, data []byte, perm fs.FileMode) error {
	if r.o.DryRun {
		r.say("[%s] would write %s (mode %04o):\n%s", step, path, perm, indent(data))
		return nil
	}
	files := r.j.Files
	old, err := files.ReadFile(path)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r.fail(ctx, step, fmt.Errorf("read %s: %w", path, err), "")
	}
	if existed && string(old) == string(data) {
		r.say("[%s] %s is already up to date", step, path)
		return nil
	}
	dirPerm := fs.FileMode(0o700)
	if perm&0o044 != 0 {
		dirPerm = 0o755
	}
	created, err := files.MkdirAll(dirOf(path), dirPerm)
	for i := range created {
		dir := created[i]
		r.undo.Push("folder "+dir+" removed", func(context.Context) error {
			err := files.Remove(dir)
			if err != nil && isNotEmpty(err) {
				r.log.Warn("folder not removed: something else wrote into it", zap.String("folder", dir))
				return nil
			}
			return err
		})
	}
	if err != nil {
		return r.fail(ctx, step, fmt.Errorf("create the folder of %s: %w", path, err), "")
	}
	if err := files.WriteFile(path, data, perm); err != nil {
		return r.fail(ctx, step, fmt.Errorf("write %s: %w", path, err), "")
	}
	if existed {
		r.undo.Push(path+" restored", func(context.Context) error { return files.WriteFile(path, old, perm) })
	} else {
		r.undo.Push(path+" removed", func(context.Context) error { return files.Remove(path) })
	}
	r.say("[%s] wrote %s", step, path)
	return nil
}

func dirOf(path string) string {
	i := strings.LastIndexByte(path, '/')
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return path[:i]
}

func indent(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}

// kubeadmArgs returns kubeadm's arguments (a configuration file named
// configPath when the run has one) and the secrets to redact from its output.
func (r *joinRun) kubeadmArgs(configPath string) (args, secrets []string) {
	if r.config == nil {
		return r.o.KubeadmCommand(), Secrets(r.o.KubeadmArgs)
	}
	args = append([]string{r.op, "--config", configPath}, r.pass...)
	return args, append(Secrets(r.o.KubeadmArgs), SecretsIn(r.config)...)
}

// kubeadm runs `kubeadm join` (or init), streaming its redacted output.
// A configuration is handed over in a private temporary file, removed
// when kubeadm ends.
func (r *joinRun) kubeadm(ctx context.Context) error {
	o := r.o
	if o.DryRun {
		args, _ := r.kubeadmArgs("<a private temporary file>/" + r.configName)
		if r.config != nil {
			r.say("[%s] would hand kubeadm this configuration (mode 0600, secrets redacted here, removed afterwards):\n%s", StepKubeadm, indent([]byte(RedactConfig(r.config))))
		}
		r.say("[%s] would run: %s", StepKubeadm, strings.Join(append([]string{o.Kubeadm}, RedactArgs(args)...), " "))
		return nil
	}
	path, err := r.j.Runner.LookPath(o.Kubeadm)
	if err != nil {
		return r.fail(ctx, StepKubeadm, fmt.Errorf("--kubeadm %q: %w", o.Kubeadm, err), "")
	}
	configPath := ""
	if r.config != nil {
		p, remove, err := r.j.temp().WriteTemp(r.configName, r.config)
		if err != nil {
			return r.fail(ctx, StepKubeadm, fmt.Errorf("kubeadm's configuration file: %w", err), "")
		}
		configPath = p
		defer func() {
			if err := remove(); err != nil {
				r.log.Error("remove kubeadm's configuration file", zap.String("path", p), zap.Error(err))
				r.say("[%s] warning: could not remove %s, which holds secrets: %v; remove it by hand", StepKubeadm, p, err)
			}
		}()
	}
	args, secrets := r.kubeadmArgs(configPath)
	shown := strings.Join(append([]string{o.Kubeadm}, RedactArgs(args)...), " ")
	r.say("[%s] running: %s", StepKubeadm, shown)
	r.log.Info("running kubeadm", zap.String("command", shown))
	w := newRedactingWriter(r.j.KubeadmOutput, secrets, outputLines)
	err = r.j.Runner.Run(ctx, path, args, w)
	w.Flush()
	if err != nil {
		return r.fail(ctx, StepKubeadm, fmt.Errorf("%s: %s", shown, RedactText(err.Error(), secrets)), w.Tail())
	}
	r.say("[%s] kubeadm %s succeeded", StepKubeadm, r.op)
	return nil
}
