package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// RealSpecFile is the name, in the VM's share, of the file describing the
// real control plane the host runs for the VM (see e2e/realcp).
const RealSpecFile = "reallab.json"

// RealSpec describes the real control plane to the VM: where the node is,
// the masters, the host's control endpoint that injects faults, and the
// files (relative to the share) the node's clients need.
type RealSpec struct {
	NodeCIDR   string           `json:"nodeCIDR"`   // the VM's eth0 address, e.g. 10.10.0.1/24
	VIP        string           `json:"vip"`        // e.g. 10.103.97.2:6443
	Hostname   string           `json:"hostname"`   // apiserver.cluster.local
	ControlURL string           `json:"controlURL"` // http://10.10.0.2:7070
	Masters    []RealMasterSpec `json:"masters"`
	// Standby masters are set up but not running: a scenario starts one to
	// add a master to the running cluster.
	Standby []RealMasterSpec `json:"standby,omitempty"`
	// NodeKubeconfig is a kubeconfig shaped as the kubelet's (server the
	// VIP, a system:nodes client certificate), for the watchdog's
	// --kubeconfig.
	NodeKubeconfig string `json:"nodeKubeconfig,omitempty"`
	CAFile         string `json:"caFile"`     // lab CA (PEM)
	ClientCert     string `json:"clientCert"` // admin client certificate (O=system:masters)
	ClientKey      string `json:"clientKey"`
	Kubectl        string `json:"kubectl"` // kubectl binary
	Version        string `json:"version"` // Kubernetes version of the apiservers
}

// RealMasterSpec is one real kube-apiserver.
type RealMasterSpec struct {
	Name string `json:"name"` // master1
	Addr string `json:"addr"` // 10.10.0.11:6443
}

// WriteRealSpec writes spec as dir/RealSpecFile.
func WriteRealSpec(dir string, spec RealSpec) error {
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("real lab spec: %w", err)
	}
	p := filepath.Join(dir, RealSpecFile)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// ReadRealSpec reads dir/RealSpecFile.
func ReadRealSpec(dir string) (RealSpec, error) {
	var s RealSpec
	p := filepath.Join(dir, RealSpecFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return s, fmt.Errorf("read %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", p, err)
	}
	return s, nil
}
