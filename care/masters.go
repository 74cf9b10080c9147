package care

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vipctl/vipctl/internal/atomicfile"
)

// The sources of a master, as /status reports them.
const (
	SourceSeed = "seed" // --master
	SourceAPI  = "api"  // discovered from the kubernetes Service's EndpointSlice
)

// known is what the master list knows of one master besides its health.
type known struct {
	seed bool
	// inAPI is set while the last listing the API gave names it.
	inAPI bool
	// lastSeen is when a listing last named it (zero: never).
	lastSeen time.Time
	// absentSince is since when it is both absent from the API and
	// unhealthy, while the listing is trusted; zero otherwise.
	absentSince time.Time
}

// masterList is the set of masters the watchdog manages: the --master
// seeds, and every address the API listed, until one is absent from the
// API and unhealthy for forgetAfter. It is pure: the loop calls it with
// the time and the health it knows; it never touches the tracker.
type masterList struct {
	vip         netip.AddrPort
	forgetAfter time.Duration // 0: never forget
	order       []netip.AddrPort
	by          map[netip.AddrPort]*known
}

func newMasterList(vip netip.AddrPort, seeds []netip.AddrPort, forgetAfter time.Duration) *masterList {
	l := &masterList{vip: vip, forgetAfter: forgetAfter, by: map[netip.AddrPort]*known{}}
	for _, s := range seeds {
		l.order = append(l.order, s)
		l.by[s] = &known{seed: true}
	}
	return l
}

// usable tells why addr cannot be a master of the service at vip: a
// loopback, unspecified, multicast or link-local address, the VIP itself,
// another family, no port. "" when it can.
func usable(addr, vip netip.AddrPort) string {
	a := addr.Addr()
	switch {
	case !addr.IsValid() || addr.Port() == 0:
		return "not an IP:port"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsMulticast(), a.IsLinkLocalUnicast(), a.Zone() != "":
		return "not a routable unicast address"
	case a == vip.Addr():
		return "the VIP itself"
	case a.Is4() != vip.Addr().Is4():
		return "another address family than the VIP " + vip.Addr().String()
	}
	return ""
}

// rejected is an address a listing named that cannot be a master.
type rejected struct {
	addr netip.AddrPort
	why  string
}

// seen takes a listing from the API at now: the masters it names are
// added (those not known yet returned in added, in the listing's order),
// marked in the API and their absence timers cleared; the others are
// marked absent. Unusable addresses are returned, and ignored.
func (l *masterList) seen(listing []netip.AddrPort, now time.Time) (added []netip.AddrPort, bad []rejected) {
	in := map[netip.AddrPort]bool{}
	for _, a := range listing {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if why := usable(a, l.vip); why != "" {
			bad = append(bad, rejected{a, why})
			continue
		}
		if in[a] {
			continue
		}
		in[a] = true
		k := l.by[a]
		if k == nil {
			k = &known{}
			l.by[a] = k
			l.order = append(l.order, a)
			added = append(added, a)
		}
		k.inAPI, k.lastSeen, k.absentSince = true, now, time.Time{}
	}
	for a, k := range l.by {
		if !in[a] {
			k.inAPI = false
		}
	}
	return added, bad
}

// untrusted says the API's listing can no longer be trusted (the watch
// failed, the API is unreachable): absence counts for nothing until the
// next listing, so no master is forgotten meanwhile.
func (l *masterList) untrusted() {
	for _, k := range l.by {
		k.absentSince = time.Time{}
	}
}

// sweep returns the masters to forget at now: discovered ones (never a
// seed) absent from a trusted listing and unhealthy for forgetAfter.
// trusted is false while the listing cannot be trusted (see untrusted);
// healthy tells a master's health. Forgotten masters leave the list.
func (l *masterList) sweep(now time.Time, trusted bool, healthy func(netip.AddrPort) bool) (forget []netip.AddrPort) {
	if !trusted || l.forgetAfter <= 0 {
		l.untrusted()
		return nil
	}
	for _, a := range l.order {
		k := l.by[a]
		switch {
		case k.seed || k.inAPI || healthy(a):
			k.absentSince = time.Time{}
		case k.absentSince.IsZero():
			k.absentSince = now
		case now.Sub(k.absentSince) >= l.forgetAfter:
			forget = append(forget, a)
		}
	}
	for _, a := range forget {
		delete(l.by, a)
		l.order = slices.DeleteFunc(l.order, func(b netip.AddrPort) bool { return b == a })
	}
	return forget
}

// restore adds masters read from the state file (not in the API until a
// listing says so). Unusable ones are returned and ignored.
func (l *masterList) restore(st []StoredMaster) (added []netip.AddrPort, bad []rejected) {
	for _, m := range st {
		if why := usable(m.Address, l.vip); why != "" {
			bad = append(bad, rejected{m.Address, why})
			continue
		}
		if l.by[m.Address] != nil {
			continue
		}
		l.by[m.Address] = &known{lastSeen: m.LastSeen}
		l.order = append(l.order, m.Address)
		added = append(added, m.Address)
	}
	return added, bad
}

// masters returns the list, seeds first in their order, then the others
// in the order they were found.
func (l *masterList) masters() []netip.AddrPort { return slices.Clone(l.order) }

// info returns what /status shows of a master: its source, when the API
// last listed it, and when it will be forgotten if nothing changes (zero
// when it is not being forgotten).
func (l *masterList) info(a netip.AddrPort) (source string, lastSeen, forgetAt time.Time) {
	k := l.by[a]
	if k == nil {
		return "", time.Time{}, time.Time{}
	}
	source = SourceAPI
	if k.seed {
		source = SourceSeed
	}
	if !k.absentSince.IsZero() {
		forgetAt = k.absentSince.Add(l.forgetAfter)
	}
	return source, k.lastSeen, forgetAt
}

// Store keeps the discovered masters across restarts (FileStore).
type Store interface {
	// Load returns the masters saved; none when nothing was saved yet.
	Load() ([]StoredMaster, error)
	// Save replaces what was saved.
	Save([]StoredMaster) error
}

// state is what the state file holds: the discovered masters (seeds are
// in the manifest), no secret.
type state struct {
	Masters []StoredMaster `json:"masters"`
}

// StoredMaster is a discovered master as the state file keeps it.
type StoredMaster struct {
	Address  netip.AddrPort `json:"address"`
	LastSeen time.Time      `json:"lastSeenInAPI,omitzero"`
}

// stored returns what to save: every discovered master, by address.
func (l *masterList) stored() []StoredMaster {
	out := []StoredMaster{}
	for _, a := range l.order {
		if k := l.by[a]; !k.seed {
			out = append(out, StoredMaster{Address: a, LastSeen: k.lastSeen})
		}
	}
	slices.SortFunc(out, func(x, y StoredMaster) int { return cmp.Compare(x.Address.String(), y.Address.String()) })
	return out
}

// FileStore keeps the discovered masters in a JSON file (--state-file),
// replaced atomically (mode 0644: addresses only).
type FileStore struct{ Path string }

// Load reads the file; a missing file is an empty list.
func (s FileStore) Load() ([]StoredMaster, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--state-file %q: %w", s.Path, err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("--state-file %q: %w", s.Path, err)
	}
	return st.Masters, nil
}

// Save replaces the file with ms.
func (s FileStore) Save(ms []StoredMaster) error {
	data, err := json.MarshalIndent(state{Masters: ms}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.Path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("--state-file %q: %w", s.Path, err)
	}
	return nil
}
