package hosts

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Errors for bad input; the errors returned wrap them and name the value.
var (
	ErrInvalidName = errors.New("invalid host name")
	ErrInvalidAddr = errors.New("invalid address")
)

// Lookup returns the mappings of name in file order; the first is the one a
// resolver reading the file uses. Names are compared without regard to case.
// Lookup does not validate name: a name that cannot be in the file has no
// mappings.
func (d *Doc) Lookup(name string) []Mapping {
	var ms []Mapping
	for i, l := range d.lines {
		e, ok := l.parseEntry()
		if ok && e.has(name) {
			ms = append(ms, Mapping{Addr: e.addr, Line: i + 1, Managed: e.managed})
		}
	}
	return ms
}

// Set makes name map to addr and to nothing else, as described in the package
// documentation. It reports whether the file changed; it does not when the
// file already has exactly one line listing name, vipctl's, giving addr and
// no other name. Invalid input returns an error and changes nothing.
func (d *Doc) Set(name string, addr netip.Addr) (changed bool, err error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if err := ValidateAddr(addr); err != nil {
		return false, err
	}
	if d.upToDate(name, addr) {
		return false, nil
	}

	newLine := line{text: addr.String() + " " + name + " " + Marker}
	if d.crlf() {
		newLine.text += "\r"
	}
	unterminated := d.unterminated()
	out := make([]line, 0, len(d.lines)+1)
	placed := false
	for _, l := range d.lines {
		e, ok := l.parseEntry()
		if !ok || !e.has(name) {
			out = append(out, l)
			continue
		}
		// vipctl's line for the name keeps its place in the file: the new
		// line goes where the first one was.
		if e.managed && !placed {
			out = append(out, newLine)
			placed = true
		}
		if text, left := l.withoutName(e, name); left > 0 {
			out = append(out, line{text: text, eol: l.eol})
		}
	}
	if !placed {
		out = append(out, newLine)
	}
	d.lines = out
	d.fixEOLs(unterminated)
	return true, nil
}

// Remove deletes name from vipctl's lines, dropping a line left without
// names, and reports whether the file changed. Lines without vipctl's marker
// are never touched: Lookup tells whether any still map the name.
func (d *Doc) Remove(name string) (changed bool, err error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	unterminated := d.unterminated()
	out := make([]line, 0, len(d.lines))
	for _, l := range d.lines {
		e, ok := l.parseEntry()
		if !ok || !e.managed || !e.has(name) {
			out = append(out, l)
			continue
		}
		changed = true
		if text, left := l.withoutName(e, name); left > 0 {
			out = append(out, line{text: text, eol: l.eol})
		}
	}
	if !changed {
		return false, nil
	}
	d.lines = out
	d.fixEOLs(unterminated)
	return true, nil
}

// upToDate reports whether exactly one line lists name and that line is
// vipctl's, giving addr and only name.
func (d *Doc) upToDate(name string, addr netip.Addr) bool {
	found := false
	for _, l := range d.lines {
		e, ok := l.parseEntry()
		if !ok || !e.has(name) {
			continue
		}
		if found || !e.managed || e.addr != addr || len(e.names) != 1 || e.names[0].text != name {
			return false
		}
		found = true
	}
	return found
}

// unterminated reports whether the file ends without a newline. An empty
// file does not.
func (d *Doc) unterminated() bool {
	return len(d.lines) > 0 && !d.lines[len(d.lines)-1].eol
}

// crlf reports whether the file uses CRLF line ends, judging by its last
// terminated line.
func (d *Doc) crlf() bool {
	for i := len(d.lines) - 1; i >= 0; i-- {
		if d.lines[i].eol {
			return strings.HasSuffix(d.lines[i].text, "\r")
		}
	}
	return false
}

// fixEOLs ends every line with a newline, except the last one when the file
// ended without one before the edit: whether the file ends with a newline
// is preserved. Only lines that moved to or from the end change.
func (d *Doc) fixEOLs(unterminated bool) {
	for i := range d.lines {
		d.lines[i].eol = true
	}
	if unterminated && len(d.lines) > 0 {
		d.lines[len(d.lines)-1].eol = false
	}
}

// ValidateName checks that name is a host name vipctl may write: an RFC 1123
// DNS name of at most 253 characters, without a trailing dot, whose labels
// are 1 to 63 letters, digits and hyphens not starting or ending with a
// hyphen, and whose last label is not all digits (so it cannot be read as an
// address). The error names the value.
func ValidateName(name string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, fmt.Sprintf(format, args...))
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > 253:
		return bad("%d characters long, at most 253 allowed", len(name))
	case strings.HasSuffix(name, "."):
		return bad("must not end with a dot")
	}
	labels := strings.Split(name, ".")
	for _, label := range labels {
		switch {
		case label == "":
			return bad("empty label")
		case len(label) > 63:
			return bad("label %q is %d characters long, at most 63 allowed", label, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return bad("label %q starts or ends with a hyphen", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad("label %q has %q: want letters, digits and hyphens", label, string(rune(c)))
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad("last label is all digits, which reads as an address")
	}
	return nil
}

// ValidateAddr checks that addr is an address a hosts file can map a name
// to: a valid IPv4 or IPv6 address, not unspecified, multicast or zoned.
func ValidateAddr(addr netip.Addr) error {
	switch {
	case !addr.IsValid():
		return fmt.Errorf("%w: no address given", ErrInvalidAddr)
	case addr.Zone() != "":
		return fmt.Errorf("%w %q: zoned addresses are not supported in a hosts file", ErrInvalidAddr, addr)
	case addr.IsUnspecified():
		return fmt.Errorf("%w %q: the unspecified address cannot be connected to", ErrInvalidAddr, addr)
	case addr.IsMulticast():
		return fmt.Errorf("%w %q: multicast addresses cannot be connected to", ErrInvalidAddr, addr)
	}
	return nil
}

// ParseAddr parses and validates an IPv4 or IPv6 address given as text. The
// error names the value.
func ParseAddr(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w %q: not an IPv4 or IPv6 address", ErrInvalidAddr, s)
	}
	if err := ValidateAddr(addr); err != nil {
		return netip.Addr{}, err
	}
	return addr, nil
}
