package store

import (
	"context"
	"time"

	"github.com/postern/postern/shared/event"
)

// The staff console's lists: one page of devices, audit entries or events
// with the total that matches, for filters and sort orders the store
// answers from indexes.

// Lister is the listing part of Store.
type Lister interface {
	// ListDevicePage returns one page of the devices matching q and how
	// many match in all.
	ListDevicePage(ctx context.Context, q DeviceQuery) (DevicePage, error)
	// Departments lists the distinct non-empty departments (sorted).
	Departments(ctx context.Context) ([]string, error)
	// ListAuditPage returns one page of audit entries, newest first.
	ListAuditPage(ctx context.Context, q AuditQuery) (AuditPage, error)
	// ListEventPage returns one page of events, newest first.
	ListEventPage(ctx context.Context, q EventQuery) (EventPage, error)
	// ArchivedDevices returns the earlier, revoked registrations of a
	// name (newest first), archived when the name was requested again.
	ArchivedDevices(ctx context.Context, name string) ([]ArchivedDevice, error)
}

// DeviceSort is a sort order of the device list.
type DeviceSort string

// Device list sort orders. Names sort naturally (digit runs as numbers:
// dev2 before dev10); ties break by name.
const (
	SortName       DeviceSort = "name"
	SortStatus     DeviceSort = "status"
	SortRequested  DeviceSort = "requested"
	SortExpires    DeviceSort = "expires"
	SortDepartment DeviceSort = "department"
	SortOwner      DeviceSort = "owner"
)

// DeviceSorts lists the sort orders.
var DeviceSorts = []DeviceSort{SortName, SortStatus, SortRequested, SortExpires, SortDepartment, SortOwner}

// Valid reports whether s is a known sort order.
func (s DeviceSort) Valid() bool {
	for _, k := range DeviceSorts {
		if s == k {
			return true
		}
	}
	return false
}

// DNS filter values of DeviceQuery.
const (
	DNSMatch    = "ok"
	DNSMismatch = "mismatch"
)

// Sender filter values of DeviceQuery.
const (
	SendersConfirmed   = "confirmed"   // every sender confirmed
	SendersUnconfirmed = "unconfirmed" // at least one sender unconfirmed
)

// MaxPage is the largest page any list returns (CSV exports page through
// bigger results).
const MaxPage = 1000

// CountCap bounds the totals of the audit log and events: counting stops
// there (the page then says "more than").
const CountCap = 10000

// DeviceQuery selects one page of the device list. Zero fields do not
// filter.
type DeviceQuery struct {
	Status []Status
	// Query matches a substring of name, owner, department, contact, IPs
	// or a sender address (case-insensitive).
	Query      string
	Department string
	// Edge keeps devices that edge reported events for.
	Edge string
	// DNS is DNSMatch or DNSMismatch (the last FCrDNS check).
	DNS string
	// ExpiringBefore keeps active devices whose registration expires at or
	// before it.
	ExpiringBefore time.Time
	// Senders is SendersConfirmed or SendersUnconfirmed.
	Senders string
	// Names keeps only these devices (a selection).
	Names []string
	Sort  DeviceSort // "": SortName
	Desc  bool
	Limit int // 0: 50; at most MaxPage
	// Offset skips that many matching devices.
	Offset int
}

// DevicePage is one page of devices and the number matching in all.
type DevicePage struct {
	Devices []Device
	Total   int
}

// AuditQuery selects one page of the audit log. Zero fields do not filter.
type AuditQuery struct {
	Device string
	Edge   string
	Actor  string
	Action string
	// Since and Until bound the entry time (Since inclusive, Until
	// exclusive).
	Since, Until time.Time
	Limit        int // 0: 50; at most MaxPage
	Offset       int
}

// AuditPage is one page of audit entries. Total counts the matching
// entries up to CountCap (More: there are more than Total).
type AuditPage struct {
	Entries []AuditEntry
	Total   int
	More    bool
}

// EventQuery selects one page of events (the message trace). Zero fields
// do not filter; Sender and Recipient match case-insensitively.
type EventQuery struct {
	Device    string
	Edge      string
	ClientIP  string
	Sender    string
	Recipient string
	Kind      event.Kind
	// Since and Until bound the time the edge saw the event (Since
	// inclusive, Until exclusive).
	Since, Until time.Time
	Limit        int // 0: 50; at most MaxPage
	Offset       int
}

// EventPage is one page of events. Total counts the matching events up to
// CountCap (More: there are more than Total).
type EventPage struct {
	Events []event.Event
	Total  int
	More   bool
}

// ArchivedDevice is an earlier registration of a name, revoked and then
// replaced by a new request.
type ArchivedDevice struct {
	Name         string
	IPs          []string
	Owner        string
	Department   string
	ContactEmail string
	Purpose      string
	Senders      []string
	Status       Status
	StatusReason string
	CreatedAt    time.Time
	ArchivedAt   time.Time
}
