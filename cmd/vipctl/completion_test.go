package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// complete asks the command tree for completions as the shell scripts do,
// through cobra's hidden __complete command, and returns the candidates.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs(append([]string{"__complete"}, args...))
	require.NoError(t, root.Execute())
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, ":") {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return got
}

func TestFlagValuesComplete(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"ipvs", "apply", "--mode", ""}, []string{"link", "route"}},
		{[]string{"care", "--mode", ""}, []string{"link", "route"}},
		{[]string{"reset", "--mode", ""}, []string{"link", "route"}},
		{[]string{"ipvs", "apply", "--scheduler", ""}, []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}},
		{[]string{"care", "--scheduler", ""}, []string{"rr", "wrr", "lc", "wlc", "sh", "mh"}},
		{[]string{"ipvs", "show", "-o", ""}, []string{"table", "json"}},
		{[]string{"status", "-o", ""}, []string{"table", "json"}},
		{[]string{"hosts", "show", "-o", ""}, []string{"text", "json"}},
		{[]string{"version", "--output", ""}, []string{"text", "json"}},
		{[]string{"--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"status", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"image", "build", "--format", ""}, []string{"docker-archive", "oci-archive"}},
	} {
		assert.Equal(t, tc.want, complete(t, tc.args...), "%v", tc.args)
	}
}

// image build's -o is a file: no fixed values, the shell completes names.
func TestOutputFileCompletesFileNames(t *testing.T) {
	assert.Empty(t, complete(t, "image", "build", "-o", ""))
}
