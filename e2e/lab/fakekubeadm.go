package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The stand-in kubeadm is this test binary re-executed by `vipctl join
// --kubeadm PATH` with these variables in its environment (vipctl passes its
// environment on to kubeadm).
const (
	roleKubeadm      = "kubeadm"
	envKubeadmRecord = "VIPCTL_FAKE_KUBEADM_RECORD"
	envKubeadmExit   = "VIPCTL_FAKE_KUBEADM_EXIT"
	envKubeadmCA     = "VIPCTL_FAKE_KUBEADM_CA"
)

// KubeadmCall is what the stand-in kubeadm saw when it was run.
type KubeadmCall struct {
	// Args are its arguments: join, the endpoint, the user's flags; or
	// join/init --config FILE and flags.
	Args []string `json:"args"`
	// ConfigFile is the value of --config, ConfigMode its permission bits
	// and Config its content, read while kubeadm ran.
	ConfigFile string      `json:"configFile,omitempty"`
	ConfigMode os.FileMode `json:"configMode,omitempty"`
	Config     string      `json:"config,omitempty"`
	// Resolved are the addresses the endpoint's name (for init:
	// apiserver.cluster.local) resolved to, with Go's resolver, which
	// reads /etc/hosts.
	Resolved []string `json:"resolved"`
	// Answer is the body of https://ENDPOINT/ ("master1 saw 10.10.0.1:PORT"),
	// verified against the lab CA; Err tells why there was none.
	Answer string `json:"answer"`
	Err    string `json:"err,omitempty"`
	// Hosts is /etc/hosts's identity when kubeadm ran (HostsIdentity):
	// a later write would change it.
	Hosts string `json:"hosts,omitempty"`
}

// HostsIdentity is a file's content hash, inode and modification time in
// nanoseconds: equal identities mean the file was not written in between
// (an atomic rename changes the inode, a write in place the time).
func HostsIdentity(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	st, err := os.Stat(path)
	if err != nil {
		return "error: " + err.Error()
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fmt.Sprintf("sha256:%x inode:%d mtime:%d", sha256.Sum256(b), ino, st.ModTime().UnixNano())
}

// FakeKubeadm is a stand-in for kubeadm: it records its arguments and
// whether https://ENDPOINT/ reaches a master at the moment it runs, prints
// some kubeadm-like output (including its arguments, so that the
// redaction of vipctl's output is put to the test), and exits with the
// code it was given.
type FakeKubeadm struct {
	// Path is what to pass as vipctl join --kubeadm.
	Path string
	// Env is the environment vipctl must run with.
	Env    []string
	record string
}

// FakeKubeadm returns a stand-in kubeadm exiting with exit.
func (l *Lab) FakeKubeadm(exit int) *FakeKubeadm {
	rec := filepath.Join(l.t.TempDir(), "kubeadm-calls.jsonl")
	return &FakeKubeadm{
		Path:   l.self,
		record: rec,
		Env: []string{envRole + "=" + roleKubeadm, envKubeadmRecord + "=" + rec,
			envKubeadmExit + "=" + strconv.Itoa(exit), envKubeadmCA + "=" + l.CAFile},
	}
}

// Calls returns the calls recorded so far.
func (f *FakeKubeadm) Calls(t testing.TB) []KubeadmCall {
	t.Helper()
	b, err := os.ReadFile(f.record)
	if os.IsNotExist(err) {
		return nil
	}
	must(t, err, "read the stand-in kubeadm's record")
	var calls []KubeadmCall
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var c KubeadmCall
		must(t, json.Unmarshal(sc.Bytes(), &c), "parse the stand-in kubeadm's record")
		calls = append(calls, c)
	}
	return calls
}

// RunWith runs vipctl with args and extra environment variables, and
// returns its stdout and stderr.
func (l *Lab) RunWith(env []string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(l.Vipctl, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("vipctl %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), err
}

// runFakeKubeadm is the stand-in kubeadm's main. Called as `kubeadm join
// ENDPOINT ...` or `kubeadm join --config F ...` it reaches the endpoint;
// as `kubeadm init --config F ...` it resolves apiserver.cluster.local and
// writes the lab CA as the cluster's CA, in the configuration's
// certificatesDir, as kubeadm init would.
func runFakeKubeadm() int {
	args := os.Args[1:]
	call := KubeadmCall{Args: args}
	endpoint := ""
	if len(args) >= 3 && args[1] == "--config" {
		call.ConfigFile = args[2]
		if st, err := os.Stat(args[2]); err == nil {
			call.ConfigMode = st.Mode().Perm()
		}
		b, err := os.ReadFile(args[2])
		if err != nil {
			call.Err = "read --config: " + err.Error()
		}
		call.Config = string(b)
	}
	switch {
	case len(args) >= 2 && args[0] == "join" && call.ConfigFile != "":
		endpoint = configValue(call.Config, "apiServerEndpoint")
	case len(args) >= 2 && args[0] == "join":
		endpoint = args[1]
	case len(args) >= 1 && args[0] == "init" && call.ConfigFile != "":
		call.Resolved, call.Err = resolve("apiserver.cluster.local")
		if call.Err == "" {
			call.Err = writeClusterCA(call.Config)
		}
		if call.Err == "" {
			// The control-plane endpoint, as the kubeconfigs kubeadm init
			// writes use it: through the VIP to this node's apiserver.
			_, call.Answer, call.Err = reach("apiserver.cluster.local:6443")
		}
	default:
		call.Err = "not called as kubeadm join ENDPOINT, kubeadm join --config F or kubeadm init --config F"
	}
	if endpoint != "" {
		call.Resolved, call.Answer, call.Err = reach(endpoint)
	}
	call.Hosts = HostsIdentity("/etc/hosts")
	if err := record(call); err != nil {
		fmt.Fprintln(os.Stderr, "stand-in kubeadm:", err)
		return 2
	}
	fmt.Println("[preflight] Running pre-flight checks")
	fmt.Printf("[preflight] called with: %s\n", strings.Join(args, " "))
	if call.Answer != "" {
		fmt.Printf("[discovery] reached %s: %s\n", endpoint, call.Answer)
	}
	code, _ := strconv.Atoi(os.Getenv(envKubeadmExit))
	if code != 0 {
		fmt.Fprintln(os.Stderr, "error execution phase preflight: couldn't validate the identity of the API Server (stand-in kubeadm told to fail)")
	}
	return code
}

// configValue returns the value of the first "key: value" line in a YAML
// configuration, "" when there is none (enough for the stand-in's needs).
func configValue(config, key string) string {
	for _, line := range strings.Split(config, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

func resolve(host string) ([]string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, "resolve: " + err.Error()
	}
	return addrs, ""
}

// writeClusterCA copies the lab CA to certificatesDir/ca.crt, as kubeadm
// init writes the cluster's CA; "" when done.
func writeClusterCA(config string) string {
	dir := configValue(config, "certificatesDir")
	if dir == "" {
		return "no certificatesDir in the configuration: the stand-in writes no CA to the node's /etc/kubernetes/pki"
	}
	b, err := os.ReadFile(os.Getenv(envKubeadmCA))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "ca.crt"), b, 0o644)
	}
	if err != nil {
		return "write the CA: " + err.Error()
	}
	return ""
}

// reach resolves endpoint's host and GETs https://endpoint/ with the lab CA.
func reach(endpoint string) (resolved []string, answer, errText string) {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, "", err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resolved, err = net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, "", "resolve: " + err.Error()
	}
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(os.Getenv(envKubeadmCA)); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	resp, err := c.Get("https://" + endpoint + "/")
	if err != nil {
		return resolved, "", err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resolved, "", err.Error()
	}
	return resolved, strings.TrimSpace(string(b)), ""
}

func record(c KubeadmCall) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(os.Getenv(envKubeadmRecord), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
