package store

import (
	"errors"
	"fmt"
)

// The device lifecycle: every status change of a device, whoever asks for
// it (web console, API, CLI, the fleet consumer acting on an edge's report,
// expiry), is one of these actions and follows this table. The store
// applies it inside its transaction; central/registration adds what an
// action needs from the caller (a reason, confirmed senders) and the limits
// on an edge's word (SuspendByEdge).

// Action is a status-changing action on a device.
type Action string

// Actions.
const (
	ActApprove   Action = "approve"
	ActDeny      Action = "deny"
	ActSuspend   Action = "suspend"
	ActReinstate Action = "reinstate"
	ActRevoke    Action = "revoke"
	ActRenew     Action = "renew"
	// ActExpire is taken by the system when a registration period ends.
	ActExpire Action = "expire"
	// ActWithdraw is the owner ending a registration (it becomes revoked).
	ActWithdraw Action = "withdraw"
	// ActRerequest is the owner asking for review again after a denial or
	// an expiry.
	ActRerequest Action = "rerequest"
)

// Rule is one action: the status it leads to from each status it applies
// to, and what it needs.
type Rule struct {
	Action Action
	To     map[Status]Status
	// Noop is a status in which the action does nothing and succeeds
	// (suspending a suspended device: several edges may report it).
	Noop Status
	// SetsExpiry: the action moves the registration's expiry.
	SetsExpiry bool
	// NeedsReason: staff must say why (owners see it).
	NeedsReason bool
	// NeedsConfirmedSenders: every sender must have confirmed its address,
	// unless staff force it (recorded in the audit reason).
	NeedsConfirmedSenders bool
}

// Lifecycle is the whole table, by action.
var Lifecycle = map[Action]Rule{
	ActApprove:   {Action: ActApprove, To: map[Status]Status{Pending: Active, Denied: Active}, SetsExpiry: true, NeedsConfirmedSenders: true},
	ActDeny:      {Action: ActDeny, To: map[Status]Status{Pending: Denied}, NeedsReason: true},
	ActSuspend:   {Action: ActSuspend, To: map[Status]Status{Active: Suspended}, Noop: Suspended, NeedsReason: true},
	ActReinstate: {Action: ActReinstate, To: map[Status]Status{Suspended: Active}},
	ActRevoke: {Action: ActRevoke, To: map[Status]Status{
		Pending: Revoked, Active: Revoked, Suspended: Revoked, Expired: Revoked, Denied: Revoked}, NeedsReason: true},
	ActRenew:  {Action: ActRenew, To: map[Status]Status{Active: Active, Expired: Active, Suspended: Suspended}, SetsExpiry: true},
	ActExpire: {Action: ActExpire, To: map[Status]Status{Active: Expired}},
	ActWithdraw: {Action: ActWithdraw, To: map[Status]Status{
		Pending: Revoked, Active: Revoked, Suspended: Revoked, Expired: Revoked, Denied: Revoked}},
	ActRerequest: {Action: ActRerequest, To: map[Status]Status{Denied: Pending, Expired: Pending}},
}

// OwnerActions are the actions an owner may take on their own
// registration (renewing only while active; see central/registration).
var OwnerActions = []Action{ActWithdraw, ActRerequest, ActRenew}

// StaffActions are the actions staff may take, in the console's order.
var StaffActions = []Action{ActApprove, ActDeny, ActSuspend, ActReinstate, ActRevoke, ActRenew}

// ErrUnknownAction: no such action.
var ErrUnknownAction = errors.New("unknown action")

// TransitionError is returned when an action is not allowed from a
// device's status; errors.Is(err, ErrTransition) holds.
type TransitionError struct {
	Action Action
	Device string
	From   Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s %s: %v (it is %s)", e.Action, e.Device, ErrTransition, e.From)
}

// Is makes errors.Is(err, ErrTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrTransition }

// Next returns the status action a leads to from from. noop reports a
// status in which the action does nothing. err is a *TransitionError when
// a is not allowed from from, or wraps ErrUnknownAction.
func Next(a Action, device string, from Status) (to Status, noop bool, err error) {
	r, ok := Lifecycle[a]
	if !ok {
		return "", false, fmt.Errorf("%q: %w", a, ErrUnknownAction)
	}
	if r.Noop != "" && from == r.Noop {
		return from, true, nil
	}
	to, ok = r.To[from]
	if !ok {
		return "", false, &TransitionError{Action: a, Device: device, From: from}
	}
	return to, false, nil
}
