// Package kubeconf reads the kubeconfig the watchdog is given (--kubeconfig,
// typically the kubelet's /etc/kubernetes/kubelet.conf): the apiserver it
// names (the VIP, for discovery) and the TLS material the probes present.
// Paths in it are relative to the file, as kubectl reads them; inline data
// (certificate-authority-data, client-certificate-data, client-key-data)
// is used as it is.
//
// It reads only what the watchdog uses, with sigs.k8s.io/yaml, not
// client-go's clientcmd: the watchdog's binary links no Kubernetes API
// types (their initialisation alone costs several MB of resident memory).
package kubeconf

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/vipctl/vipctl/care/probe"
)

// Config is the current context of a kubeconfig: its cluster's server and
// CA, its user's client certificate and key. File paths are absolute.
type Config struct {
	Server             *url.URL
	CAFile             string
	CAData             []byte
	CertFile, KeyFile  string
	CertData, KeyData  []byte
	InsecureSkipVerify bool
}

type file struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server   string `json:"server"`
			CAFile   string `json:"certificate-authority"`
			CAData   []byte `json:"certificate-authority-data"`
			Insecure bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			CertFile string `json:"client-certificate"`
			CertData []byte `json:"client-certificate-data"`
			KeyFile  string `json:"client-key"`
			KeyData  []byte `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
}

// Load reads the kubeconfig at path and returns its current context.
// Errors name the file.
func Load(path string) (Config, error) {
	var c Config
	wrap := func(err error) error { return fmt.Errorf("--kubeconfig %q: %w", path, err) }
	data, err := os.ReadFile(path)
	if err != nil {
		return c, wrap(err)
	}
	var f file
	if err := yaml.Unmarshal(data, &f); err != nil {
		return c, wrap(err)
	}
	ctxName := f.CurrentContext
	if ctxName == "" && len(f.Contexts) == 1 {
		ctxName = f.Contexts[0].Name
	}
	var clusterName, userName string
	found := false
	for _, x := range f.Contexts {
		if x.Name == ctxName {
			clusterName, userName, found = x.Context.Cluster, x.Context.User, true
		}
	}
	if !found {
		return c, wrap(fmt.Errorf("no context %q", ctxName))
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	found = false
	for _, x := range f.Clusters {
		if x.Name != clusterName {
			continue
		}
		found = true
		if c.Server, err = url.Parse(x.Cluster.Server); err != nil || c.Server.Scheme != "https" || c.Server.Host == "" {
			return c, wrap(fmt.Errorf("cluster %q: server %q: want https://HOST[:PORT]", clusterName, x.Cluster.Server))
		}
		c.CAFile, c.CAData, c.InsecureSkipVerify = abs(x.Cluster.CAFile), x.Cluster.CAData, x.Cluster.Insecure
	}
	if !found {
		return c, wrap(fmt.Errorf("no cluster %q", clusterName))
	}
	for _, x := range f.Users {
		if x.Name == userName {
			u := x.User
			c.CertFile, c.CertData, c.KeyFile, c.KeyData = abs(u.CertFile), u.CertData, abs(u.KeyFile), u.KeyData
		}
	}
	return c, nil
}

// Loader returns a probe.Loader that reads the kubeconfig at path, then the
// files it names: its cluster CA (fallbackCA when it has none) and its
// client certificate and key. The kubeconfig and every file it names are
// the files watched for a change.
func Loader(path, fallbackCA string) probe.Loader {
	return func() (probe.Material, []string, error) {
		var m probe.Material
		c, err := Load(path)
		if err != nil {
			return m, nil, err
		}
		files := []string{path}
		read := func(what, file string, data []byte) ([]byte, error) {
			if len(data) > 0 || file == "" {
				return data, nil
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("--kubeconfig %q: %s %q: %w", path, what, file, err)
			}
			files = append(files, file)
			return b, nil
		}
		caFile := c.CAFile
		if len(c.CAData) == 0 && caFile == "" {
			caFile = fallbackCA
		}
		if m.CA, err = read("certificate-authority", caFile, c.CAData); err != nil {
			return m, nil, err
		}
		if m.Cert, err = read("client-certificate", c.CertFile, c.CertData); err != nil {
			return m, nil, err
		}
		if m.Key, err = read("client-key", c.KeyFile, c.KeyData); err != nil {
			return m, nil, err
		}
		if len(m.Cert) == 0 || len(m.Key) == 0 {
			return m, nil, fmt.Errorf("--kubeconfig %q: %w", path, errNoClientCert)
		}
		return m, files, nil
	}
}

var errNoClientCert = errors.New("no client certificate and key in its current context")
