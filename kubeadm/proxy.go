package kubeadm

import (
	"bytes"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// ExcludeVIP adds vip/32 (/128 for IPv6) to ipvs.excludeCIDRs of conf, a
// KubeProxyConfiguration in YAML such as the config.conf key of the
// kube-system/kube-proxy ConfigMap, so that kube-proxy in IPVS mode does not
// delete vipctl's virtual server. Every other field and comment is kept.
// changed is false, and conf is returned as it is, when the VIP is already
// excluded.
func ExcludeVIP(conf string, vip netip.Addr) (out string, changed bool, err error) {
	if !usable(vip) {
		return "", false, fmt.Errorf("vip %q: not a usable unicast address", vip)
	}
	docs, err := splitDocuments([]byte(conf))
	if err != nil {
		return "", false, fmt.Errorf("kube-proxy config: %w", err)
	}
	if len(docs) != 1 || docs[0].Content[0].Kind != yaml.MappingNode {
		return "", false, fmt.Errorf("kube-proxy config: want one KubeProxyConfiguration mapping, found %d documents", len(docs))
	}
	if apiVersion, kind := typeOf(docs[0]); kind != kindProxy || apiVersion != proxyAPI {
		return "", false, fmt.Errorf("kube-proxy config: apiVersion %q kind %q: want %s %s", apiVersion, kind, proxyAPI, kindProxy)
	}
	root := docs[0].Content[0]
	cidr := hostPrefix(vip.Unmap()).String()
	before := len(lookupSeq(lookup(root, "ipvs"), "excludeCIDRs"))
	if err := addExcludeCIDR(root, cidr); err != nil {
		return "", false, err
	}
	if len(lookupSeq(lookup(root, "ipvs"), "excludeCIDRs")) == before {
		return conf, false, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(docs[0]); err != nil {
		return "", false, fmt.Errorf("encode kube-proxy config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", false, fmt.Errorf("encode kube-proxy config: %w", err)
	}
	return buf.String(), true, nil
}

func lookupSeq(m *yaml.Node, key string) []*yaml.Node {
	if v := lookup(m, key); v != nil && v.Kind == yaml.SequenceNode {
		return v.Content
	}
	return nil
}

// addExcludeCIDR appends cidr to ipvs.excludeCIDRs of the kube-proxy
// config mapping root unless an equal prefix is there.
func addExcludeCIDR(root *yaml.Node, cidr string) error {
	ipvs, err := childMap(root, kindProxy, "ipvs")
	if err != nil {
		return err
	}
	return appendUnique(ipvs, kindProxy+" ipvs.excludeCIDRs", "excludeCIDRs", []string{cidr}, samePrefix)
}

func samePrefix(a, b string) bool {
	pa, errA := netip.ParsePrefix(a)
	pb, errB := netip.ParsePrefix(b)
	if errA == nil && errB == nil {
		return pa.Masked() == pb.Masked()
	}
	return a == b
}

// newProxyNode returns a new KubeProxyConfiguration document in mode ("":
// none written, kube-proxy's default) excluding cidr from IPVS, and nothing
// else: kube-proxy's defaults apply to the rest. A map literal serves;
// kube-proxy's Go types would double the package's import graph for four
// fields (the real kubeadm validates the result in validate_test.go).
func newProxyNode(mode, cidr string) (*yaml.Node, error) {
	doc := map[string]any{
		"apiVersion": proxyAPI,
		"kind":       kindProxy,
		"ipvs":       map[string]any{"excludeCIDRs": []string{cidr}},
	}
	if mode != "" {
		doc["mode"] = mode
	}
	return toNode(doc)
}
