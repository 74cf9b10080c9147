package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vipctl/vipctl/e2e/k8simage"
)

// Image is one of kubeadm's images as the harness builds it.
type Image struct {
	Ref  string
	Spec k8simage.Spec
	// Tar is the docker-archive, once written by WriteImages.
	Tar string
}

// KubeadmImages asks kubeadm which images it runs for version and returns
// the specs of those the harness can build, and the references it cannot
// (CoreDNS: the cluster is initialised with --skip-phases=addon/coredns).
// debRoot is the unpacked KubeProxyDebs (see FetchDebs).
func KubeadmImages(ctx context.Context, b Binaries, version, debRoot string) ([]Image, []string, error) {
	out, err := exec.CommandContext(ctx, b.Kubeadm, "config", "images", "list", "--kubernetes-version", version).Output()
	if err != nil {
		return nil, nil, fmt.Errorf("kubeadm config images list: %w", err)
	}
	var imgs []Image
	var skipped []string
	for _, ref := range strings.Fields(string(out)) {
		spec, ok, err := imageSpec(ref, b, debRoot)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			skipped = append(skipped, ref)
			continue
		}
		imgs = append(imgs, Image{Ref: ref, Spec: spec})
	}
	return imgs, skipped, nil
}

// imageSpec is the spec of kubeadm's image ref: the program at
// /usr/local/bin/<name> (kubeadm's static pods call it by name) or, for
// pause, at /pause. ok is false for an image the harness does not build.
func imageSpec(ref string, b Binaries, debRoot string) (k8simage.Spec, bool, error) {
	repo, _, _ := strings.Cut(ref, ":")
	bin := map[string]string{
		"kube-apiserver": b.APIServer, "kube-controller-manager": b.ControllerManager,
		"kube-scheduler": b.Scheduler, "etcd": b.Etcd,
	}
	n := path.Base(repo)
	s := k8simage.Spec{Ref: ref}
	switch {
	case bin[n] != "":
		s.Files = []k8simage.File{{Dst: "/usr/local/bin/" + n, Src: bin[n]}}
		s.Entrypoint = []string{"/usr/local/bin/" + n}
	case n == "pause":
		s.Files = []k8simage.File{{Dst: "/pause", Src: b.Pause}}
		s.Entrypoint = []string{"/pause"}
	case n == "kube-proxy":
		files, err := kubeProxyFiles(b, debRoot)
		if err != nil {
			return s, false, fmt.Errorf("image %s: %w", ref, err)
		}
		s.Files = files
		s.Entrypoint = []string{"/usr/local/bin/kube-proxy"}
	default:
		return s, false, nil
	}
	return s, true, nil
}

// kubeProxyFiles are kube-proxy and the tools its modes run (nft;
// iptables-restore and ipset; modprobe), with their libraries, iptables'
// extensions and the /etc files they read.
func kubeProxyFiles(b Binaries, debRoot string) ([]k8simage.File, error) {
	files := []k8simage.File{
		{Dst: "/usr/local/bin/kube-proxy", Src: b.KubeProxy},
		{Dst: "/usr/sbin/nft", Src: filepath.Join(debRoot, "usr/sbin/nft")},
		{Dst: "/usr/sbin/ipset", Src: filepath.Join(debRoot, "usr/sbin/ipset")},
		{Dst: "/usr/sbin/xtables-nft-multi", Src: filepath.Join(debRoot, "usr/sbin/xtables-nft-multi")},
		{Dst: "/usr/bin/kmod", Src: filepath.Join(debRoot, "bin/kmod")},
		{Dst: "/usr/sbin/modprobe", Link: "../bin/kmod"},
	}
	for _, l := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		files = append(files, k8simage.File{Dst: "/usr/sbin/" + l, Link: "xtables-nft-multi"})
	}
	ext, err := filepath.Glob(filepath.Join(debRoot, "usr/lib/x86_64-linux-gnu/xtables/*.so"))
	if err != nil {
		return nil, err
	}
	if len(ext) == 0 {
		return nil, fmt.Errorf("no iptables extensions in %s/usr/lib/x86_64-linux-gnu/xtables", debRoot)
	}
	for _, e := range ext {
		files = append(files, k8simage.File{Dst: "/usr/lib/x86_64-linux-gnu/xtables/" + filepath.Base(e), Src: e})
	}
	for _, f := range []string{"/etc/protocols", "/etc/ethertypes"} {
		if _, err := os.Stat(filepath.Join(debRoot, f)); err == nil {
			files = append(files, k8simage.File{Dst: f, Src: filepath.Join(debRoot, f)})
		} else if _, err := os.Stat(f); err == nil {
			files = append(files, k8simage.File{Dst: f, Src: f})
		}
	}
	return k8simage.WithLibraries(files, []string{debRoot, "/"})
}

// WriteImages writes each image's archive into dir, named by its reference
// and a hash of its inputs (every file's path, mode and content), and sets
// Tar; an archive already there for the same inputs is reused.
func WriteImages(dir string, imgs []Image) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range imgs {
		key, err := inputKey(imgs[i].Spec)
		if err != nil {
			return fmt.Errorf("image %s: %w", imgs[i].Ref, err)
		}
		name := strings.NewReplacer("/", "_", ":", "_").Replace(imgs[i].Ref)
		p := filepath.Join(dir, name+"-"+key+".tar")
		if _, err := os.Stat(p); err != nil {
			if err := k8simage.WriteFile(p, imgs[i].Spec); err != nil {
				return err
			}
		}
		imgs[i].Tar = p
	}
	return nil
}

func inputKey(s k8simage.Spec) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %q %q\n", s.Ref, s.Entrypoint, s.Env)
	files := slices.Clone(s.Files)
	slices.SortFunc(files, func(a, b k8simage.File) int { return strings.Compare(a.Dst, b.Dst) })
	for _, f := range files {
		fmt.Fprintf(h, "%s %s", f.Dst, f.Link)
		if f.Src != "" {
			src, err := os.Open(f.Src)
			if err != nil {
				return "", err
			}
			st, err := src.Stat()
			if err == nil {
				fmt.Fprintf(h, " %o ", st.Mode().Perm())
				_, err = io.Copy(h, src)
			}
			src.Close()
			if err != nil {
				return "", err
			}
		}
		fmt.Fprintln(h)
	}
	return fmt.Sprintf("%x", h.Sum(nil))[:12], nil
}
