// Package carestatus is the shape of the watchdog's report on each master:
// what the decision core (care/health) believes, the last probe, and what the
// kernel had. The watchdog serves it on /status (package care), and `vipctl
// status` prints it, with the kernel's counters it read itself. It is plain
// data with its JSON names, so the decision core stays free of them, and a
// field added here (say, why a master is held down) reaches /status and
// `vipctl status -o json` at once.
package carestatus

import (
	"net/netip"
	"time"
)

// Phase is what the watchdog believes about a master's health; see
// health.Phase for the rules.
type Phase string

// The phases of a master.
const (
	Unknown Phase = "unknown"
	Up      Phase = "up"
	Down    Phase = "down"
)

// Membership is where a master stands in the IPVS service; see
// health.Membership.
type Membership string

// The memberships of a master.
const (
	InService Membership = "in-service"
	Draining  Membership = "draining"
	Removed   Membership = "removed"
)

// Master is one master (or a real server the watchdog does not know, with
// only Address and Kernel set).
type Master struct {
	Address netip.AddrPort `json:"address"`
	// Phase is empty for a real server the watchdog does not know.
	Phase      Phase      `json:"state,omitempty"`
	Since      time.Time  `json:"since,omitzero"`
	Membership Membership `json:"membership,omitempty"`
	// Weight is the weight the watchdog wants; -1 when removed.
	Weight    int `json:"weight"`
	Successes int `json:"consecutiveSuccesses"`
	Failures  int `json:"consecutiveFailures"`
	// Flaps is the master's count of recent falls (see health.Config.HoldDown).
	Flaps int `json:"flaps"`
	// HoldUntil is the end of the master's last hold-down.
	HoldUntil time.Time `json:"holdDownUntil,omitzero"`
	// HeldDown is set for a healthy master (it passed Rise) that the
	// hold-down keeps out of service until HoldUntil; HeldReason says why
	// and when it comes back.
	HeldDown   bool      `json:"heldDown,omitempty"`
	HeldReason string    `json:"heldDownReason,omitempty"`
	DrainSince time.Time `json:"drainingSince,omitzero"`
	// Source is where the watchdog has the master from: "seed" (--master)
	// or "api" (the kubernetes Service's EndpointSlice, or the state file
	// that kept it).
	Source string `json:"source,omitempty"`
	// LastSeenInAPI is when the API last listed it; zero: never.
	LastSeenInAPI time.Time `json:"lastSeenInAPI,omitzero"`
	// ForgetAt is when it will be forgotten if it stays absent from the
	// API and unhealthy; zero while it is not being forgotten.
	ForgetAt time.Time `json:"forgetAt,omitzero"`
	// LastProbe is nil before the first probe.
	LastProbe *Probe `json:"lastProbe,omitempty"`
	// Kernel is the real server as the kernel reported it; nil when the
	// kernel's service has no such real server (or was not read).
	Kernel *Kernel `json:"kernel,omitempty"`
	// Local marks the master on this node itself (a master's own
	// apiserver), which the watchdog prefers while it is in service: then
	// the node's traffic through the VIP is local.
	Local bool `json:"local,omitempty"`
}

// Probe is the last probe of a master.
type Probe struct {
	At      time.Time `json:"time"`
	OK      bool      `json:"ok"`
	Status  int       `json:"httpStatus,omitempty"`
	Reason  string    `json:"reason"`
	Latency float64   `json:"latencySeconds"`
}

// Kernel is a real server as the kernel reported it.
type Kernel struct {
	Weight        int `json:"weight"`
	ActiveConns   int `json:"activeConns"`
	InactiveConns int `json:"inactiveConns"`
}
