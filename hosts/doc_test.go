package hosts

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	api = "apiserver.cluster.local"
	vip = "10.103.97.2"
)

// debianHosts is a typical /etc/hosts.
const debianHosts = `127.0.0.1	localhost
127.0.1.1	node1.example.com	node1

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
`

func TestParseRenderRoundTrip(t *testing.T) {
	for _, in := range []string{
		"",
		"\n",
		"\n\n\n",
		"no newline at the end",
		"a\nb",
		debianHosts,
		"10.0.0.1 a\r\n10.0.0.2 b\r\n",
		"garbage ### \x00 \xff\xfe\n\t \n",
	} {
		d := Parse([]byte(in))
		assert.Equal(t, in, string(d.Render()), "input %q", in)
	}
}

func TestDocSet(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		setName string // api when empty
		addr    string // vip when empty
		want    string
	}{
		{
			name: "empty file",
			in:   "",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "appended at the end, everything else kept",
			in:   debianHosts,
			want: debianHosts + "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "vipctl's line is replaced where it is",
			in:   "127.0.0.1 localhost\n192.168.1.10 apiserver.cluster.local # vipctl\n# end\n",
			want: "127.0.0.1 localhost\n10.103.97.2 apiserver.cluster.local # vipctl\n# end\n",
		},
		{
			name: "marker spelled loosely is still vipctl's",
			in:   "192.168.1.10\tapiserver.cluster.local\t#vipctl  \n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "a longer comment is not the marker",
			in:   "192.168.1.10 apiserver.cluster.local # vipctl was here\n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "user line with only the name is dropped",
			in:   "127.0.0.1 localhost\n192.168.1.10 apiserver.cluster.local # added by hand\n::1 localhost\n",
			want: "127.0.0.1 localhost\n::1 localhost\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "name removed from a user line's aliases, spacing and comment kept",
			in:   "192.168.1.10   master1\tapiserver.cluster.local  m1 # masters\n",
			want: "192.168.1.10   master1  m1 # masters\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "name first on a user line",
			in:   "192.168.1.10\tapiserver.cluster.local master1\n",
			want: "192.168.1.10 master1\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "names compare without case, every occurrence goes",
			in:   "192.168.1.10 APIServer.Cluster.Local master1 apiserver.cluster.local\n",
			want: "192.168.1.10 master1\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "user line giving the same address is still replaced by vipctl's",
			in:   "10.103.97.2 apiserver.cluster.local\n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "duplicate vipctl lines collapse into the first",
			in:   "1.1.1.1 apiserver.cluster.local # vipctl\nx\n2.2.2.2 apiserver.cluster.local # vipctl\n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\nx\n",
		},
		{
			name: "vipctl line edited to carry other names keeps them",
			in:   "1.1.1.1 other.local apiserver.cluster.local # vipctl\n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n1.1.1.1 other.local # vipctl\n",
		},
		{
			name: "vipctl's line for another name is left alone",
			in:   "1.1.1.1 other.local # vipctl\n",
			want: "1.1.1.1 other.local # vipctl\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "name differing in case on vipctl's line is rewritten",
			in:   "10.103.97.2 APISERVER.cluster.local # vipctl\n",
			want: "10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "malformed lines, comments and zoned addresses are kept",
			in:   "not-an-ip apiserver.cluster.local\n# 1.2.3.4 apiserver.cluster.local\nfe80::1%eth0 apiserver.cluster.local\n1.2.3.4 foo # apiserver.cluster.local\n1.2.3.4#apiserver.cluster.local\n",
			want: "not-an-ip apiserver.cluster.local\n# 1.2.3.4 apiserver.cluster.local\nfe80::1%eth0 apiserver.cluster.local\n1.2.3.4 foo # apiserver.cluster.local\n1.2.3.4#apiserver.cluster.local\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "text after a NUL byte is not read, as glibc does not",
			in:   "1.2.3.4 foo\x00apiserver.cluster.local\n",
			want: "1.2.3.4 foo\x00apiserver.cluster.local\n10.103.97.2 apiserver.cluster.local # vipctl\n",
		},
		{
			name: "no newline at the end: vipctl's line takes over its absence",
			in:   "127.0.0.1 localhost",
			want: "127.0.0.1 localhost\n10.103.97.2 apiserver.cluster.local # vipctl",
		},
		{
			name: "no newline at the end, last line dropped",
			in:   "127.0.0.1 localhost\n1.1.1.1 apiserver.cluster.local",
			want: "127.0.0.1 localhost\n10.103.97.2 apiserver.cluster.local # vipctl",
		},
		{
			name: "CRLF file gets a CRLF line",
			in:   "127.0.0.1 localhost\r\n",
			want: "127.0.0.1 localhost\r\n10.103.97.2 apiserver.cluster.local # vipctl\r\n",
		},
		{
			name: "IPv6 address, canonical form",
			in:   "",
			addr: "FD00:0:0::0002",
			want: "fd00::2 apiserver.cluster.local # vipctl\n",
		},
		{
			name:    "any DNS name",
			in:      "127.0.0.1 localhost\n",
			setName: "k8s-api.example.com",
			want:    "127.0.0.1 localhost\n10.103.97.2 k8s-api.example.com # vipctl\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, addr := or(tt.setName, api), netip.MustParseAddr(or(tt.addr, vip))
			d := Parse([]byte(tt.in))
			changed, err := d.Set(name, addr)
			require.NoError(t, err)
			got := string(d.Render())
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in != tt.want, changed, "changed")

			// The result maps the name to exactly the address, on vipctl's line.
			assert.Equal(t, []netip.Addr{addr}, addrs(Parse([]byte(got)).Lookup(name)))
			// Idempotent.
			changed, err = d.Set(name, addr)
			require.NoError(t, err)
			assert.False(t, changed, "second Set changed the file")
			assert.Equal(t, got, string(d.Render()))
		})
	}
}

func TestDocSetUpToDate(t *testing.T) {
	for _, in := range []string{
		"10.103.97.2 apiserver.cluster.local # vipctl\n",
		debianHosts + "10.103.97.2\t apiserver.cluster.local\t#  vipctl\n",
		"10.103.97.2 apiserver.cluster.local # vipctl\nnot-an-ip apiserver.cluster.local\n",
	} {
		d := Parse([]byte(in))
		changed, err := d.Set(api, netip.MustParseAddr(vip))
		require.NoError(t, err)
		assert.False(t, changed, "input %q", in)
		assert.Equal(t, in, string(d.Render()))
	}
}

func TestDocRemove(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "vipctl's line goes, the rest stays",
			in:   debianHosts + "10.103.97.2 apiserver.cluster.local # vipctl\n# after\n",
			want: debianHosts + "# after\n",
		},
		{
			name: "user lines are not touched",
			in:   "192.168.1.10 apiserver.cluster.local\n192.168.1.11 master2 apiserver.cluster.local # vipctl was here\n",
			want: "192.168.1.10 apiserver.cluster.local\n192.168.1.11 master2 apiserver.cluster.local # vipctl was here\n",
		},
		{
			name: "absent name",
			in:   debianHosts,
			want: debianHosts,
		},
		{
			name: "every vipctl line for the name goes, case-insensitively",
			in:   "1.1.1.1 apiserver.cluster.local # vipctl\n2.2.2.2 APISERVER.cluster.local # vipctl\n",
			want: "",
		},
		{
			name: "other names on vipctl's line stay",
			in:   "1.1.1.1 other.local apiserver.cluster.local # vipctl\n",
			want: "1.1.1.1 other.local # vipctl\n",
		},
		{
			name: "vipctl's line last without newline: the file again ends without one",
			in:   "127.0.0.1 localhost\n10.103.97.2 apiserver.cluster.local # vipctl",
			want: "127.0.0.1 localhost",
		},
		{
			name: "CRLF file",
			in:   "127.0.0.1 localhost\r\n10.103.97.2 apiserver.cluster.local # vipctl\r\n",
			want: "127.0.0.1 localhost\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Parse([]byte(tt.in))
			changed, err := d.Remove(api)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(d.Render()))
			assert.Equal(t, tt.in != tt.want, changed, "changed")
			for _, m := range d.Lookup(api) {
				assert.False(t, m.Managed, "vipctl line %d still maps the name", m.Line)
			}
			changed, err = d.Remove(api)
			require.NoError(t, err)
			assert.False(t, changed, "second Remove changed the file")
		})
	}
}

func TestDocSetThenRemoveRestores(t *testing.T) {
	for _, in := range []string{"", "\n", debianHosts, "a", "a\r\nb", "a\r", "x\n\n# c"} {
		d := Parse([]byte(in))
		_, err := d.Set(api, netip.MustParseAddr(vip))
		require.NoError(t, err)
		_, err = d.Remove(api)
		require.NoError(t, err)
		assert.Equal(t, in, string(d.Render()), "input %q", in)
	}
}

func TestDocLookup(t *testing.T) {
	d := Parse([]byte("# 9.9.9.9 apiserver.cluster.local\n" +
		"bad apiserver.cluster.local\n" +
		"192.168.1.10 master1 APIServer.cluster.local\n" +
		"10.103.97.2 apiserver.cluster.local # vipctl\n" +
		"fd00::1 apiserver.cluster.local\n"))
	assert.Equal(t, []Mapping{
		{Addr: netip.MustParseAddr("192.168.1.10"), Line: 3},
		{Addr: netip.MustParseAddr(vip), Line: 4, Managed: true},
		{Addr: netip.MustParseAddr("fd00::1"), Line: 5},
	}, d.Lookup(api))
	assert.Empty(t, d.Lookup("master2"))
	assert.Empty(t, d.Lookup("bad"))
}

func TestDocBadInputChangesNothing(t *testing.T) {
	in := debianHosts + "10.103.97.2 apiserver.cluster.local # vipctl\n"
	for _, tt := range []struct {
		name, addr string
		wantErr    error
		wantInErr  string
	}{
		{name: "under_score.local", addr: vip, wantErr: ErrInvalidName, wantInErr: `"under_score.local"`},
		{name: "", addr: vip, wantErr: ErrInvalidName, wantInErr: "empty"},
		{name: api, addr: "0.0.0.0", wantErr: ErrInvalidAddr, wantInErr: `"0.0.0.0"`},
		{name: api, addr: "ff02::1", wantErr: ErrInvalidAddr, wantInErr: `"ff02::1"`},
		{name: api, addr: "fe80::1%eth0", wantErr: ErrInvalidAddr, wantInErr: "zoned"},
	} {
		d := Parse([]byte(in))
		changed, err := d.Set(tt.name, netip.MustParseAddr(tt.addr))
		require.ErrorIs(t, err, tt.wantErr)
		assert.Contains(t, err.Error(), tt.wantInErr)
		assert.False(t, changed)
		assert.Equal(t, in, string(d.Render()))
	}
	d := Parse([]byte(in))
	_, err := d.Set(api, netip.Addr{})
	require.ErrorIs(t, err, ErrInvalidAddr)
	changed, err := d.Remove("bad name")
	require.ErrorIs(t, err, ErrInvalidName)
	assert.False(t, changed)
	assert.Equal(t, in, string(d.Render()))
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{
		api, "localhost", "a", "k8s-api.example.com", "A-1.b2", "1a.example", "123.example.com",
		strings.Repeat("a", 63) + ".local",
		strings.Repeat(strings.Repeat("a", 62)+".", 4) + "a", // 253 characters
	} {
		assert.NoError(t, ValidateName(ok), ok)
	}
	for bad, why := range map[string]string{
		"":                              "empty",
		"apiserver.cluster.local.":      "dot",
		"a..b":                          "empty label",
		".a":                            "empty label",
		"-a.b":                          "hyphen",
		"a-.b":                          "hyphen",
		"a_b":                           `"_"`,
		"a b":                           `" "`,
		"a#b":                           `"#"`,
		"ä.de":                          "want letters",
		strings.Repeat("a", 64) + ".io": "at most 63",
		strings.Repeat(strings.Repeat("a", 62)+".", 4) + "ab": "at most 253",
		"1.2.3.4": "all digits",
		"123":     "all digits",
		"::1":     `":"`,
	} {
		err := ValidateName(bad)
		if assert.Error(t, err, "%q", bad) {
			assert.True(t, errors.Is(err, ErrInvalidName))
			assert.Contains(t, err.Error(), why, "%q", bad)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.103.97.2":    "10.103.97.2",
		"fd00::2":        "fd00::2",
		"FD00:0::2":      "fd00::2",
		"::ffff:1.2.3.4": "::ffff:1.2.3.4",
	} {
		got, err := ParseAddr(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got.String())
	}
	for _, bad := range []string{"", "10.103.97", "10.103.97.256", "010.1.1.1", "apiserver", "1.2.3.4/32", "::", "224.0.0.1", "fe80::1%eth0"} {
		_, err := ParseAddr(bad)
		if assert.Error(t, err, "%q", bad) {
			assert.ErrorIs(t, err, ErrInvalidAddr)
			assert.Contains(t, err.Error(), `"`+bad, "the error names the value")
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func addrs(ms []Mapping) []netip.Addr {
	var as []netip.Addr
	for _, m := range ms {
		as = append(as, m.Addr)
	}
	return as
}
