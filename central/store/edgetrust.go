package store

import "time"

// RequestState is the state of a suspension request.
type RequestState string

// Suspension request states.
const (
	RequestOpen      RequestState = "open"
	RequestConfirmed RequestState = "confirmed"
	RequestDismissed RequestState = "dismissed"
	// RequestAuto records a report that suspended the device by itself
	// (kept so a redelivered report is recognised by its event id).
	RequestAuto RequestState = "auto"
)

// SuspensionRequest is an edge's report that a device's NDRs are
// undeliverable which central did not act on by itself (the edge had not
// relayed for the device recently, or had used up its hourly allowance of
// automatic suspensions). Staff confirm or dismiss it.
type SuspensionRequest struct {
	ID      int64
	Device  string
	Edge    string
	EventID string
	// Reason is the suspension reason the device would get.
	Reason string
	// Why says why it was not applied automatically.
	Why       string
	State     RequestState
	CreatedAt time.Time
	DecidedBy string
	DecidedAt time.Time
	// Decision is the staff member's note.
	Decision string
}

// EdgeSuspension is an edge's report that a device's NDRs are
// undeliverable, with the limits central applies to it.
type EdgeSuspension struct {
	Edge    string
	Device  string
	Reason  string
	EventID string
	// RelayedSince: the suspension is automatic only if the edge reported
	// traffic for the device (a delivery summary or an NDR event) that
	// central received at or after this time.
	RelayedSince time.Time
	// At most Cap automatic suspensions by this edge since CapSince; the
	// rest become requests. Cap 0 makes every report a request.
	CapSince time.Time
	Cap      int
}

// EdgeSuspensionOutcome says what an EdgeSuspension did.
type EdgeSuspensionOutcome string

// Outcomes of SuspendByEdge.
const (
	// EdgeSuspended: the device was active and is now suspended.
	EdgeSuspended EdgeSuspensionOutcome = "suspended"
	// EdgeRequested: a suspension request was stored (or one for the same
	// device and edge was open already: Result.New is false).
	EdgeRequested EdgeSuspensionOutcome = "requested"
	// EdgeNothing: the device is unknown or not active (already
	// suspended, revoked …), or this report (by event id) was handled
	// before; nothing changed.
	EdgeNothing EdgeSuspensionOutcome = "nothing"
)

// Why-texts of a suspension request.
const (
	WhyNoTraffic = "this edge reported no recent traffic for the device"
	WhyCap       = "this edge reached its hourly limit of automatic suspensions"
)

// EdgeSuspensionResult is what SuspendByEdge did.
type EdgeSuspensionResult struct {
	Outcome EdgeSuspensionOutcome
	// Request is the stored request (EdgeRequested).
	Request SuspensionRequest
	// New is false when an open request existed already.
	New bool
	// Version is the allowlist version the suspension produced.
	Version int64
}

// RequestFilter selects suspension requests (newest first).
type RequestFilter struct {
	// State, if set, keeps requests in that state.
	State RequestState
	// Edge and Device, if set, keep requests by that edge, about that
	// device.
	Edge, Device string
	Limit        int // 0: 200
}
