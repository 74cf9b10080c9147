package kubeadm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

const kindJoin = "JoinConfiguration"

// JoinConfigInput is what a JoinConfiguration is rendered from.
type JoinConfigInput struct {
	// Endpoint is discovery.bootstrapToken.apiServerEndpoint, replacing the
	// config's.
	Endpoint string
	// ControlPlane joins a master: the controlPlane section is written.
	ControlPlane bool
	// Args are the user's kubeadm join flags (after --). kubeadm refuses
	// --config with most flags, so each is turned into its field; the few
	// kubeadm accepts along with --config (--v, --dry-run) are returned
	// to be passed on.
	Args []string
	// Token and CertificateKey come from files; "" when not given.
	Token          string
	CertificateKey string
	// Config is the user's JoinConfiguration (one document); nil for none.
	Config []byte
}

// joinFlag says where a kubeadm join flag goes in a JoinConfiguration.
type joinFlag struct {
	path []string
	// kind: "str", "int", "bool" (a flag without value sets true), "list"
	// (appended; comma-separated values split).
	kind string
}

var joinFlags = map[string]joinFlag{
	"--token":                                       {[]string{"discovery", "bootstrapToken", "token"}, "str"},
	"--discovery-token":                             {[]string{"discovery", "bootstrapToken", "token"}, "str"},
	"--tls-bootstrap-token":                         {[]string{"discovery", "tlsBootstrapToken"}, "str"},
	"--discovery-token-ca-cert-hash":                {[]string{"discovery", "bootstrapToken", "caCertHashes"}, "list"},
	"--discovery-token-unsafe-skip-ca-verification": {[]string{"discovery", "bootstrapToken", "unsafeSkipCAVerification"}, "bool"},
	"--certificate-key":                             {[]string{"controlPlane", "certificateKey"}, "str"},
	"--control-plane":                               {nil, "bool"},
	"--apiserver-advertise-address":                 {[]string{"controlPlane", "localAPIEndpoint", "advertiseAddress"}, "str"},
	"--apiserver-bind-port":                         {[]string{"controlPlane", "localAPIEndpoint", "bindPort"}, "int"},
	"--node-name":                                   {[]string{"nodeRegistration", "name"}, "str"},
	"--cri-socket":                                  {[]string{"nodeRegistration", "criSocket"}, "str"},
	"--ignore-preflight-errors":                     {[]string{"nodeRegistration", "ignorePreflightErrors"}, "list"},
	"--skip-phases":                                 {[]string{"skipPhases"}, "list"},
	"--patches":                                     {[]string{"patches", "directory"}, "str"},
}

// passFlags are the kubeadm join flags kubeadm accepts with --config; they
// stay on its command line. The value tells whether the flag takes a value
// (as "--v 5" or "--v=5").
var passFlags = map[string]bool{"--v": true, "-v": true, "--dry-run": false}

// RenderJoinConfiguration returns a JoinConfiguration for `kubeadm join
// --config` (the user's, when given, with every field kept), the flags to
// pass along with --config, and warnings (never holding a secret). Errors
// name the flag and never hold a secret.
func RenderJoinConfiguration(in JoinConfigInput) (config []byte, pass []string, warnings []string, err error) {
	var root *yaml.Node
	var doc *yaml.Node
	api := DefaultAPIVersion
	if len(in.Config) > 0 {
		docs, err := splitDocuments(in.Config)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--config: %w", err)
		}
		if len(docs) != 1 {
			return nil, nil, nil, fmt.Errorf("--config: want one %s document, found %d", kindJoin, len(docs))
		}
		apiVersion, kind := typeOf(docs[0])
		group, version, _ := strings.Cut(apiVersion, "/")
		if group != Group || kind != kindJoin {
			return nil, nil, nil, fmt.Errorf("--config: apiVersion %q kind %q: want %s/%s %s", apiVersion, kind, Group, V1Beta4, kindJoin)
		}
		if version != V1Beta4 && version != V1Beta3 {
			return nil, nil, nil, fmt.Errorf("--config: kubeadm API %s is not supported: want %s or %s (see kubeadm config migrate)", apiVersion, V1Beta4, V1Beta3)
		}
		api = version
		doc = docs[0]
		root = doc.Content[0]
	} else {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		setScalar(root, "apiVersion", Group+"/"+api, "!!str")
		setScalar(root, "kind", kindJoin, "!!str")
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	}
	if lookup(lookup(root, "discovery"), "file") != nil {
		return nil, nil, nil, fmt.Errorf("--config: discovery.file is not supported: vipctl joins through %s with token discovery", in.Endpoint)
	}

	// The flags after --.
	given := map[string]bool{}
	args := in.Args
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(a, "=")
		if takesValue, ok := passFlags[name]; ok {
			pass = append(pass, a)
			if takesValue && !hasValue && i+1 < len(args) {
				i++
				pass = append(pass, args[i])
			}
			continue
		}
		f, ok := joinFlags[name]
		if !ok {
			return nil, nil, nil, fmt.Errorf("kubeadm argument %s: vipctl hands kubeadm a JoinConfiguration (secrets from files or --config) and does not know where this flag goes; set its field in --config instead", name)
		}
		if f.kind == "bool" {
			if hasValue {
				b, err := strconv.ParseBool(value)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("kubeadm argument %s: want true or false", a)
				}
				value = strconv.FormatBool(b)
			} else {
				value = "true"
			}
		} else if !hasValue {
			if i+1 >= len(args) {
				return nil, nil, nil, fmt.Errorf("kubeadm argument %s: needs a value", name)
			}
			i++
			value = args[i]
		}
		secret := slices.Contains(secretFlags, name)
		shown := value
		if secret {
			shown = Redacted
		}
		if f.path == nil { // --control-plane
			if value == "false" && in.ControlPlane {
				return nil, nil, nil, fmt.Errorf("kubeadm argument %s=false: contradicts --control-plane", name)
			}
			continue
		}
		if f.kind != "list" && given[strings.Join(f.path, ".")] {
			return nil, nil, nil, fmt.Errorf("kubeadm argument %s: given twice, or with a flag of the same field", name)
		}
		given[strings.Join(f.path, ".")] = true
		if err := setPath(root, f, value, shown, name); err != nil {
			return nil, nil, nil, err
		}
	}

	// Secrets from files.
	if in.Token != "" {
		if given["discovery.bootstrapToken.token"] {
			return nil, nil, nil, errors.New("--token-file: the token is also given after -- (--token or --discovery-token): give it once")
		}
		if scalarAt(root, "discovery", "bootstrapToken", "token") != "" {
			warnings = append(warnings, "--token-file: replaces discovery.bootstrapToken.token of --config")
		}
		if err := setPath(root, joinFlags["--token"], in.Token, Redacted, "--token-file"); err != nil {
			return nil, nil, nil, err
		}
	}
	if in.CertificateKey != "" {
		if !in.ControlPlane {
			return nil, nil, nil, errors.New("--certificate-key-file: only a master (--control-plane) uses a certificate key")
		}
		if given["controlPlane.certificateKey"] {
			return nil, nil, nil, errors.New("--certificate-key-file: the certificate key is also given after -- (--certificate-key): give it once")
		}
		if scalarAt(root, "controlPlane", "certificateKey") != "" {
			warnings = append(warnings, "--certificate-key-file: replaces controlPlane.certificateKey of --config")
		}
		if err := setPath(root, joinFlags["--certificate-key"], in.CertificateKey, Redacted, "--certificate-key-file"); err != nil {
			return nil, nil, nil, err
		}
	}

	// vipctl's part: the endpoint, and the control plane section.
	bt, err := childMap(mustChild(root, "discovery"), kindJoin+" discovery", "bootstrapToken")
	if err != nil {
		return nil, nil, nil, err
	}
	if old := scalarAt(bt, "apiServerEndpoint"); old != "" && old != in.Endpoint {
		warnings = append(warnings, fmt.Sprintf("JoinConfiguration discovery.bootstrapToken.apiServerEndpoint %q replaced by %q", old, in.Endpoint))
	}
	setScalar(bt, "apiServerEndpoint", in.Endpoint, "!!str")
	if scalarAt(bt, "token") == "" {
		return nil, nil, nil, errors.New("no bootstrap token: give --token-file (or --token after --, visible to local users) or discovery.bootstrapToken.token in --config")
	}
	if err := CheckToken(scalarAt(bt, "token")); err != nil {
		return nil, nil, nil, fmt.Errorf("the bootstrap token: %w", err)
	}
	if len(lookupSeq(bt, "caCertHashes")) == 0 && scalarAt(bt, "unsafeSkipCAVerification") != "true" {
		return nil, nil, nil, errors.New("kubeadm argument --discovery-token-ca-cert-hash: required (or discovery.bootstrapToken.caCertHashes in --config): it is how the node knows the cluster's CA")
	}
	cp := lookup(root, "controlPlane")
	switch {
	case in.ControlPlane:
		if _, err := childMap(root, kindJoin, "controlPlane"); err != nil {
			return nil, nil, nil, err
		}
	case cp != nil && !(cp.Kind == yaml.ScalarNode && cp.Tag == "!!null"):
		return nil, nil, nil, errors.New("--config: JoinConfiguration has a controlPlane section: join a master with --control-plane")
	}
	if k := scalarAt(root, "controlPlane", "certificateKey"); k != "" {
		if err := CheckCertificateKey(k); err != nil {
			return nil, nil, nil, fmt.Errorf("the certificate key: %w", err)
		}
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, nil, nil, fmt.Errorf("encode JoinConfiguration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, nil, nil, fmt.Errorf("encode JoinConfiguration: %w", err)
	}
	return buf.Bytes(), pass, warnings, nil
}

// mustChild returns the mapping under key, created when absent; a node of
// another kind is left for the caller's childMap to report.
func mustChild(m *yaml.Node, key string) *yaml.Node {
	v, _ := ensure(m, key, yaml.MappingNode, "!!map")
	return v
}

// setPath sets the field of f to value; shown is the value as errors may
// show it.
func setPath(root *yaml.Node, f joinFlag, value, shown, flag string) error {
	m := root
	for _, key := range f.path[:len(f.path)-1] {
		var err error
		if m, err = childMap(m, kindJoin+" "+strings.Join(f.path, "."), key); err != nil {
			return err
		}
	}
	last := f.path[len(f.path)-1]
	switch f.kind {
	case "str":
		if value == "" {
			return fmt.Errorf("kubeadm argument %s: empty value", flag)
		}
		setScalar(m, last, value, "!!str")
	case "int":
		if _, err := strconv.ParseUint(value, 10, 16); err != nil {
			return fmt.Errorf("kubeadm argument %s %q: want a port number", flag, shown)
		}
		setScalar(m, last, value, "!!int")
	case "bool":
		setScalar(m, last, value, "!!bool")
	case "list":
		var items []string
		for _, v := range strings.Split(value, ",") {
			if v = strings.TrimSpace(v); v != "" {
				items = append(items, v)
			}
		}
		return appendUnique(m, kindJoin+" "+strings.Join(f.path, "."), last, items, func(a, b string) bool { return a == b })
	}
	return nil
}

// SecretsIn returns the secrets of a rendered JoinConfiguration or kubeadm
// init configuration, to redact them from kubeadm's output.
func SecretsIn(config []byte) []string {
	var out []string
	docs, err := splitDocuments(config)
	if err != nil {
		return nil
	}
	for _, d := range docs {
		root := d.Content[0]
		for _, p := range [][]string{
			{"discovery", "bootstrapToken", "token"},
			{"discovery", "tlsBootstrapToken"},
			{"controlPlane", "certificateKey"},
			{"certificateKey"},
		} {
			if v := scalarAt(root, p...); v != "" {
				out = append(out, v)
			}
		}
		for _, t := range lookupSeq(root, "bootstrapTokens") {
			if v := scalarAt(t, "token"); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// RedactConfig returns config with its secrets replaced by Redacted, for a
// dry run to show.
func RedactConfig(config []byte) string {
	return RedactText(string(config), SecretsIn(config))
}
