package hosts

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// FuzzEdit checks the editor's invariants on arbitrary files, names and
// addresses. The seeds run in every `go test`; explore further with
//
//	go test ./hosts -run '^$' -fuzz FuzzEdit -fuzztime 1m
func FuzzEdit(f *testing.F) {
	for _, seed := range []string{
		"",
		"\n",
		debianHosts,
		debianHosts + "10.103.97.2 apiserver.cluster.local # vipctl\n",
		"192.168.1.10 master1 apiserver.cluster.local m1 # masters\n",
		"192.168.1.10 apiserver.cluster.local",
		"1.1.1.1 apiserver.cluster.local # vipctl\n2.2.2.2 APIServer.Cluster.Local # vipctl",
		"1.1.1.1 other apiserver.cluster.local apiserver.cluster.local # vipctl\r\n",
		"127.0.0.1 localhost\r\n::1 localhost\r",
		"bad apiserver.cluster.local\n# 1.2.3.4 apiserver.cluster.local\nfe80::1%lo apiserver.cluster.local\n",
		"1.2.3.4 a\x00apiserver.cluster.local\n1.2.3.4#apiserver.cluster.local\n\xff\xfe",
		"\t 10.0.0.1\v\fapiserver.cluster.local\t#\tvipctl\t\n",
	} {
		f.Add([]byte(seed), api, vip)
	}
	f.Add([]byte(debianHosts), "localhost", "fd00::2")
	f.Add([]byte("::1 localhost ip6-localhost\n"), "ip6-localhost", "::ffff:10.0.0.1")

	f.Fuzz(func(t *testing.T, data []byte, name, addrText string) {
		if ValidateName(name) != nil {
			name = api
		}
		addr, err := ParseAddr(addrText)
		if err != nil {
			addr = netip.MustParseAddr(vip)
		}

		// Parse and Render round-trip byte-for-byte.
		if got := Parse(data).Render(); !bytes.Equal(got, data) {
			t.Fatalf("round trip changed %q to %q", data, got)
		}

		// Set: the name maps to exactly addr, on vipctl's line.
		d := Parse(data)
		changed, err := d.Set(name, addr)
		if err != nil {
			t.Fatalf("Set(%q, %s): %v", name, addr, err)
		}
		set := d.Render()
		if changed != !bytes.Equal(set, data) {
			t.Fatalf("Set reported changed=%v, but %q became %q", changed, data, set)
		}
		if got := Parse(set).Render(); !bytes.Equal(got, set) {
			t.Fatalf("round trip of Set's output changed %q to %q", set, got)
		}
		ms := Parse(set).Lookup(name)
		if len(ms) != 1 || ms[0].Addr != addr || !ms[0].Managed {
			t.Fatalf("after Set(%q, %s) on %q: %q maps %+v", name, addr, data, set, ms)
		}
		// Whether the file ends with a newline is kept.
		if len(data) > 0 && (data[len(data)-1] == '\n') != (set[len(set)-1] == '\n') {
			t.Fatalf("Set changed whether the file ends with a newline: %q became %q", data, set)
		}
		// Set is idempotent.
		changed, err = d.Set(name, addr)
		if err != nil || changed || !bytes.Equal(d.Render(), set) {
			t.Fatalf("second Set on %q: changed=%v err=%v, got %q", set, changed, err, d.Render())
		}
		checkOtherLinesKept(t, data, set, name, ms[0].Line)

		// Set then Remove gives back the original when the name was absent.
		if len(Parse(data).Lookup(name)) == 0 {
			d := Parse(set)
			if _, err := d.Remove(name); err != nil {
				t.Fatalf("Remove(%q): %v", name, err)
			}
			if got := d.Render(); !bytes.Equal(got, data) {
				t.Fatalf("Set then Remove turned %q into %q", data, got)
			}
		}

		// Remove touches vipctl's lines only, and only the name on them.
		before := Parse(data)
		d = Parse(data)
		changed, err = d.Remove(name)
		if err != nil {
			t.Fatalf("Remove(%q): %v", name, err)
		}
		removed := d.Render()
		if changed != !bytes.Equal(removed, data) {
			t.Fatalf("Remove reported changed=%v, but %q became %q", changed, data, removed)
		}
		var wantLeft []Mapping
		for _, m := range before.Lookup(name) {
			if !m.Managed {
				wantLeft = append(wantLeft, m)
			}
		}
		left := Parse(removed).Lookup(name)
		if len(left) != len(wantLeft) {
			t.Fatalf("Remove on %q left %+v, want the user's %+v", data, left, wantLeft)
		}
		for i := range left {
			if left[i].Managed || left[i].Addr != wantLeft[i].Addr {
				t.Fatalf("Remove on %q left %+v, want the user's %+v", data, left, wantLeft)
			}
		}
		for _, l := range before.lines {
			if e, ok := l.parseEntry(); ok && e.managed && e.has(name) {
				continue
			}
			if !bytes.Contains(removed, []byte(l.text)) {
				t.Fatalf("Remove on %q lost line %q: %q", data, l.text, removed)
			}
		}
		changed, err = d.Remove(name)
		if err != nil || changed {
			t.Fatalf("second Remove on %q: changed=%v err=%v", removed, changed, err)
		}
	})
}

// checkOtherLinesKept checks that Set turned the lines of data into those of
// set (less vipctl's line at number managedLine) this way: a line not listing
// name is kept byte-for-byte; a line listing name and no other name is
// dropped; a line listing other names too keeps its fields but name's, and
// its comment.
func checkOtherLinesKept(t *testing.T, data, set []byte, name string, managedLine int) {
	t.Helper()
	orig := Parse(data).lines
	var got []line
	for i, l := range Parse(set).lines {
		if i+1 != managedLine {
			got = append(got, l)
		}
	}
	j := 0
	for _, g := range got {
		for {
			if j == len(orig) {
				t.Fatalf("Set on %q: line %q does not come from the original: %q", data, g.text, set)
			}
			o := orig[j]
			j++
			e, ok := o.parseEntry()
			if !ok || !e.has(name) {
				if g.text != o.text {
					t.Fatalf("Set on %q changed line %q to %q: %q", data, o.text, g.text, set)
				}
				break
			}
			if onlyName(e, name) {
				continue // dropped
			}
			var want []string
			for _, f := range fieldTexts(o.text) {
				if !strings.EqualFold(f, name) {
					want = append(want, f)
				}
			}
			if strings.Join(fieldTexts(g.text), " ") != strings.Join(want, " ") || comment(g.text) != comment(o.text) {
				t.Fatalf("Set on %q turned %q into %q, want fields %q and the same comment", data, o.text, g.text, want)
			}
			break
		}
	}
	for ; j < len(orig); j++ {
		e, ok := orig[j].parseEntry()
		if !ok || !onlyName(e, name) {
			t.Fatalf("Set on %q lost line %q: %q", data, orig[j].text, set)
		}
	}
}

func onlyName(e entry, name string) bool {
	for _, f := range e.names {
		if !strings.EqualFold(f.text, name) {
			return false
		}
	}
	return true
}

// fieldTexts returns the fields before the comment, read independently of
// splitFields.
func fieldTexts(s string) []string {
	s, _, _ = strings.Cut(s, "\x00")
	s, _, _ = strings.Cut(s, "#")
	return strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(blanks, r) })
}

// comment returns what follows the fields: the comment and anything after a
// NUL byte.
func comment(s string) string {
	i := strings.IndexAny(s, "#\x00")
	if i < 0 {
		return ""
	}
	return s[i:]
}
