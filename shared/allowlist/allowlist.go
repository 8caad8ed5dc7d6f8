// Package allowlist is the signed allowlist snapshot of the sync contract
// (docs/CONTRACT.md): the registered devices central publishes and every
// edge enforces.
//
// Guarantees:
//   - Encode produces the same bytes for the same content (canonical
//     encoding: devices sorted by name, senders sorted and de-duplicated,
//     times in UTC at millisecond precision, fixed field order).
//   - Decode returns a snapshot only if its Ed25519 signature verifies
//     against the given public key. The signature covers the compressed
//     bytes, so nothing unauthenticated is ever decompressed or parsed.
//   - Compare orders snapshots by (Version, Issued); edges accept only a
//     strictly newer snapshot (see Accept).
package allowlist

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// FormatVersion is the payload format this package writes and reads.
const FormatVersion = 1

// Status is a device's enforcement state.
type Status string

const (
	// Active devices may relay to any recipient (within their limits).
	Active Status = "active"
	// Suspended devices are refused with a 5xx that says why.
	Suspended Status = "suspended"
)

// Device is one registered device as edges see it.
type Device struct {
	// Name is the device's DNS name (lower case, no trailing dot); the edge
	// matches it against the FCrDNS name of the client.
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Senders are the functional sender addresses the device may use for
	// external mail.
	Senders []string `json:"senders,omitempty"`
	// MessagesPerHour and RecipientsPerHour are the device's limits;
	// 0 means the edge default.
	MessagesPerHour   int `json:"mph,omitempty"`
	RecipientsPerHour int `json:"rph,omitempty"`
	// Reason says why a device is suspended (shown in the refusal).
	Reason string `json:"reason,omitempty"`
	// Reinstated is the device's reinstatement epoch: the allowlist
	// version at which staff last reinstated it (0: never). An edge lifts
	// a suspension it imposed locally only once this moves past the epoch
	// it noted when it suspended the device; a snapshot that merely lists
	// the device as active does not. Snapshots without the field decode
	// with 0 and encode to the same bytes as before.
	Reinstated int64 `json:"reinstated,omitempty"`
}

// Snapshot is the whole allowlist at one version.
type Snapshot struct {
	Format int `json:"format"`
	// Version is monotonic, assigned by central's store on every change
	// that affects enforcement. Republishing without a change keeps the
	// version and moves Issued and ValidUntil.
	Version int64     `json:"version"`
	Issued  time.Time `json:"issued"`
	// ValidUntil is when an edge that could not refresh stops trusting the
	// snapshot for external relay (the offline rule in docs/CONTRACT.md).
	ValidUntil time.Time `json:"valid_until"`
	Devices    []Device  `json:"devices"`
}

// Errors returned by Decode and Accept. Callers count rejections by these.
var (
	// ErrUnsigned: the message is not a signed snapshot at all.
	ErrUnsigned = errors.New("allowlist: not a signed snapshot")
	// ErrBadSignature: the signature does not verify with the public key.
	ErrBadSignature = errors.New("allowlist: signature does not verify")
	// ErrFormat: signed, but the content is malformed or of an unknown format.
	ErrFormat = errors.New("allowlist: malformed snapshot")
	// ErrOlder: the snapshot is older than the one already held.
	ErrOlder = errors.New("allowlist: older than the current snapshot")
	// ErrSame: the snapshot is the one already held (a retained redelivery).
	ErrSame = errors.New("allowlist: same as the current snapshot")
)

// Normalize puts s into canonical form: names lower-cased without trailing
// dot, senders sorted and de-duplicated, devices sorted by name, times UTC
// at millisecond precision. It reports invalid content (empty or duplicate
// names, unknown status, negative limits, ValidUntil not after Issued).
func (s *Snapshot) Normalize() error {
	if s.Format == 0 {
		s.Format = FormatVersion
	}
	if s.Format != FormatVersion {
		return fmt.Errorf("%w: format %d, want %d", ErrFormat, s.Format, FormatVersion)
	}
	if s.Version < 1 {
		return fmt.Errorf("%w: version %d must be positive", ErrFormat, s.Version)
	}
	s.Issued = s.Issued.UTC().Truncate(time.Millisecond)
	s.ValidUntil = s.ValidUntil.UTC().Truncate(time.Millisecond)
	if s.Issued.IsZero() || !s.ValidUntil.After(s.Issued) {
		return fmt.Errorf("%w: valid_until %s must be after issued %s", ErrFormat, s.ValidUntil, s.Issued)
	}
	if s.Devices == nil {
		s.Devices = []Device{}
	}
	return normalizeDevices(s.Devices, s.Version)
}

// normalizeDevices puts a device list into canonical form (see
// Snapshot.Normalize) for a snapshot of version.
func normalizeDevices(ds []Device, version int64) error {
	for i := range ds {
		d := &ds[i]
		d.Name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d.Name)), ".")
		if d.Name == "" || strings.ContainsAny(d.Name, " \t\r\n") {
			return fmt.Errorf("%w: device %d: bad name %q", ErrFormat, i, d.Name)
		}
		switch d.Status {
		case Active, Suspended:
		default:
			return fmt.Errorf("%w: device %s: unknown status %q", ErrFormat, d.Name, d.Status)
		}
		if d.MessagesPerHour < 0 || d.RecipientsPerHour < 0 {
			return fmt.Errorf("%w: device %s: negative limit", ErrFormat, d.Name)
		}
		if d.Reinstated < 0 || d.Reinstated > version {
			return fmt.Errorf("%w: device %s: reinstatement epoch %d outside 0..version %d", ErrFormat, d.Name, d.Reinstated, version)
		}
		if len(d.Senders) == 0 {
			d.Senders = nil
			continue
		}
		for j, a := range d.Senders {
			d.Senders[j] = strings.TrimSpace(a)
		}
		slices.Sort(d.Senders)
		d.Senders = slices.Compact(d.Senders)
	}
	slices.SortFunc(ds, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(ds); i++ {
		if ds[i].Name == ds[i-1].Name {
			return fmt.Errorf("%w: device %s listed twice", ErrFormat, ds[i].Name)
		}
	}
	return nil
}

// Compare orders snapshots: by Version, then by Issued (a republished
// snapshot of the same version is newer). It returns -1, 0 or +1.
func Compare(a, b *Snapshot) int {
	if c := cmpInt(a.Version, b.Version); c != 0 {
		return c
	}
	return a.Issued.Compare(b.Issued)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Accept decides whether an edge holding cur (nil: none) should take next:
// nil if next is strictly newer, ErrSame if it has the same version and is
// not newer (a redelivery, or an earlier republish of the same content),
// ErrOlder if its version is lower (a rollback). Only ErrOlder is a
// rejection worth counting.
func Accept(cur, next *Snapshot) error {
	if cur == nil {
		return nil
	}
	switch Compare(next, cur) {
	case 1:
		return nil
	case 0:
		return ErrSame
	}
	if next.Version == cur.Version {
		return ErrSame
	}
	return fmt.Errorf("%w: got version %d issued %s, have version %d issued %s",
		ErrOlder, next.Version, next.Issued.Format(time.RFC3339), cur.Version, cur.Issued.Format(time.RFC3339))
}

// Expired reports whether the snapshot's ValidUntil has passed at now.
func (s *Snapshot) Expired(now time.Time) bool { return !now.Before(s.ValidUntil) }

// Counts returns the number of active and suspended devices.
func (s *Snapshot) Counts() (active, suspended int) {
	for _, d := range s.Devices {
		if d.Status == Active {
			active++
		} else {
			suspended++
		}
	}
	return active, suspended
}
