package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/vipctl/vipctl/hosts"
)

const hostsTestContent = "127.0.0.1\tlocalhost\n\n# comment\n::1 localhost ip6-localhost\n"

var hostsPastTime = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// runHosts runs `vipctl hosts ARGS... --hosts-file PATH` and returns its
// standard output.
func runHosts(t *testing.T, path string, args ...string) (string, error) {
	t.Helper()
	cmd := newHostsCmd(&app{log: zap.NewNop()})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append(args, "--hosts-file", path))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func hostsTempFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	require.NoError(t, os.Chtimes(path, hostsPastTime, hostsPastTime))
	return path
}

func hostsFileContent(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func hostsModTime(t *testing.T, path string) time.Time {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.ModTime().UTC()
}

func TestHostsSetShowRemove(t *testing.T) {
	path := hostsTempFile(t, hostsTestContent)
	const line = "10.103.97.2 apiserver.cluster.local # vipctl\n"

	out, err := runHosts(t, path, "set", "apiserver.cluster.local", "10.103.97.2")
	require.NoError(t, err)
	assert.Equal(t, path+" now maps apiserver.cluster.local to 10.103.97.2\n", out)
	assert.Equal(t, hostsTestContent+line, hostsFileContent(t, path))

	// No change: the file is not rewritten, and the command says so.
	require.NoError(t, os.Chtimes(path, hostsPastTime, hostsPastTime))
	out, err = runHosts(t, path, "set", "apiserver.cluster.local", "10.103.97.2")
	require.NoError(t, err)
	assert.Contains(t, out, "already maps apiserver.cluster.local to 10.103.97.2; not rewritten")
	assert.Equal(t, hostsPastTime, hostsModTime(t, path))

	out, err = runHosts(t, path, "show", "apiserver.cluster.local")
	require.NoError(t, err)
	assert.Equal(t, "10.103.97.2\n", out)

	// Moving the name to another address replaces vipctl's line.
	_, err = runHosts(t, path, "set", "apiserver.cluster.local", "fd00::2")
	require.NoError(t, err)
	assert.Equal(t, hostsTestContent+"fd00::2 apiserver.cluster.local # vipctl\n", hostsFileContent(t, path))

	out, err = runHosts(t, path, "remove", "apiserver.cluster.local")
	require.NoError(t, err)
	assert.Equal(t, "removed vipctl's mapping of apiserver.cluster.local from "+path+"\n", out)
	assert.Equal(t, hostsTestContent, hostsFileContent(t, path))

	require.NoError(t, os.Chtimes(path, hostsPastTime, hostsPastTime))
	out, err = runHosts(t, path, "remove", "apiserver.cluster.local")
	require.NoError(t, err)
	assert.Contains(t, out, "has no vipctl line for apiserver.cluster.local; not rewritten")
	assert.Equal(t, hostsPastTime, hostsModTime(t, path))

	_, err = runHosts(t, path, "show", "apiserver.cluster.local")
	require.Error(t, err)
	assert.Equal(t, path+" does not map apiserver.cluster.local to any address", err.Error())
}

func TestHostsSetReportsDisplacedUserLine(t *testing.T) {
	path := hostsTempFile(t, "192.168.1.10 master1 apiserver.cluster.local\n")

	out, err := runHosts(t, path, "set", "apiserver.cluster.local", "10.103.97.2")
	require.NoError(t, err)
	assert.Contains(t, out, "removed apiserver.cluster.local from line 1, which mapped it to 192.168.1.10\n")
	assert.Equal(t, "192.168.1.10 master1\n10.103.97.2 apiserver.cluster.local # vipctl\n", hostsFileContent(t, path))
}

func TestHostsRemoveLeavesUserLines(t *testing.T) {
	content := "192.168.1.10 apiserver.cluster.local\n"
	path := hostsTempFile(t, content)

	out, err := runHosts(t, path, "remove", "apiserver.cluster.local")
	require.NoError(t, err)
	assert.Contains(t, out, "no vipctl line")
	assert.Contains(t, out, "line 1, which vipctl did not write, still maps apiserver.cluster.local to 192.168.1.10; left alone")
	assert.Equal(t, content, hostsFileContent(t, path))
	assert.Equal(t, hostsPastTime, hostsModTime(t, path))
}

func TestHostsShow(t *testing.T) {
	path := hostsTempFile(t, "192.168.1.10 apiserver.cluster.local\n10.103.97.2 APIServer.cluster.local # vipctl\n192.168.1.10 apiserver.cluster.local\n")

	out, err := runHosts(t, path, "show", "apiserver.cluster.local")
	require.NoError(t, err)
	assert.Equal(t, "192.168.1.10\n10.103.97.2\n", out, "each address once, in file order")

	out, err = runHosts(t, path, "show", "apiserver.cluster.local", "-o", "json")
	require.NoError(t, err)
	var got struct {
		File     string
		Name     string
		Mappings []struct {
			Address string
			Line    int
			Managed bool
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, path, got.File)
	assert.Equal(t, "apiserver.cluster.local", got.Name)
	require.Len(t, got.Mappings, 3)
	assert.Equal(t, "10.103.97.2", got.Mappings[1].Address)
	assert.Equal(t, 2, got.Mappings[1].Line)
	assert.True(t, got.Mappings[1].Managed)
	assert.False(t, got.Mappings[0].Managed)

	_, err = runHosts(t, path, "show", "apiserver.cluster.local", "-o", "yaml")
	require.ErrorContains(t, err, `--output "yaml"`)
}

func TestHostsShowMissingFile(t *testing.T) {
	_, err := runHosts(t, filepath.Join(t.TempDir(), "hosts"), "show", "apiserver.cluster.local")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestHostsBadInputChangesNothing(t *testing.T) {
	path := hostsTempFile(t, hostsTestContent)
	for _, tt := range []struct {
		args    []string
		wantErr []string
	}{
		{[]string{"set", "apiserver.cluster.local", "10.103.97.300"}, []string{"argument IP", `"10.103.97.300"`}},
		{[]string{"set", "apiserver.cluster.local", "0.0.0.0"}, []string{"argument IP", `"0.0.0.0"`}},
		{[]string{"set", "api_server.local", "10.103.97.2"}, []string{"argument NAME", `"api_server.local"`}},
		{[]string{"remove", "api server"}, []string{"argument NAME", `"api server"`}},
		{[]string{"show", "bad-"}, []string{"argument NAME", `"bad-"`}},
		{[]string{"set", "apiserver.cluster.local"}, []string{"want arguments NAME IP, got 1"}},
		{[]string{"remove"}, []string{"want arguments NAME, got 0"}},
		{[]string{"show", "a", "b"}, []string{"want arguments NAME, got 2"}},
	} {
		_, err := runHosts(t, path, tt.args...)
		if assert.Error(t, err, "%q", tt.args) {
			for _, want := range tt.wantErr {
				assert.Contains(t, err.Error(), want, "%q", tt.args)
			}
		}
	}
	assert.Equal(t, hostsTestContent, hostsFileContent(t, path))
	assert.Equal(t, hostsPastTime, hostsModTime(t, path))
}

func TestHostsFileFlagDefault(t *testing.T) {
	cmd := newHostsCmd(&app{log: zap.NewNop()})
	f := cmd.PersistentFlags().Lookup("hosts-file")
	require.NotNil(t, f)
	assert.Equal(t, hosts.DefaultPath, f.DefValue)
	assert.Equal(t, "/etc/hosts", f.DefValue)
}
