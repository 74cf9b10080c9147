// Package hosts edits a hosts(5) file so that one name maps to exactly one
// address, touching nothing else.
//
// vipctl uses it to point apiserver.cluster.local at the virtual IP on workers
// and at the node's own address on masters. The editor is deliberately
// conservative:
//
//   - vipctl's own lines carry a trailing marker comment, "# vipctl"
//     (Marker). A line is vipctl's if and only if its comment, trimmed of
//     blanks, is exactly "vipctl". vipctl writes one name per line:
//     "10.103.97.2 apiserver.cluster.local # vipctl".
//   - Set makes the name map to exactly one address. It rewrites vipctl's
//     line for the name in place, or appends one at the end of the file. If
//     other lines (the user's, or stray vipctl lines) also list the name, the
//     name is removed from their alias lists, keeping the rest of each line
//     byte-for-byte; a line is dropped only when no name would be left on it.
//   - Remove deletes the name from vipctl's lines only (dropping a line left
//     without names). Mappings of the name on the user's lines are not
//     touched, and mappings Set displaced are not brought back: to undo a Set
//     exactly, take a File.Snapshot before it and Restore it.
//   - Every other byte of the file is kept as it was: comments, blank lines,
//     spacing, CRLF line ends, malformed lines (they are kept, not fixed) and
//     whether the file ends with a newline. When it does not, a line vipctl
//     appends takes over the missing final newline, so Set followed by Remove
//     gives back the original bytes when the name was absent.
//
// Lines are read the way glibc reads them: a '#' anywhere starts a comment,
// fields are separated by blanks, the first field is the address and the
// others are names, compared without regard to case. A line whose first field
// is not an IPv4 or IPv6 address (zoned addresses included, as glibc rejects
// them) is malformed and ignored by Lookup, Set and Remove.
//
// Parse and Doc are pure and never fail; File applies them to a file on disk,
// writing atomically.
package hosts

import (
	"bytes"
	"net/netip"
	"strings"
)

// Marker is the comment that marks a line as written by vipctl.
const Marker = "# vipctl"

// markerText is Marker without the '#': the comment text that identifies a
// line of vipctl's.
const markerText = "vipctl"

// blanks are the bytes that separate fields, as isspace(3) in the C locale
// (the newline never occurs inside a line).
const blanks = " \t\r\v\f"

// Doc is a parsed hosts file. It keeps every byte of the input, so Render
// returns exactly what Parse was given until Set or Remove changes it. The
// zero value is an empty file.
type Doc struct {
	lines []line
}

// line is one line of the file: its text without the '\n' that ends it, and
// whether there was one (only the last line of a file may lack it).
type line struct {
	text string
	eol  bool
}

// Mapping is one line of a hosts file that maps a name to an address.
type Mapping struct {
	// Addr is the address the line gives.
	Addr netip.Addr `json:"address"`
	// Line is the 1-based line number in the file.
	Line int `json:"line"`
	// Managed reports whether the line carries vipctl's marker.
	Managed bool `json:"managed"`
}

// Parse splits a hosts file into lines. It never fails: lines it does not
// understand are kept as they are.
func Parse(data []byte) *Doc {
	d := &Doc{}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			d.lines = append(d.lines, line{text: string(data)})
			break
		}
		d.lines = append(d.lines, line{text: string(data[:i]), eol: true})
		data = data[i+1:]
	}
	return d
}

// Render returns the file's bytes.
func (d *Doc) Render() []byte {
	n := 0
	for _, l := range d.lines {
		n += len(l.text) + 1
	}
	b := make([]byte, 0, n)
	for _, l := range d.lines {
		b = append(b, l.text...)
		if l.eol {
			b = append(b, '\n')
		}
	}
	return b
}

// field is a blank-separated field of a line: its text and where it ends in
// the line's text.
type field struct {
	text string
	end  int
}

// entry is what a line says, if it is a well-formed mapping line.
type entry struct {
	addr    netip.Addr
	names   []field // the names, with their positions in the line's text
	managed bool
}

// parseEntry reads l as glibc does. ok is false for blank lines, comment
// lines and malformed lines.
func (l line) parseEntry() (e entry, ok bool) {
	s := l.text
	// C string functions stop at a NUL byte, and so does glibc's parser.
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	comment := ""
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s, comment = s[:i], s[i+1:]
	}
	fields := splitFields(s)
	if len(fields) < 2 {
		return entry{}, false
	}
	addr, err := netip.ParseAddr(fields[0].text)
	if err != nil || addr.Zone() != "" {
		return entry{}, false
	}
	return entry{
		addr:    addr,
		names:   fields[1:],
		managed: strings.Trim(comment, blanks) == markerText,
	}, true
}

// splitFields returns the blank-separated fields of s with their end offsets.
func splitFields(s string) []field {
	var fs []field
	i := 0
	for i < len(s) {
		for i < len(s) && strings.IndexByte(blanks, s[i]) >= 0 {
			i++
		}
		start := i
		for i < len(s) && strings.IndexByte(blanks, s[i]) < 0 {
			i++
		}
		if i > start {
			fs = append(fs, field{text: s[start:i], end: i})
		}
	}
	return fs
}

// has reports whether the entry lists name.
func (e entry) has(name string) bool {
	for _, f := range e.names {
		if strings.EqualFold(f.text, name) {
			return true
		}
	}
	return false
}

// withoutName returns l's text with every occurrence of name removed from its
// alias list, each with the blanks before it, and how many names are left.
// The address, the other names, the spacing between them and the comment are
// kept byte-for-byte.
func (l line) withoutName(e entry, name string) (text string, left int) {
	text = l.text
	// Cut from the end so earlier offsets stay valid. The cut for name k runs
	// from the end of field k-1 (the address for the first name) to the end of
	// field k; cuts for adjacent names do not overlap.
	for k := len(e.names) - 1; k >= 0; k-- {
		if !strings.EqualFold(e.names[k].text, name) {
			left++
			continue
		}
		prevEnd := e.names[k].end - len(e.names[k].text)
		// Back up over the blanks to the end of the previous field.
		for prevEnd > 0 && strings.IndexByte(blanks, text[prevEnd-1]) >= 0 {
			prevEnd--
		}
		text = text[:prevEnd] + text[e.names[k].end:]
	}
	return text, left
}
