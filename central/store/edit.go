package store

import "context"

// StaffEdit is a staff edit of a registration: the new values of the
// fields staff may change (limits and status have their own methods).
type StaffEdit struct {
	IPs          []string
	Owner        string
	Department   string
	ContactEmail string
	Purpose      string
	// Senders is the new list; senders kept keep their confirmation, new
	// ones start unconfirmed and stay out of the allowlist until they
	// confirm.
	Senders []Sender
	// FCrDNS and FCrDNSOK are the check of the new IPs.
	FCrDNS   string
	FCrDNSOK bool
}

// StaffEditResult says what an edit changed.
type StaffEditResult struct {
	// Changes describes each changed field (for the audit log); empty:
	// nothing changed.
	Changes []string
	// Added are the new sender addresses (to be confirmed).
	Added []string
	// AllowlistVersion is the version the edit produced (0: edges see no
	// change).
	AllowlistVersion int64
}

// Editor is the editing part of Store.
type Editor interface {
	// StaffEditDevice applies a staff edit in one transaction with one audit
	// entry (action "edit") listing the changes. Removing a sender of an
	// active or suspended device bumps the allowlist version.
	StaffEditDevice(ctx context.Context, name, actor string, e StaffEdit) (StaffEditResult, error)
}
