package kubeadm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/vipctl/vipctl/ipvs"
)

// Defaults of `vipctl init`.
const (
	// DefaultSecretsDir is where vipctl init writes the join secrets.
	DefaultSecretsDir = "/etc/kubernetes/vipctl-join"
	// DefaultCertificatesDir is kubeadm's certificatesDir default.
	DefaultCertificatesDir = "/etc/kubernetes/pki"
	// TokenFileName and CertificateKeyFileName are the secrets' files in
	// the secrets folder.
	TokenFileName          = "token"
	CertificateKeyFileName = "certificate-key"
	// SecretFileMode is the secrets' files' mode.
	SecretFileMode fs.FileMode = 0o600
)

// StepSecrets is the step writing the join secrets after kubeadm init.
const StepSecrets = "secrets"

// initPassFlags are the kubeadm init flags kubeadm accepts along with
// --config; any other belongs in the configuration.
var initPassFlags = []string{"--v", "-v", "--dry-run", "--ignore-preflight-errors", "--skip-phases", "--node-name",
	"--skip-token-print", "--skip-certificate-key-print", "--upload-certs", "--rootfs"}

// InitOptions describe one `vipctl init` on the first master, validated by
// the caller.
type InitOptions struct {
	// Config is the kubeadm configuration: Merge's output for this master
	// (InitConfiguration, ClusterConfiguration, KubeProxyConfiguration...).
	// Init adds a bootstrap token and a certificate key unless it has them.
	Config []byte
	// VIP is the virtual server the other nodes join through.
	VIP netip.AddrPort
	// Masters are every master, this one included, in the order given.
	Masters []netip.AddrPort
	// NodeIP is this master's address, one of Masters.
	NodeIP netip.Addr
	// Kubeadm is the kubeadm command, a name looked up in PATH or a path.
	Kubeadm string
	// KubeadmArgs are flags for `kubeadm init --config F --upload-certs`,
	// only those kubeadm accepts with --config (initPassFlags).
	KubeadmArgs []string
	// SecretsDir is where the token and the certificate key are written
	// (0600) after kubeadm init succeeds; "" writes none.
	SecretsDir string
	// DryRun prints every step and file and changes nothing.
	DryRun bool
	// Mode and Interface are the VIP plumbing (ipvs.ModeLink and its
	// dummy interface, or ipvs.ModeRoute).
	Mode      ipvs.Mode
	Interface string
	// Manifest is the watchdog's static pod (every master, this one
	// included), written to ManifestPath after kubeadm init.
	Manifest     []byte
	ManifestPath string
	// ModulesFile is the modules-load.d file, written before kubeadm init.
	ModulesFile string
}

// HostsAddr is the address apiserver.cluster.local maps to on the first
// master, as on every node: the VIP, written once before kubeadm init and
// never rewritten. The VIP's virtual server has this master's own
// apiserver as its one real server until the watchdog adds the others.
func (o InitOptions) HostsAddr() netip.Addr {
	return o.VIP.Addr()
}

// vipConfig is the VIP plumbing of the first master.
func (o InitOptions) vipConfig() ipvs.VIPConfig {
	return ipvs.VIPConfig{Mode: o.Mode, Interface: o.Interface, VIP: o.VIP.Addr(), NodeIP: o.NodeIP}
}

// self is this master's apiserver, the one of Masters at NodeIP.
func (o InitOptions) self() netip.AddrPort {
	for _, m := range o.Masters {
		if m.Addr() == o.NodeIP {
			return m
		}
	}
	return netip.AddrPort{}
}

// Desired is the first master's one-shot virtual server: its own apiserver
// alone, with the local preference (ipvs.MasterScheduler, ipvs.LocalWeight).
func (o InitOptions) Desired() ipvs.Desired {
	return ipvs.Desired{Service: ipvs.Service{VIP: o.VIP, Protocol: ipvs.ProtocolTCP, Scheduler: ipvs.MasterScheduler},
		RealServers: []ipvs.RealServer{{Addr: o.self(), Weight: ipvs.LocalWeight}}}
}

// Validate checks o before anything is read or changed; errors name the
// flag and the value.
func (o InitOptions) Validate() error {
	if len(o.Masters) == 0 {
		return errors.New("--master: at least one master is required, this one included")
	}
	if !o.VIP.IsValid() {
		return errors.New("--vip: required")
	}
	if !o.NodeIP.IsValid() {
		return errors.New("--node-ip: this master's address is required")
	}
	if !slices.ContainsFunc(o.Masters, func(m netip.AddrPort) bool { return m.Addr() == o.NodeIP }) {
		return fmt.Errorf("--node-ip %s: not among the --master addresses (%s): list this master too", o.NodeIP, joinAddrs(o.Masters))
	}
	if o.Kubeadm == "" {
		return errors.New("--kubeadm: empty")
	}
	if len(o.Config) == 0 {
		return errors.New("kubeadm configuration: empty")
	}
	if err := o.vipConfig().Validate(); err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	if o.Mode == ipvs.ModeRoute {
		return fmt.Errorf("--mode %s: %s", o.Mode, ipvs.ErrRouteModeLocal)
	}
	if err := o.Desired().Validate(); err != nil {
		return err
	}
	if err := validateNodeFiles(o.ManifestPath, o.Manifest, o.ModulesFile); err != nil {
		return err
	}
	for i := 0; i < len(o.KubeadmArgs); i++ {
		a := o.KubeadmArgs[i]
		name, _, _ := strings.Cut(a, "=")
		if !strings.HasPrefix(a, "-") {
			return fmt.Errorf("kubeadm argument %q: give only flags after --", RedactArgs([]string{a})[0])
		}
		if !slices.Contains(initPassFlags, name) {
			return fmt.Errorf("kubeadm argument %s: kubeadm init refuses it along with --config; set its field in vipctl's --config (a kubeadm configuration) instead", name)
		}
	}
	return nil
}

// initSecrets are the secrets the other nodes join with.
type initSecrets struct {
	token, certificateKey string
	// certificatesDir is the cluster's, where ca.crt is.
	certificatesDir string
}

// addInitSecrets returns config with a bootstrap token and a certificate
// key in its InitConfiguration (new random ones unless it has them), and
// the secrets.
func addInitSecrets(config []byte) ([]byte, initSecrets, error) {
	var s initSecrets
	docs, err := splitDocuments(config)
	if err != nil {
		return nil, s, fmt.Errorf("kubeadm configuration: %w", err)
	}
	var initc *yaml.Node
	s.certificatesDir = DefaultCertificatesDir
	for _, d := range docs {
		apiVersion, kind := typeOf(d)
		if !strings.HasPrefix(apiVersion, Group+"/") {
			continue
		}
		switch kind {
		case kindInit:
			initc = d.Content[0]
		case kindCluster:
			if v := scalarAt(d.Content[0], "certificatesDir"); v != "" {
				s.certificatesDir = v
			}
		}
	}
	if initc == nil {
		return nil, s, errors.New("kubeadm configuration: no InitConfiguration")
	}
	if tokens := lookupSeq(initc, "bootstrapTokens"); len(tokens) > 0 {
		s.token = scalarAt(tokens[0], "token")
		if err := CheckToken(s.token); err != nil {
			return nil, s, fmt.Errorf("--config: InitConfiguration bootstrapTokens[0].token: %w", err)
		}
	} else {
		if s.token, err = NewBootstrapToken(); err != nil {
			return nil, s, err
		}
		seq, ok := ensure(initc, "bootstrapTokens", yaml.SequenceNode, "!!seq")
		if !ok {
			return nil, s, fmt.Errorf("--config: InitConfiguration bootstrapTokens: want a list, found %s", describe(seq))
		}
		tok := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		setScalar(tok, "token", s.token, "!!str")
		setScalar(tok, "description", "written by vipctl init for the other nodes' joins", "!!str")
		seq.Content = append(seq.Content, tok)
	}
	if s.certificateKey = scalarAt(initc, "certificateKey"); s.certificateKey != "" {
		if err := CheckCertificateKey(s.certificateKey); err != nil {
			return nil, s, fmt.Errorf("--config: InitConfiguration certificateKey: %w", err)
		}
	} else {
		if s.certificateKey, err = NewCertificateKey(); err != nil {
			return nil, s, err
		}
		setScalar(initc, "certificateKey", s.certificateKey, "!!str")
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, s, fmt.Errorf("encode config: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, s, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), s, nil
}

// CAHash returns the discovery hash of a PEM CA certificate:
// "sha256:" and the hex SHA-256 of its public key (its
// SubjectPublicKeyInfo), as kubeadm computes it.
func CAHash(pemData []byte) (string, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("parse the certificate: %w", err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Init sets up the first master: preflight, hosts file -> the VIP (once,
// for good), the virtual server with this master's own apiserver as its
// one real server and the VIP plumbing, the modules-load file, then
// `kubeadm init --config F --upload-certs` with the configuration in a
// private temporary file, then the watchdog's manifest (every master; it
// adds the others once they are healthy), the join secrets written to
// SecretsDir and the `vipctl join` command lines of the other nodes
// printed. When a step up to and including kubeadm init fails, what this
// run changed is undone and a *JoinError (Op "init") tells the step, the
// error and kubeadm's output.
func (j *Joiner) Init(ctx context.Context, o InitOptions) error {
	if err := o.Validate(); err != nil {
		return &JoinError{Op: "init", Step: StepValidate, Err: err}
	}
	config, secrets, err := addInitSecrets(o.Config)
	if err != nil {
		return &JoinError{Op: "init", Step: StepValidate, Err: err}
	}
	log := j.Log
	if log == nil {
		log = zap.NewNop()
	}
	pass := append([]string(nil), o.KubeadmArgs...)
	if !hasFlag(pass, "--upload-certs") {
		pass = append(pass, "--upload-certs")
	}
	all := ipvs.Desired{Service: o.Desired().Service}
	for _, m := range o.Masters {
		all.RealServers = append(all.RealServers, ipvs.RealServer{Addr: m, Weight: ipvs.DefaultWeight})
	}
	r := &joinRun{j: j, log: log, op: "init", config: config, configName: "kubeadm.yaml", pass: pass,
		o:       JoinOptions{Kubeadm: o.Kubeadm, KubeadmArgs: o.KubeadmArgs, DryRun: o.DryRun, Service: all, VIP: o.vipConfig()},
		desired: o.Desired()}
	r.say("initialising the first master %s (the VIP %s, masters %s)%s", o.NodeIP, o.VIP, joinAddrs(o.Masters), dryNote(o.DryRun))

	// Preflight: nothing is changed until every check passed.
	var problems []error
	if p, err := j.Runner.LookPath(o.Kubeadm); err != nil {
		problems = append(problems, fmt.Errorf("--kubeadm %q: not found: %w", o.Kubeadm, err))
	} else {
		r.say("[preflight] kubeadm: %s", p)
	}
	if ifs, err := j.Inspector.InterfacesWith(ctx, o.NodeIP); err != nil {
		problems = append(problems, fmt.Errorf("--node-ip %s: %w", o.NodeIP, err))
	} else if len(ifs) == 0 {
		problems = append(problems, fmt.Errorf("--node-ip %s: not an address of this node", o.NodeIP))
	} else {
		r.say("[preflight] node IP %s on %s", o.NodeIP, strings.Join(ifs, ", "))
	}
	if _, err := j.Hosts.Snapshot(); err != nil {
		problems = append(problems, fmt.Errorf("hosts file: %w", err))
	}
	if err := r.finishPreflight(ctx, problems, nil); err != nil {
		return err
	}

	if err := r.setHosts(ctx, o.HostsAddr(), StepHosts); err != nil {
		return err
	}
	if err := r.applyIPVS(ctx); err != nil {
		return err
	}
	if err := r.writeFile(ctx, StepModules, o.ModulesFile, ModulesFileContent(ipvs.MasterScheduler), ModulesFileMode); err != nil {
		return err
	}
	if err := r.kubeadm(ctx); err != nil {
		return err
	}
	if err := r.writeAfterKubeadm(StepManifestAfter, o.ManifestPath, o.Manifest, ManifestFileMode); err != nil {
		return err
	}
	r.grantRBAC(ctx, o)
	return r.initDone(o, secrets)
}

// AdminKubeconfig is the admin kubeconfig kubeadm init writes.
const AdminKubeconfig = "/etc/kubernetes/admin.conf"

// grantRBAC lets the nodes' watchdogs discover the masters. kubeadm init
// succeeded, so a failure is only told: the watchdogs then work from their
// --master list until `vipctl rbac apply` is run.
func (r *joinRun) grantRBAC(ctx context.Context, o InitOptions) {
	switch {
	case r.j.RBAC == nil:
	case o.DryRun:
		r.say("[rbac] would let the nodes discover the masters (vipctl rbac apply --kubeconfig %s)", AdminKubeconfig)
	default:
		if err := r.j.RBAC(ctx, AdminKubeconfig); err != nil {
			r.say("[rbac] warning: %v; the watchdogs use their --master list until you run: vipctl rbac apply --kubeconfig %s", err, AdminKubeconfig)
			return
		}
		r.say("[rbac] the nodes may discover the masters (Role vipctl:endpointslice-reader in default)")
	}
}

// initDone writes the join secrets and prints the other nodes' join
// commands. kubeadm init succeeded: nothing is undone any more.
func (r *joinRun) initDone(o InitOptions, s initSecrets) error {
	caFile := path.Join(s.certificatesDir, "ca.crt")
	hash := "sha256:<the hash kubeadm init printed>"
	if o.DryRun {
		r.say("[%s] would read the discovery hash from %s", StepSecrets, caFile)
	} else if b, err := r.j.Files.ReadFile(caFile); err != nil {
		r.say("[%s] warning: read the cluster CA %s: %v; take the hash from kubeadm's output", StepSecrets, caFile, err)
	} else if h, err := CAHash(b); err != nil {
		r.say("[%s] warning: the cluster CA %s: %v; take the hash from kubeadm's output", StepSecrets, caFile, err)
	} else {
		hash = h
	}
	tokenFile, keyFile := "TOKEN-FILE", "CERTIFICATE-KEY-FILE"
	if o.SecretsDir != "" {
		tokenFile, keyFile = path.Join(o.SecretsDir, TokenFileName), path.Join(o.SecretsDir, CertificateKeyFileName)
		if err := r.writeSecrets(o.SecretsDir, tokenFile, keyFile, s); err != nil {
			return &JoinError{Op: "init", Step: StepSecrets, Err: err,
				Kept: "kubeadm init succeeded, so nothing was undone: create the secrets with `kubeadm token create` and `kubeadm init phase upload-certs --upload-certs`"}
		}
	}
	common := "--vip " + o.VIP.String()
	for _, m := range o.Masters {
		common += " --master " + m.String()
	}
	if o.DryRun {
		r.say("dry run done; a real run ends with the join lines:")
	} else {
		r.say("done: this node is the first master; %s maps to the VIP %s, whose virtual server prefers this master's own apiserver %s", ControlPlaneHost, o.VIP, o.self())
	}
	if o.SecretsDir != "" {
		r.say("The join secrets are in %s (mode %04o; the token expires in 24 h, the certificate key in 2 h).", o.SecretsDir, SecretFileMode)
		r.say("Copy them to each node (e.g. scp -p), then run there:")
	} else {
		r.say("Create a token file (`kubeadm token create`) and, for masters, a certificate key file (`kubeadm init phase upload-certs --upload-certs`), mode 0600, on each node, then run there:")
	}
	r.say("  # a worker:")
	r.say("  vipctl join %s --token-file %s -- --discovery-token-ca-cert-hash %s", common, tokenFile, hash)
	r.say("  # another master (add --node-ip ITS-IP when it has several addresses):")
	r.say("  vipctl join --control-plane %s --token-file %s --certificate-key-file %s -- --discovery-token-ca-cert-hash %s", common, tokenFile, keyFile, hash)
	return nil
}

// writeSecrets writes the token and the certificate key, 0600, in dir
// (created 0700 when missing).
func (r *joinRun) writeSecrets(dir, tokenFile, keyFile string, s initSecrets) error {
	if r.o.DryRun {
		r.say("[%s] would write the bootstrap token to %s and the certificate key to %s (mode %04o)", StepSecrets, tokenFile, keyFile, SecretFileMode)
		return nil
	}
	if _, err := r.j.Files.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, f := range []struct{ path, value string }{{tokenFile, s.token}, {keyFile, s.certificateKey}} {
		if err := r.j.Files.WriteFile(f.path, []byte(f.value+"\n"), SecretFileMode); err != nil {
			return fmt.Errorf("write %s: %s", f.path, RedactText(err.Error(), []string{s.token, s.certificateKey}))
		}
	}
	r.say("[%s] wrote %s and %s", StepSecrets, tokenFile, keyFile)
	return nil
}

// ParseAddresses returns the VIP and the masters of o, checked as Merge
// checks them (errors name --vip and --master).
func ParseAddresses(o Options) (vip netip.AddrPort, masters []netip.AddrPort, err error) {
	p, err := parseOptions(o)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	return p.vip, p.masters, nil
}
