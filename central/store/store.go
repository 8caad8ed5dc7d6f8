// Package store defines central's registry storage: devices and their
// senders, the audit log, events reported by edges, edges, staff users,
// sessions and API tokens, and the monotonic allowlist version.
//
// Two implementations satisfy Store and pass the same suite
// (central/store/storetest): SQLite (central/store/sqlite, the default, pure
// Go) and PostgreSQL (central/store/postgres, for several central instances).
//
// Guarantees every implementation gives:
//   - Every change that alters what edges enforce (a device entering or
//     leaving the active or suspended state, or a limit change of such a
//     device) bumps the allowlist version by one in the same transaction as
//     the change, and writes an audit entry carrying that version. Two
//     writers at once (two goroutines, two processes, two central instances
//     on one PostgreSQL) get distinct, increasing versions.
//   - AllowlistSnapshot is one consistent read: the version returned is the
//     version of exactly the device set returned.
//   - AddEvent stores an event id at most once.
//   - RedeemEnrolment succeeds at most once per token.
//   - Secrets (passwords, session ids, API tokens, enrolment and
//     confirmation tokens, owner keys) are stored only as hashes; the store
//     never sees the secrets themselves.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/postern/postern/shared/event"
)

// Errors. Implementations wrap them with context; test with errors.Is.
var (
	// ErrNotFound: no such device, edge, user, session, token or event.
	ErrNotFound = errors.New("not found")
	// ErrExists: a device, edge or user with that key exists already.
	ErrExists = errors.New("already exists")
	// ErrTransition: the action is not allowed from the device's status
	// (e.g. approving a revoked device).
	ErrTransition = errors.New("not allowed in the device's current status")
	// ErrSchemaNewer: opening the store found migrations applied that this
	// build does not know (a newer release migrated the database); running
	// older code against that schema could corrupt it, so it refuses.
	ErrSchemaNewer = errors.New("database schema is newer than this postern-central")
)

// Status is a device's registration state.
type Status string

// Device states. Only Active and Suspended devices are in the allowlist.
const (
	Pending   Status = "pending"
	Active    Status = "active"
	Denied    Status = "denied"
	Suspended Status = "suspended"
	Revoked   Status = "revoked"
	Expired   Status = "expired"
)

// Statuses lists every status, pending first (the console's order).
var Statuses = []Status{Pending, Active, Suspended, Expired, Denied, Revoked}

// Enforced reports whether edges see a device in this status.
func (s Status) Enforced() bool { return s == Active || s == Suspended }

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, k := range Statuses {
		if s == k {
			return true
		}
	}
	return false
}

// Device is one registration, keyed by its DNS name.
type Device struct {
	// Name is the device's DNS name, lower case without trailing dot.
	Name string
	// IPs are the addresses the requester gave at registration.
	IPs          []string
	Owner        string
	Department   string
	ContactEmail string
	Purpose      string
	// BehindFirewall: Name is a firewall/NAT's name; FirewallAccepted
	// records that the requester takes responsibility for every system
	// behind it (required when BehindFirewall is set).
	BehindFirewall   bool
	FirewallAccepted bool
	Senders          []Sender
	// Per-device limits; 0 means the edge default.
	MessagesPerHour   int
	RecipientsPerHour int
	Status            Status
	// StatusReason is the reason given with the last status change.
	StatusReason string
	// OwnerKeyHash identifies the owner (see central/auth.OwnerKey).
	OwnerKeyHash string
	// FCrDNS is the plain-English result of the last FCrDNS check, and
	// FCrDNSOK whether it matched.
	FCrDNS    string
	FCrDNSOK  bool
	ExpiresAt time.Time // zero until approved
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Sender is one functional sender address of a device.
type Sender struct {
	Address string
	// Personal is set when the address looks like a person's mailbox
	// (flagged for staff; see central/registration.LooksPersonal).
	Personal bool
	// ConfirmTokenHash is the hash of the confirmation link's token.
	ConfirmTokenHash string
	ConfirmSentAt    time.Time
	ConfirmedAt      time.Time // zero: not confirmed
}

// Confirmed reports whether the sender confirmed its address.
func (s Sender) Confirmed() bool { return !s.ConfirmedAt.IsZero() }

// DeviceFilter selects devices for ListDevices.
type DeviceFilter struct {
	// Status, if not empty, keeps devices in one of these states.
	Status []Status
	// Query matches a substring of name, owner, department, contact or a
	// sender address (case-insensitive).
	Query string
	// OwnerKeyHash, if set, keeps only that owner's devices.
	OwnerKeyHash string
	Limit        int // 0: 500
	Offset       int
}

// AuditEntry is one change, who made it and why.
type AuditEntry struct {
	ID     int64
	Time   time.Time
	Actor  string // "staff:alice", "edge:bldg-12", "owner", "system", "cli"
	Action string // "register", "approve", "deny", "suspend", …
	// Device or Edge the entry is about (one of them).
	Device     string
	Edge       string
	FromStatus Status
	ToStatus   Status
	Reason     string
	// AllowlistVersion is the version this change produced (0: none).
	AllowlistVersion int64
}

// AuditFilter selects audit entries (newest first).
type AuditFilter struct {
	Device string
	Edge   string
	Limit  int // 0: 200
}

// EventFilter selects events for ListEvents (newest first).
type EventFilter struct {
	Device string
	Edge   string
	Kind   event.Kind
	Limit  int // 0: 100
}

// AllowlistDevice is one device as the snapshot carries it.
type AllowlistDevice struct {
	Name              string
	Senders           []string
	Status            Status // Active or Suspended
	Reason            string // why suspended
	MessagesPerHour   int
	RecipientsPerHour int
	// Reinstated is the allowlist version of the device's latest
	// reinstatement (0: never); edges lift their local suspensions of the
	// device only once it passes the version they suspended it at.
	Reinstated int64
}

// Edge is one enrolled (or to-be-enrolled) edge relay.
type Edge struct {
	// ID is the edge id (shared/topic.ValidEdgeID), also its MQTT username.
	ID   string
	Name string
	Site string
	// EnrolExpires is when the outstanding enrolment token expires (zero:
	// none outstanding).
	EnrolExpires time.Time
	// Enrolled is set once credentials were issued.
	Enrolled     bool
	MQTTUsername string
	PasswordHash string
	Status       EdgeStatus
	CreatedAt    time.Time
	// RevokedAt is when staff revoked the edge (zero: not revoked). A
	// revoked edge has no credentials, is absent from ListEdges and its
	// events are refused; its audit entries stay.
	RevokedAt time.Time
	// OverLimit counts the events central refused because the edge
	// exceeded its event rate or size caps; OverLimitAt and
	// OverLimitReason describe the last time.
	OverLimit       int64
	OverLimitAt     time.Time
	OverLimitReason string
}

// Revoked reports whether staff revoked the edge.
func (e Edge) Revoked() bool { return !e.RevokedAt.IsZero() }

// EdgeStatus is what an edge last reported.
type EdgeStatus struct {
	Online           bool
	LastSeen         time.Time
	AllowlistVersion int64
	QueueDepth       int
	Outbox           int
	Software         string
	Counters         map[string]int64
}

// User is a staff account.
type User struct {
	Name string
	// PasswordHash is a PHC string (central/auth); empty for SSO-only users.
	PasswordHash string
	CreatedAt    time.Time
}

// Session is a staff login session.
type Session struct {
	IDHash    string
	User      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// APIToken is a staff API token (hash only).
type APIToken struct {
	// ID is the token's public name (listing, revoking): the first 16 hex
	// digits of Hash, which say nothing about the token itself.
	ID        string
	Hash      string
	User      string
	Label     string
	Scope     Scope
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never (tokens made before expiries existed)
}

// Scope is what an API token may do.
type Scope string

// Token scopes. ReadOnly tokens may only read (GET).
const (
	ReadOnly  Scope = "read-only"
	ReadWrite Scope = "read-write"
)

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool { return s == ReadOnly || s == ReadWrite }

// PendingCounts are the pending registrations of one contact address and
// of one client address (caps on the public form).
type PendingCounts struct {
	ByContact  int
	ByClientIP int
}

// Store is central's registry storage. All methods are safe for concurrent
// use; see the package comment for the guarantees.
type Store interface {
	// Lister and Editor are the staff console's lists and edits.
	Lister
	Editor

	// CreateDevice stores a new pending registration (with an audit entry
	// by actor). ErrExists if the name is taken; a revoked registration of
	// the name is archived (ArchivedDevices) and replaced.
	CreateDevice(ctx context.Context, d Device, actor string) error
	// Device returns one device with its senders.
	Device(ctx context.Context, name string) (Device, error)
	ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error)
	// CountDevices returns the number of devices per status.
	CountDevices(ctx context.Context) (map[Status]int, error)
	// SetFCrDNS records the result of the last live check.
	SetFCrDNS(ctx context.Context, name, result string, ok bool) error

	// Status changes. Each writes an audit entry with actor and reason and
	// returns ErrTransition when not allowed from the current status.
	// expires is the new expiry (approve, renew).
	ApproveDevice(ctx context.Context, name, actor, reason string, expires time.Time) error
	DenyDevice(ctx context.Context, name, actor, reason string) error
	// SuspendDevice suspends an active device; suspending a suspended
	// device is a no-op (edges may all report the same NDR failure).
	SuspendDevice(ctx context.Context, name, actor, reason string) error
	ReinstateDevice(ctx context.Context, name, actor, reason string) error
	RevokeDevice(ctx context.Context, name, actor, reason string) error
	// RenewDevice moves the expiry (re-certification); an expired device
	// becomes active again.
	RenewDevice(ctx context.Context, name, actor, reason string, expires time.Time) error
	// ExpireDue expires active devices whose expiry is at or before now
	// and returns their names.
	ExpireDue(ctx context.Context, now time.Time, actor string) ([]string, error)
	// SetLimits changes a device's hourly limits.
	SetLimits(ctx context.Context, name, actor string, messagesPerHour, recipientsPerHour int) error

	// SetSenderConfirmation records that a confirmation link (token hash)
	// was sent to a sender address.
	SetSenderConfirmation(ctx context.Context, device, address, tokenHash string, sent time.Time) error
	// ConfirmSender marks the sender whose token hash matches as confirmed
	// and returns it; ErrNotFound for an unknown token.
	ConfirmSender(ctx context.Context, tokenHash string, at time.Time) (device, address string, err error)

	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)

	// AllowlistVersion is the current allowlist version (at least 1).
	AllowlistVersion(ctx context.Context) (int64, error)
	// AllowlistSnapshot returns, in one consistent read, the version and
	// every active or suspended device sorted by name.
	AllowlistSnapshot(ctx context.Context) (version int64, devices []AllowlistDevice, err error)

	// AddEvent stores e unless an event with its id exists.
	AddEvent(ctx context.Context, e event.Event) (inserted bool, err error)
	// AddEvents stores a batch in one transaction (all or none); inserted
	// says for each event whether it was new (false for an id stored
	// before or earlier in the batch).
	AddEvents(ctx context.Context, es []event.Event) (inserted []bool, err error)
	ListEvents(ctx context.Context, f EventFilter) ([]event.Event, error)
	// PruneEvents deletes the events central received before before,
	// adding them to the per-device counters first, and returns how many
	// it deleted. Concurrent pruners (several instances) count each event
	// once.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)
	// DeviceEventCounts is, per kind, how many events (an event's Count
	// when set, else 1) edges reported for a device, pruned or not.
	DeviceEventCounts(ctx context.Context, device string) (map[event.Kind]int64, error)

	CreateEdge(ctx context.Context, e Edge) error
	// Edge returns an edge, also a revoked one.
	Edge(ctx context.Context, id string) (Edge, error)
	// ListEdges returns the edges that are not revoked.
	ListEdges(ctx context.Context) ([]Edge, error)
	// RevokeEdge removes an edge's credentials and enrolment token for
	// good (audited); ErrNotFound for an unknown or revoked edge.
	RevokeEdge(ctx context.Context, id, actor, reason string) error
	// NoteEdgeOverLimit adds n refused events to an edge's over-limit
	// count with the reason.
	NoteEdgeOverLimit(ctx context.Context, id string, n int64, reason string) error
	// SetEdgeEnrolment stores a one-time enrolment token hash.
	SetEdgeEnrolment(ctx context.Context, id, tokenHash string, expires time.Time) error
	// RedeemEnrolment consumes an unexpired token (once) and returns its
	// edge; ErrNotFound for an unknown, used or expired token.
	RedeemEnrolment(ctx context.Context, tokenHash string) (Edge, error)
	SetEdgeCredentials(ctx context.Context, id, mqttUsername, passwordHash string) error
	EdgeByUsername(ctx context.Context, username string) (Edge, error)
	UpdateEdgeStatus(ctx context.Context, id string, s EdgeStatus) error

	// SuspendByEdge applies an edge's report that a device's NDRs are
	// undeliverable, in one transaction: an automatic suspension if the
	// edge relayed for the device recently and is within its cap, else a
	// suspension request (one open request per device and edge). Both are
	// audited with the edge's id.
	SuspendByEdge(ctx context.Context, s EdgeSuspension) (EdgeSuspensionResult, error)
	ListSuspensionRequests(ctx context.Context, f RequestFilter) ([]SuspensionRequest, error)
	// CountOpenSuspensionRequests is the number of requests awaiting staff.
	CountOpenSuspensionRequests(ctx context.Context) (int, error)
	// DecideSuspensionRequest confirms (suspending the device if it is
	// still active) or dismisses an open request. ErrNotFound for an
	// unknown id, ErrTransition for one decided already.
	DecideSuspensionRequest(ctx context.Context, id int64, confirm bool, actor, note string) (SuspensionRequest, error)

	CreateUser(ctx context.Context, u User) error
	User(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	SetUserPassword(ctx context.Context, name, passwordHash string) error

	CreateSession(ctx context.Context, s Session) error
	// Session returns an unexpired session (ErrNotFound otherwise).
	Session(ctx context.Context, idHash string, now time.Time) (Session, error)
	DeleteSession(ctx context.Context, idHash string) error
	DeleteExpiredSessions(ctx context.Context, now time.Time) error

	// CreateAPIToken stores a token; an empty ID is derived from Hash and
	// an empty Scope is ReadWrite.
	CreateAPIToken(ctx context.Context, t APIToken) error
	// APIToken returns the token with that hash, also when expired (the
	// caller compares ExpiresAt).
	APIToken(ctx context.Context, hash string) (APIToken, error)
	// ListAPITokens returns every token (user "") or one user's, newest
	// first, without hashes.
	ListAPITokens(ctx context.Context, user string) ([]APIToken, error)
	// RevokeAPIToken deletes the token with that ID (audit entry by actor)
	// and returns it; ErrNotFound if there is none.
	RevokeAPIToken(ctx context.Context, id, actor string) (APIToken, error)

	// ChangeUserPassword sets a user's password hash and ends every session
	// of that user except keepSession (an id hash; "" ends all), in one
	// transaction, with an audit entry by actor.
	ChangeUserPassword(ctx context.Context, name, passwordHash, keepSession, actor string) error

	// SenderByToken returns the device and sender whose confirmation token
	// hash this is (ErrNotFound otherwise), without changing anything.
	SenderByToken(ctx context.Context, tokenHash string) (device string, s Sender, err error)

	// RecordRequester notes the client address a registration came from.
	RecordRequester(ctx context.Context, device, clientIP string) error
	// CountPending counts pending registrations with this contact address
	// (case-insensitive) and from this client address.
	CountPending(ctx context.Context, contact, clientIP string) (PendingCounts, error)

	// OwnerEditDevice changes what an owner may change of a registration
	// (one transaction, audited). When the device is active or suspended
	// and the change alters what edges enforce (its senders, or the
	// firewall declaration staff approved), it goes back to pending and
	// leaves the allowlist (a version bump). Senders kept keep their
	// confirmation; new ones start unconfirmed. e.Rerequest also moves a
	// denied or expired registration back to pending. It returns the
	// status before and after. ErrTransition for a revoked device.
	OwnerEditDevice(ctx context.Context, e DeviceEdit, actor string) (from, to Status, err error)
	// Transition applies any action of the lifecycle table (owners'
	// withdraw and re-request among them), audited like the staff
	// actions; expires is used by actions that set an expiry.
	Transition(ctx context.Context, name string, a Action, actor, reason string, expires time.Time) error
	// ClaimNotice records that the owner notice (device, kind, key) is
	// being sent and reports false if it was claimed before, so each
	// notice goes out at most once, also with several instances.
	ClaimNotice(ctx context.Context, device, kind, key string, at time.Time) (bool, error)
	// ReleaseNotice forgets a claim whose mail could not be sent.
	ReleaseNotice(ctx context.Context, device, kind, key string) error
	// ExpiringDevices returns active devices whose expiry is after from
	// and at or before before, soonest first, at most limit (0: 1000),
	// leaving out those with a claimed notice of kind unnoticed keyed by
	// their expiry (Unix milliseconds in decimal) when unnoticed is set.
	ExpiringDevices(ctx context.Context, from, before time.Time, unnoticed string, limit int) ([]Device, error)
	// DeviceReports returns the latest refusals, rate-limit hits, dropped
	// reports and NDR events (newest first, at most limit) of a device
	// and, when ips is not empty, of events from those client addresses
	// at or after since (an unregistered or not yet active device's
	// attempts).
	DeviceReports(ctx context.Context, device string, ips []string, since time.Time, limit int) ([]event.Event, error)
	// DailyCounts returns per-day (UTC) event counts by kind of one device
	// (DeviceAll: every event; "": unregistered clients) for the days at
	// or after from, oldest first.
	DailyCounts(ctx context.Context, device string, from time.Time) ([]DayCount, error)
	// LatestEvent is a device's newest event of one kind (ErrNotFound if
	// none; kind "" is any kind).
	LatestEvent(ctx context.Context, device string, kind event.Kind) (event.Event, error)
	// EdgeSamples returns an edge's queue samples (one per EdgeSampleSlot,
	// recorded by UpdateEdgeStatus) at or after from, oldest first.
	EdgeSamples(ctx context.Context, edge string, from time.Time) ([]EdgeSample, error)

	Close() error
}

// DeviceEdit is an owner's change of a registration; every field is
// replaced.
type DeviceEdit struct {
	Name             string
	IPs              []string
	Owner            string
	Department       string
	ContactEmail     string
	Purpose          string
	BehindFirewall   bool
	FirewallAccepted bool
	// Senders replace the device's senders (Address and Personal are
	// used; kept addresses keep their confirmation).
	Senders  []Sender
	FCrDNS   string
	FCrDNSOK bool
	// Rerequest moves a denied or expired registration back to pending.
	Rerequest bool
}

// DeviceAll is the DailyCounts key of the whole fleet's events.
const DeviceAll = "*"

// DayCount is one day's count of one event kind (an event's Count when
// set, else 1).
type DayCount struct {
	Day  time.Time // 00:00 UTC
	Kind event.Kind
	N    int64
}

// EdgeSampleSlot is the spacing of edge queue samples.
const EdgeSampleSlot = 5 * time.Minute

// EdgeSample is one edge's queue at one slot (the last report in it).
type EdgeSample struct {
	Time       time.Time
	QueueDepth int
	Outbox     int
	Online     bool
}
