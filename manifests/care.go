// Package manifests renders the static pod that runs the vipctl watchdog
// (`vipctl care`) on every node and writes it where the kubelet picks it up.
//
// The pod is built from k8s.io/api/core/v1 types. It runs with the host's
// network, as root but not privileged: its only added capability is
// NET_ADMIN, enough to program IPVS, the dummy interface, routes and to reset
// connections over netlink. It cannot load kernel modules or write sysctls
// (/proc/sys is read-only in the container): the installer loads ip_vs and
// friends (and persists them in /etc/modules-load.d) and sets any sysctl
// before the pod starts. /lib/modules is mounted read-only so the watchdog can
// tell a missing module from a built-in one in its error messages.
//
// The watchdog's command line is a [careconfig.Config], rendered with its
// Args: a manifest holds only what the watchdog accepts.
package manifests

import (
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/care/careconfig"
)

// careArgs returns the arguments after `vipctl care` in the pod: the
// configuration's, then --log-format=json.
func careArgs(c careconfig.Config) []string {
	return append(c.Args(), "--log-format=json")
}

// ReadCare parses a watchdog manifest (as Render writes it, or edited by
// hand) back into the watchdog's configuration, with the rules the watchdog
// applies when it starts, and returns its warnings.
func ReadCare(data []byte) (careconfig.Config, []string, error) {
	var pod corev1.Pod
	if err := yaml.Unmarshal(data, &pod); err != nil {
		return careconfig.Config{}, nil, fmt.Errorf("watchdog manifest: %w", err)
	}
	for _, c := range pod.Spec.Containers {
		cmd := append(slices.Clone(c.Command), c.Args...)
		i := slices.Index(cmd, "care")
		if i < 0 {
			continue
		}
		cfg, warnings, err := careconfig.ParseArgs(cmd[i+1:])
		if err != nil {
			return cfg, nil, fmt.Errorf("watchdog manifest, container %q: %w", c.Name, err)
		}
		return cfg, warnings, nil
	}
	return careconfig.Config{}, nil, errors.New("watchdog manifest: no container runs `vipctl care`")
}
