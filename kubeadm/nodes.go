package kubeadm

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Helpers editing generic YAML nodes in place, so that a user's fields,
// order and comments survive a merge.

// lookup returns the value of key in mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// scalarAt returns the scalar at path below mapping n, "" when absent, null
// or not a scalar.
func scalarAt(n *yaml.Node, path ...string) string {
	for _, key := range path {
		n = lookup(n, key)
		if n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
	}
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

// setScalar sets key in mapping m to value, keeping the node (and its
// comments) when it is already a scalar.
func setScalar(m *yaml.Node, key, value, tag string) {
	if v := lookup(m, key); v != nil {
		if v.Kind == yaml.ScalarNode && v.Value == value && v.Tag == tag {
			return
		}
		*v = yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value,
			HeadComment: v.HeadComment, LineComment: v.LineComment, FootComment: v.FootComment}
		return
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value})
}

// childMap returns the mapping under key in mapping m, creating it when
// absent or null. where names the document for errors.
func childMap(m *yaml.Node, where, key string) (*yaml.Node, error) {
	v, ok := ensure(m, key, yaml.MappingNode, "!!map")
	if !ok {
		return nil, fmt.Errorf("--config: %s %s: want a mapping, found %s", where, key, describe(v))
	}
	return v, nil
}

// ensure returns the node under key in mapping m, creating one of kind (with
// tag) when absent or null. ok is false when a node of another kind is there.
func ensure(m *yaml.Node, key string, kind yaml.Kind, tag string) (v *yaml.Node, ok bool) {
	v = lookup(m, key)
	switch {
	case v == nil:
		v = &yaml.Node{Kind: kind, Tag: tag}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		v.Kind, v.Tag, v.Value, v.Style = kind, tag, "", 0
	case v.Kind != kind:
		return v, false
	}
	return v, true
}

// appendUnique appends to the sequence under key in mapping m each value
// that is not there yet (by same), creating the sequence when absent or null.
func appendUnique(m *yaml.Node, where, key string, values []string, same func(a, b string) bool) error {
	v, ok := ensure(m, key, yaml.SequenceNode, "!!seq")
	if !ok {
		return fmt.Errorf("--config: %s: want a list, found %s", where, describe(v))
	}
next:
	for _, val := range values {
		for _, item := range v.Content {
			if item.Kind == yaml.AliasNode {
				item = item.Alias
			}
			if item.Kind == yaml.ScalarNode && same(item.Value, val) {
				continue next
			}
		}
		v.Content = append(v.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val})
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "a YAML alias, which vipctl does not edit"
	}
	return "a document"
}
