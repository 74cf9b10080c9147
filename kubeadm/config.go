// Package kubeadm renders the kubeadm configuration of a vipctl cluster's
// first master: a ClusterConfiguration whose controlPlaneEndpoint is
// apiserver.cluster.local (which /etc/hosts points at the VIP on workers), an
// InitConfiguration, and a KubeProxyConfiguration that leaves the VIP's
// virtual server alone (the VIP in ipvs.excludeCIDRs) in whichever mode the
// user picks. It can merge these settings into a user's
// existing multi-document kubeadm config without dropping anything of theirs.
package kubeadm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	// ControlPlaneHost is the name kubelets and kube-proxy use for the API:
	// /etc/hosts maps it to the VIP on workers and to the node on masters.
	ControlPlaneHost = "apiserver.cluster.local"
	// DefaultPort is the kube-apiserver's and the VIP's default port.
	DefaultPort = 6443
	// DefaultKubernetesVersion is the kubernetesVersion written when neither
	// the flag nor the user's config gives one (kubeadm's own default,
	// "stable-1", needs the internet).
	DefaultKubernetesVersion = "v1.34.4"
	// DefaultServiceSubnet is written when neither the flag nor the user's
	// config gives a service subnet: kubeadm's default, 10.96.0.0/12, holds
	// vipctl's default VIP 10.103.97.2, so a Service could be given the VIP.
	DefaultServiceSubnet = "10.96.0.0/16"
	// DefaultServiceSubnet6 is DefaultServiceSubnet for an IPv6 VIP (a
	// single-stack IPv6 cluster): kind's IPv6 service subnet, a /112 as
	// kube-apiserver wants (at most 2^20 addresses), outside vipctl's
	// default IPv6 VIP fd00:103:97::2.
	DefaultServiceSubnet6 = "fd00:10:96::/112"
	// DefaultAPIVersion is the kubeadm API version of new documents.
	DefaultAPIVersion = V1Beta4
)

const (
	kindCluster = "ClusterConfiguration"
	kindInit    = "InitConfiguration"
	kindProxy   = "KubeProxyConfiguration"
	proxyGroup  = "kubeproxy.config.k8s.io"
	proxyAPI    = proxyGroup + "/v1alpha1"
)

// Options describe the first master's kubeadm config. Empty strings mean
// "not given": the value of the merged config (Merge) or the default applies.
type Options struct {
	// VIP is the virtual IP, with or without a port (default port 6443).
	VIP string
	// Masters are the masters' addresses, IP or IP:port, at least one.
	Masters []string
	// AdvertiseAddress is this master's IP; default the first master's.
	AdvertiseAddress string
	// KubeadmAPI is v1beta4 or v1beta3; default the version of the merged
	// config's kubeadm documents, else DefaultAPIVersion.
	KubeadmAPI string
	// KubernetesVersion; default the merged config's, else DefaultKubernetesVersion.
	KubernetesVersion string
	// PodSubnet, ServiceSubnet: CIDRs, comma-separated for dual stack.
	// ServiceSubnet defaults to the merged config's, else DefaultServiceSubnet.
	PodSubnet     string
	ServiceSubnet string
	// ImageRepository is passed through when given.
	ImageRepository string
	// KubeProxyMode is kube-proxy's mode (one of KubeProxyModes), written
	// when the merged config sets none; "" writes no mode: kube-proxy's
	// default applies.
	KubeProxyMode string
}

// KubeProxyModes are the kube-proxy modes Options.KubeProxyMode accepts.
var KubeProxyModes = []string{"iptables", "ipvs", "nftables"}

// parsed holds validated options.
type parsed struct {
	vip       netip.AddrPort
	masters   []netip.AddrPort
	advertise netip.Addr // invalid when not given
	api       string     // "" when not given
}

// Render returns the kubeadm config for o as a multi-document YAML stream:
// InitConfiguration, ClusterConfiguration, KubeProxyConfiguration.
func Render(o Options) ([]byte, error) {
	out, _, err := Merge(o, nil)
	return out, err
}

// Merge sets vipctl's fields in existing, a user's multi-document kubeadm
// config (nil for none), and returns the result with warnings about values
// of the user's that it replaced. Every other field, comment and document of
// the user's is kept. vipctl owns and sets controlPlaneEndpoint, and appends, without duplicates, to
// apiServer.certSANs and ipvs.excludeCIDRs. The pass-through values
// (kubernetesVersion, networking.podSubnet and serviceSubnet,
// imageRepository, localAPIEndpoint) are written when given in o, or when
// missing and vipctl has a default for them. kube-proxy's mode is the
// user's when the config sets one (a different o.KubeProxyMode is a
// warning), else o.KubeProxyMode, else absent. Documents that are missing are
// appended. Nothing is returned on error.
func Merge(o Options, existing []byte) ([]byte, []string, error) {
	p, err := parseOptions(o)
	if err != nil {
		return nil, nil, err
	}
	docs, err := splitDocuments(existing)
	if err != nil {
		return nil, nil, fmt.Errorf("--config: %w", err)
	}
	var cluster, initc, proxy *yaml.Node
	var versions []string
	for _, d := range docs {
		apiVersion, kind := typeOf(d)
		group, version, _ := strings.Cut(apiVersion, "/")
		var slot **yaml.Node
		switch {
		case group == Group && kind == kindCluster:
			slot = &cluster
		case group == Group && kind == kindInit:
			slot = &initc
		case group == proxyGroup && kind == kindProxy:
			slot = &proxy
		}
		if group == Group && version != "" && !slices.Contains(versions, version) {
			versions = append(versions, version)
		}
		if slot == nil {
			continue
		}
		if *slot != nil {
			return nil, nil, fmt.Errorf("--config: two %s documents", kind)
		}
		*slot = d.Content[0]
	}
	api, err := chooseAPI(p.api, versions)
	if err != nil {
		return nil, nil, err
	}

	// Effective values: the flag, else the user's config, else the default.
	val := func(given string, doc *yaml.Node, def string, path ...string) string {
		if given != "" {
			return given
		}
		if v := scalarAt(doc, path...); v != "" {
			return v
		}
		return def
	}
	kubernetesVersion := val(o.KubernetesVersion, cluster, DefaultKubernetesVersion, "kubernetesVersion")
	defaultSubnet := DefaultServiceSubnet
	if p.vip.Addr().Is6() {
		defaultSubnet = DefaultServiceSubnet6
	}
	serviceSubnet := val(o.ServiceSubnet, cluster, defaultSubnet, "networking", "serviceSubnet")
	podSubnet := val(o.PodSubnet, cluster, "", "networking", "podSubnet")
	imageRepository := val(o.ImageRepository, cluster, "", "imageRepository")
	if err := checkOutside(p.vip.Addr(), "--service-subnet", o.ServiceSubnet, cluster, "serviceSubnet", serviceSubnet); err != nil {
		return nil, nil, err
	}
	if err := checkOutside(p.vip.Addr(), "--pod-subnet", o.PodSubnet, cluster, "podSubnet", podSubnet); err != nil {
		return nil, nil, err
	}
	advertise := p.advertise
	if !advertise.IsValid() {
		if v := scalarAt(initc, "localAPIEndpoint", "advertiseAddress"); v != "" {
			if advertise, err = netip.ParseAddr(v); err != nil {
				return nil, nil, fmt.Errorf("--config: InitConfiguration localAPIEndpoint.advertiseAddress %q: not an IP address", v)
			}
		} else {
			advertise = p.masters[0].Addr()
		}
	}
	if advertise == p.vip.Addr() {
		return nil, nil, fmt.Errorf("advertise address %s: equal to the --vip; give the master's own address", advertise)
	}
	bindPort := DefaultPort
	for _, m := range p.masters {
		if m.Addr() == advertise {
			bindPort = int(m.Port())
			break
		}
	}
	sans := certSANs(p)
	endpoint := ControlPlaneHost + ":" + strconv.Itoa(int(p.vip.Port()))
	exclude := hostPrefix(p.vip.Addr()).String()

	var warnings []string
	var added []*yaml.Node
	if initc == nil {
		n, err := toNode(InitConfiguration{
			TypeMeta:         typeMeta(Group+"/"+api, kindInit),
			LocalAPIEndpoint: APIEndpoint{AdvertiseAddress: advertise.String(), BindPort: int32(bindPort)},
		})
		if err != nil {
			return nil, nil, err
		}
		added = append(added, n)
	} else {
		ep, err := childMap(initc, kindInit, "localAPIEndpoint")
		if err != nil {
			return nil, nil, err
		}
		if p.advertise.IsValid() || scalarAt(ep, "advertiseAddress") == "" {
			setScalar(ep, "advertiseAddress", advertise.String(), "!!str")
		}
		if scalarAt(ep, "bindPort") == "" {
			setScalar(ep, "bindPort", strconv.Itoa(bindPort), "!!int")
		}
	}

	if cluster == nil {
		cc := ClusterConfiguration{
			TypeMeta:             typeMeta(Group+"/"+api, kindCluster),
			KubernetesVersion:    kubernetesVersion,
			ControlPlaneEndpoint: endpoint,
			ImageRepository:      imageRepository,
			Networking:           Networking{PodSubnet: podSubnet, ServiceSubnet: serviceSubnet},
			APIServer:            APIServer{CertSANs: sans},
		}
		if hasLocalModeGate(kubernetesVersion) {
			cc.FeatureGates = map[string]bool{KubeletLocalModeGate: false}
		}
		n, err := toNode(cc)
		if err != nil {
			return nil, nil, err
		}
		added = append(added, n)
	} else {
		if old := scalarAt(cluster, "controlPlaneEndpoint"); old != "" && old != endpoint {
			warnings = append(warnings, fmt.Sprintf("ClusterConfiguration controlPlaneEndpoint %q replaced by %q", old, endpoint))
		}
		setScalar(cluster, "controlPlaneEndpoint", endpoint, "!!str")
		setScalar(cluster, "kubernetesVersion", kubernetesVersion, "!!str")
		if imageRepository != "" {
			setScalar(cluster, "imageRepository", imageRepository, "!!str")
		}
		netw, err := childMap(cluster, kindCluster, "networking")
		if err != nil {
			return nil, nil, err
		}
		setScalar(netw, "serviceSubnet", serviceSubnet, "!!str")
		if podSubnet != "" {
			setScalar(netw, "podSubnet", podSubnet, "!!str")
		}
		apiServer, err := childMap(cluster, kindCluster, "apiServer")
		if err != nil {
			return nil, nil, err
		}
		if err := appendUnique(apiServer, kindCluster+" apiServer.certSANs", "certSANs", sans, sameSAN); err != nil {
			return nil, nil, err
		}
		if hasLocalModeGate(kubernetesVersion) {
			gates, err := childMap(cluster, kindCluster, "featureGates")
			if err != nil {
				return nil, nil, err
			}
			switch scalarAt(gates, KubeletLocalModeGate) {
			case "":
				setScalar(gates, KubeletLocalModeGate, "false", "!!bool")
			case "true":
				warnings = append(warnings, fmt.Sprintf("ClusterConfiguration featureGates.%s true kept: the masters' kubelets then reach only their own apiserver, never the VIP", KubeletLocalModeGate))
			}
		}
	}

	if proxy == nil {
		n, err := newProxyNode(o.KubeProxyMode, exclude)
		if err != nil {
			return nil, nil, err
		}
		added = append(added, n)
	} else {
		switch old := scalarAt(proxy, "mode"); {
		case old == "" && o.KubeProxyMode != "":
			setScalar(proxy, "mode", o.KubeProxyMode, "!!str")
		case old != "" && o.KubeProxyMode != "" && old != o.KubeProxyMode:
			warnings = append(warnings, fmt.Sprintf("KubeProxyConfiguration mode %q kept: --config sets it, --kube-proxy-mode %q is ignored", old, o.KubeProxyMode))
		}
		if err := addExcludeCIDR(proxy, exclude); err != nil {
			return nil, nil, err
		}
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, nil, fmt.Errorf("encode config: %w", err)
		}
	}
	for _, n := range added {
		if err := enc.Encode(n); err != nil {
			return nil, nil, fmt.Errorf("encode config: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), warnings, nil
}

// KubeletLocalModeGate is kubeadm's feature gate (beta and on by default
// from Kubernetes 1.33) that points a control-plane node's kubelet.conf at
// the node's own apiserver instead of controlPlaneEndpoint. With it on, a
// master's kubelet never goes through the VIP and loses the API whenever
// its own apiserver restarts, which the VIP's preference for the local
// apiserver exists to prevent (docs/join.md). Merge turns it off, unless
// the user's config sets it; join --control-plane inherits it from the
// cluster's ClusterConfiguration.
const KubeletLocalModeGate = "ControlPlaneKubeletLocalMode"

// hasLocalModeGate tells whether kubeadm for version knows
// KubeletLocalModeGate (from 1.31): kubeadm refuses a gate it does not know.
func hasLocalModeGate(version string) bool {
	rest, ok := strings.CutPrefix(version, "v1.")
	if !ok {
		return false
	}
	minor, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(minor)
	return err == nil && n >= 31
}

func parseOptions(o Options) (parsed, error) {
	var p parsed
	var err error
	if p.vip, err = parseAddrPort(o.VIP); err != nil {
		return p, fmt.Errorf("--vip %q: %w", o.VIP, err)
	}
	if !usable(p.vip.Addr()) {
		return p, fmt.Errorf("--vip %q: not a usable unicast address", o.VIP)
	}
	if len(o.Masters) == 0 {
		return p, errors.New("--master: give at least one master address")
	}
	for _, m := range o.Masters {
		ap, err := parseAddrPort(m)
		if err != nil {
			return p, fmt.Errorf("--master %q: %w", m, err)
		}
		if !usable(ap.Addr()) {
			return p, fmt.Errorf("--master %q: not a usable unicast address", m)
		}
		if ap.Addr() == p.vip.Addr() {
			return p, fmt.Errorf("--master %q: equal to the --vip; give the master's own address", m)
		}
		if ap.Addr().Is4() != p.vip.Addr().Is4() {
			// IPVS forwards (masquerades) within one address family.
			return p, fmt.Errorf("--master %q: not of the --vip %s's address family; the VIP and the masters must both be IPv4 or both IPv6", m, p.vip.Addr())
		}
		for _, q := range p.masters {
			if q.Addr() == ap.Addr() {
				return p, fmt.Errorf("--master %q: address given twice", m)
			}
		}
		p.masters = append(p.masters, ap)
	}
	if o.AdvertiseAddress != "" {
		if p.advertise, err = netip.ParseAddr(o.AdvertiseAddress); err != nil || !usable(p.advertise) {
			return p, fmt.Errorf("--advertise-address %q: want this master's IP address", o.AdvertiseAddress)
		}
	}
	switch o.KubeadmAPI {
	case "", V1Beta4, V1Beta3:
		p.api = o.KubeadmAPI
	default:
		return p, fmt.Errorf("--kubeadm-api %q: want %s or %s", o.KubeadmAPI, V1Beta4, V1Beta3)
	}
	for _, f := range [][2]string{{"--pod-subnet", o.PodSubnet}, {"--service-subnet", o.ServiceSubnet}} {
		if f[1] == "" {
			continue
		}
		if _, err := parseCIDRs(f[1]); err != nil {
			return p, fmt.Errorf("%s %q: %w", f[0], f[1], err)
		}
	}
	if m := o.KubeProxyMode; m != "" && !slices.Contains(KubeProxyModes, m) {
		return p, fmt.Errorf("--kube-proxy-mode %q: want one of %s, or nothing for kube-proxy's default", m, strings.Join(KubeProxyModes, ", "))
	}
	if v := o.KubernetesVersion; v != "" && !strings.HasPrefix(v, "v") {
		return p, fmt.Errorf("--kubernetes-version %q: want a version like %s", v, DefaultKubernetesVersion)
	}
	return p, nil
}

// chooseAPI picks the kubeadm API version of new documents.
func chooseAPI(given string, existing []string) (string, error) {
	for _, v := range existing {
		if v != V1Beta4 && v != V1Beta3 {
			return "", fmt.Errorf("--config: kubeadm API %s/%s is not supported: want %s or %s (see kubeadm config migrate)", Group, v, V1Beta4, V1Beta3)
		}
	}
	if len(existing) > 1 {
		return "", fmt.Errorf("--config: documents of both %s/%s and %s/%s", Group, existing[0], Group, existing[1])
	}
	switch {
	case len(existing) == 1 && given != "" && given != existing[0]:
		return "", fmt.Errorf("--kubeadm-api %s: --config has %s/%s documents; convert them with kubeadm config migrate or pass --kubeadm-api %s", given, Group, existing[0], existing[0])
	case len(existing) == 1:
		return existing[0], nil
	case given != "":
		return given, nil
	}
	return DefaultAPIVersion, nil
}

// checkOutside fails when vip lies inside one of the CIDRs in value, naming
// where value came from: the flag, the user's config or vipctl's default.
func checkOutside(vip netip.Addr, flag, given string, cluster *yaml.Node, field, value string) error {
	if value == "" {
		return nil
	}
	source := flag + " " + strconv.Quote(value)
	if given == "" {
		if scalarAt(cluster, "networking", field) != "" {
			source = "networking." + field + " " + strconv.Quote(value) + " in --config"
		} else {
			source = "the default " + flag + " " + strconv.Quote(value)
		}
	}
	prefixes, err := parseCIDRs(value)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	for _, pr := range prefixes {
		if pr.Contains(vip) {
			return fmt.Errorf("--vip %s is inside %s: pick a VIP outside the pod and service subnets (or another %s)", vip, source, flag)
		}
	}
	return nil
}

func certSANs(p parsed) []string {
	loopback := "127.0.0.1"
	if p.vip.Addr().Is6() {
		loopback = "::1"
	}
	sans := []string{loopback, ControlPlaneHost, p.vip.Addr().String()}
	for _, m := range p.masters {
		sans = append(sans, m.Addr().String())
	}
	return sans
}

// sameSAN compares certificate SANs: IPs by value, names case-insensitively.
func sameSAN(a, b string) bool {
	ia, errA := netip.ParseAddr(a)
	ib, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return ia == ib
	}
	return strings.EqualFold(a, b)
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a.Unmap(), DefaultPort), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, errors.New("want an IP address or IP:PORT")
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, errors.New("port 0")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && a.Zone() == ""
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		pr, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("want a CIDR like 10.96.0.0/16, or two comma-separated for dual stack: %w", err)
		}
		out = append(out, pr.Masked())
	}
	if len(out) > 2 {
		return nil, errors.New("at most two CIDRs (one IPv4, one IPv6)")
	}
	return out, nil
}

func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// splitDocuments parses a YAML stream into document nodes, dropping empty
// documents without comments.
func splitDocuments(data []byte) ([]*yaml.Node, error) {
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		var d yaml.Node
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(d.Content) == 0 {
			continue
		}
		root := d.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" && d.HeadComment == "" && d.FootComment == "" && root.HeadComment == "" && root.LineComment == "" && root.FootComment == "" {
			continue
		}
		docs = append(docs, &d)
	}
}

// typeOf returns a document's apiVersion and kind, "" when it has none.
func typeOf(d *yaml.Node) (apiVersion, kind string) {
	if len(d.Content) == 0 || d.Content[0].Kind != yaml.MappingNode {
		return "", ""
	}
	return scalarAt(d.Content[0], "apiVersion"), scalarAt(d.Content[0], "kind")
}

// toNode marshals a typed document through sigs.k8s.io/yaml (JSON field
// names) and returns it as a yaml document node.
func toNode(v any) (*yaml.Node, error) {
	b, err := sigsyaml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return bytesToNode(b)
}

func bytesToNode(b []byte) (*yaml.Node, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("re-read generated YAML: %w", err)
	}
	// Fields come out sorted; put apiVersion and kind first, as people write them.
	if len(n.Content) == 1 && n.Content[0].Kind == yaml.MappingNode {
		m := n.Content[0]
		var head, tail []*yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k := m.Content[i].Value; k == "apiVersion" || k == "kind" {
				head = append(head, m.Content[i], m.Content[i+1])
			} else {
				tail = append(tail, m.Content[i], m.Content[i+1])
			}
		}
		m.Content = append(head, tail...)
	}
	return &n, nil
}
