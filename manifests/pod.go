package manifests

import (
	"fmt"
	"path"

	"github.com/vipctl/vipctl/care/careconfig"
	"github.com/vipctl/vipctl/internal/version"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	// Name is the static pod's name; the kubelet appends the node name.
	Name = "vipctl-care"
	// Namespace is the static pod's namespace.
	Namespace = "kube-system"
	// DefaultPath is where the kubelet of a kubeadm node reads static pods.
	DefaultPath = "/etc/kubernetes/manifests/vipctl-care.yaml"
	// DefaultImageRepository is the image name without tag.
	DefaultImageRepository = "ghcr.io/vipctl/vipctl"
	// BinaryPath is where vipctl's image (package image) holds the binary;
	// the pod's command starts it by this path, as the image has no PATH.
	BinaryPath = "/vipctl"

	modulesDir = "/lib/modules"
)

// DefaultImage returns the image of this vipctl build:
// DefaultImageRepository tagged with internal/version.Version.
func DefaultImage() string {
	return DefaultImageRepository + ":" + version.Version
}

// Options describe the watchdog static pod.
type Options struct {
	// Image is the container image; DefaultImage() when empty. It must hold
	// vipctl at BinaryPath.
	Image string
	// Care is the watchdog's configuration, its command line.
	Care careconfig.Config
}

// CarePod builds the static pod running `vipctl care` with o.Care's flags.
func CarePod(o Options) (*corev1.Pod, error) {
	if err := o.Care.ValidateForPod(); err != nil {
		return nil, err
	}
	image := o.Image
	if image == "" {
		image = DefaultImage()
	}
	metrics, err := careconfig.ParseMetricsAddr(o.Care.MetricsAddr)
	if err != nil {
		return nil, err
	}
	// The kubelet probes the endpoints where a client on the node reaches
	// them: the host, or loopback when the watchdog listens on every address.
	probeAddr := metrics.Local()
	probeHost, probePort := probeAddr.Addr().String(), int(probeAddr.Port())
	caFile := o.Care.CAFile
	hostPathDir := corev1.HostPathDirectory
	hostPathFile := corev1.HostPathFile
	root := int64(0)
	no := false
	yes := true
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host:   probeHost,
				Path:   path,
				Port:   intstr.FromInt32(int32(probePort)),
				Scheme: corev1.URISchemeHTTP,
			}},
			InitialDelaySeconds: 5,
			PeriodSeconds:       period,
			TimeoutSeconds:      5,
			FailureThreshold:    failures,
		}
	}
	labels := map[string]string{
		"app.kubernetes.io/name":      Name,
		"app.kubernetes.io/component": "care",
		"app.kubernetes.io/part-of":   "vipctl",
	}
	mounts := []corev1.VolumeMount{
		{Name: "lib-modules", MountPath: modulesDir, ReadOnly: true},
		{Name: "ca-cert", MountPath: caFile, ReadOnly: true},
	}
	volumes := []corev1.Volume{
		{Name: "lib-modules", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: modulesDir, Type: &hostPathDir}}},
		{Name: "ca-cert", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: caFile, Type: &hostPathFile}}},
	}
	hostPath := func(name, p string, t *corev1.HostPathType, readOnly bool) {
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: p, ReadOnly: readOnly})
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: t}}})
	}
	if kc := o.Care.Kubeconfig; kc != "" {
		// The kubelet's kubeconfig and, for the default one, the rotating
		// client certificate it points at, both read-only.
		hostPath("kubeconfig", kc, &hostPathFile, true)
		if kc == careconfig.DefaultKubeconfig {
			hostPath("kubelet-pki", careconfig.DefaultKubeletPKIDir, &hostPathDir, true)
		}
	}
	if sf := o.Care.StateFile; sf != "" {
		// The directory, so the state file can be replaced atomically.
		dirOrCreate := corev1.HostPathDirectoryOrCreate
		hostPath("state", path.Dir(sf), &dirOrCreate, false)
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      Name,
			Namespace: Namespace,
			Labels:    labels,
		},
		Spec: corev1.PodSpec{
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "care",
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         append([]string{BinaryPath, "care"}, careArgs(o.Care)...),
				Ports: []corev1.ContainerPort{{
					Name:          "metrics",
					ContainerPort: int32(probePort),
					Protocol:      corev1.ProtocolTCP,
				}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("10m"),
					corev1.ResourceMemory: resource.MustParse("32Mi"),
				}},
				LivenessProbe:  probe("/healthz", 10, 6),
				ReadinessProbe: probe("/readyz", 5, 3),
				SecurityContext: &corev1.SecurityContext{
					// Root with only NET_ADMIN: the kubelet gives no effective
					// capabilities to a non-root user.
					RunAsUser:                &root,
					Privileged:               &no,
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					Capabilities: &corev1.Capabilities{
						Add:  []corev1.Capability{"NET_ADMIN"},
						Drop: []corev1.Capability{"ALL"},
					},
				},
				VolumeMounts: mounts,
			}},
			Volumes: volumes,
		},
	}, nil
}

// Render returns the static pod as YAML.
func Render(o Options) ([]byte, error) {
	pod, err := CarePod(o)
	if err != nil {
		return nil, err
	}
	// Leave out the empty status and creationTimestamp a v1.Pod always has.
	out, err := yaml.Marshal(struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            corev1.PodSpec    `json:"spec"`
	}{pod.TypeMeta, pod.ObjectMeta, pod.Spec})
	if err != nil {
		return nil, fmt.Errorf("marshal pod %s/%s: %w", Namespace, Name, err)
	}
	return out, nil
}
