// Package devices holds the devices an edge relays external mail for: the
// static [[devices]] of the edge configuration merged with the allowlist
// central pushes, plus local suspensions.
//
// Guarantees:
//   - Lookup is lock-free: it reads an immutable snapshot published with an
//     atomic pointer swap, so an SMTP session never sees half an update.
//   - A local suspension (Suspend) is persisted before Suspend returns and
//     is effective for the next Lookup; it survives restarts.
//   - A local suspension holds until staff lift it: it notes the version
//     of central's allowlist in force when it was made (its epoch), and is
//     cleared only when a snapshot carries a reinstatement epoch for the
//     device past that version (staff reinstated it centrally after the
//     suspension). A later snapshot merely listing the device as active
//     does not clear it. A suspension persisted without an epoch (by an
//     earlier version) takes the version of the first snapshot applied
//     after loading it, so it too needs a reinstatement after that. A
//     suspension of a device only configured statically is not cleared
//     by central at all.
//   - Merging: a device named in both the static configuration and central's
//     allowlist takes central's entry (central is the system of record;
//     static devices are for standalone edges).
package devices

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/edge/config"
)

// Device statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
)

// Device sources.
const (
	SourceConfig  = "config"
	SourceCentral = "central"
)

// Device is one registered device, identified by its DNS name.
type Device struct {
	Name    string
	Senders []string
	// Status is StatusActive or StatusSuspended.
	Status string
	// MessagesPerHour and RecipientsPerHour override the policy defaults
	// when above zero.
	MessagesPerHour, RecipientsPerHour int
	// Source is SourceConfig or SourceCentral.
	Source string
	// Reason says why a device is suspended (empty when active).
	Reason string
	// Reinstated is central's reinstatement epoch for the device: the
	// allowlist version at which staff last reinstated it (0: never, and
	// for static devices).
	Reinstated int64
}

// Active reports whether the device may relay.
func (d Device) Active() bool { return d.Status == StatusActive }

// Store persists local suspensions. *spool.Bucket satisfies it; keys are
// device names, values small JSON documents.
type Store interface {
	Set(key string, value []byte) error
	Delete(key string) error
	Iterate(fn func(key string, value []byte) error) error
}

// suspension is the persisted form of a local suspension. Epoch is the
// central allowlist version in force when it was made; nil for a record
// written before epochs existed (see SetCentral).
type suspension struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Epoch  *int64    `json:"epoch,omitempty"`
}

// snapshot is immutable once published. A device is looked up in overlay
// first, then in central: overlay holds the static devices central does
// not list and every device with a local suspension applied, so a
// suspension or a static device never copies central's list.
type snapshot struct {
	central    *packed
	overlay    map[string]Device
	version    int64
	applied    bool // a central allowlist was applied at least once
	validUntil time.Time
}

// Table is safe for concurrent use.
type Table struct {
	clock func() time.Time
	kv    Store

	mu       sync.Mutex // serialises writers
	static   map[string]Device
	central  *packed // central's allowlist (shared with the snapshot)
	version  int64
	issued   time.Time
	until    time.Time
	applied  bool
	suspends map[string]suspension

	snap atomic.Pointer[snapshot]
}

// New builds a device table from the static devices of the configuration and
// loads the local suspensions persisted in kv (which may be nil for a
// table that forgets suspensions at exit, as in tests). clock may be nil
// (time.Now).
func New(static []config.Device, kv Store, clock func() time.Time) (*Table, error) {
	if clock == nil {
		clock = time.Now
	}
	r := &Table{
		clock:    clock,
		kv:       kv,
		static:   map[string]Device{},
		central:  pack(nil),
		suspends: map[string]suspension{},
	}
	for _, d := range static {
		name := Canonical(d.Name)
		if name == "" {
			return nil, errors.New("devices: static device with empty name")
		}
		st := d.Status
		if st == "" {
			st = StatusActive
		}
		r.static[name] = Device{
			Name:              name,
			Senders:           append([]string(nil), d.Senders...),
			Status:            st,
			MessagesPerHour:   d.MessagesPerHour,
			RecipientsPerHour: d.RecipientsPerHour,
			Source:            SourceConfig,
		}
	}
	if kv != nil {
		err := kv.Iterate(func(key string, value []byte) error {
			var s suspension
			if err := json.Unmarshal(value, &s); err != nil {
				return fmt.Errorf("suspension %q: %w", key, err)
			}
			r.suspends[Canonical(key)] = s
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("devices: loading suspensions: %w", err)
		}
	}
	r.publishLocked()
	return r, nil
}

// Canonical is the form device names are compared in: lower case, without
// a trailing dot.
func Canonical(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// Lookup returns the device registered under name (a DNS name as FCrDNS
// confirmed it), with local suspensions applied.
func (r *Table) Lookup(name string) (Device, bool) {
	s := r.snap.Load()
	n := Canonical(name)
	if d, ok := s.overlay[n]; ok {
		return d, true
	}
	return s.central.lookup(n)
}

// Devices returns every known device, sorted by name.
func (r *Table) Devices() []Device {
	s := r.snap.Load()
	out := make([]Device, 0, s.central.len()+len(s.overlay))
	for i := range s.central.len() {
		if _, over := s.overlay[s.central.str(s.central.recs[i].name)]; !over {
			out = append(out, s.central.device(i))
		}
	}
	for _, d := range s.overlay {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CentralDevices returns central's allowlist as last set (SetCentral),
// sorted by name, without static devices or local suspensions: the list an
// allowlist delta applies to.
func (r *Table) CentralDevices() []Device {
	c := r.snap.Load().central
	out := make([]Device, c.len())
	for i := range out {
		out[i] = c.device(i)
	}
	return out
}

// Version is the version of the central allowlist in force (0 if none).
func (r *Table) Version() int64 { return r.snap.Load().version }

// Stale reports whether a central allowlist was applied and its validity
// has run out. Policy then answers external relay from central-registered
// devices with a temporary refusal; affiliated mail still flows and static
// devices are unaffected.
func (r *Table) Stale() bool {
	s := r.snap.Load()
	return s.applied && !s.validUntil.IsZero() && r.clock().After(s.validUntil)
}

// SetCentral replaces central's allowlist atomically. issued is when
// central signed it; validUntil when it stops being trusted (zero = no
// expiry). A local suspension is cleared when the snapshot's
// reinstatement epoch for the device is past the suspension's epoch.
// Callers (centralclient) are responsible for refusing older versions;
// SetCentral ignores a version below the current.
func (r *Table) SetCentral(version int64, issued time.Time, devices []Device, validUntil time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied && version < r.version {
		return
	}
	// Devices without a name are dropped; the rest are packed, normalised
	// on the way (pack copies every string it keeps).
	keep := make([]int32, 0, len(devices))
	for i := range devices {
		if Canonical(devices[i].Name) != "" {
			keep = append(keep, int32(i))
		}
	}
	central := packFunc(len(keep), func(i int) Device {
		d := devices[keep[i]]
		d.Name = Canonical(d.Name)
		if d.Status == "" {
			d.Status = StatusActive
		}
		d.Source = SourceCentral
		return d
	})
	for name, s := range r.suspends {
		i := central.find(name)
		if i < 0 {
			continue
		}
		if s.Epoch == nil {
			// Made before epochs existed: from now on it needs a
			// reinstatement later than this snapshot.
			e := version
			s.Epoch = &e
			r.suspends[name] = s
			r.persistLocked(name, s)
			continue
		}
		if central.recs[i].reinstated > *s.Epoch {
			if r.kv != nil {
				// Best effort: if the delete fails the suspension comes
				// back after a restart, and the same snapshot clears it
				// again, which errs on the safe side.
				_ = r.kv.Delete(name)
			}
			delete(r.suspends, name)
		}
	}
	r.central = central
	r.version = version
	r.issued = issued
	r.until = validUntil
	r.applied = true
	r.publishLocked()
}

// Suspend suspends a device locally, at once and persistently (when an
// NDR to its registered sender was refused for the address). The
// suspension holds until central reinstates the device (see SetCentral).
func (r *Table) Suspend(name, reason string) error {
	name = Canonical(name)
	if name == "" {
		return errors.New("devices: suspend: empty device name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	epoch := r.version
	s := suspension{Reason: reason, At: r.clock(), Epoch: &epoch}
	if r.kv != nil {
		b, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("devices: suspend %s: %w", name, err)
		}
		if err := r.kv.Set(name, b); err != nil {
			return fmt.Errorf("devices: suspend %s: %w", name, err)
		}
	}
	r.suspends[name] = s
	r.publishLocked()
	return nil
}

// persistLocked rewrites a suspension record, best effort: if it fails,
// the record reloads without its epoch and gets one again.
func (r *Table) persistLocked(name string, s suspension) {
	if r.kv == nil {
		return
	}
	if b, err := json.Marshal(s); err == nil {
		_ = r.kv.Set(name, b)
	}
}

// publishLocked builds and publishes a new snapshot. r.mu must be held.
func (r *Table) publishLocked() {
	overlay := make(map[string]Device, len(r.static)+len(r.suspends))
	for n, d := range r.static {
		if r.central.find(n) < 0 { // central wins for the same name
			overlay[n] = d
		}
	}
	for n, s := range r.suspends {
		d, ok := overlay[n]
		if !ok {
			d, ok = r.central.lookup(n)
		}
		if !ok {
			// Suspended but not (or no longer) registered: keep the
			// record so that a later registration does not undo it
			// silently; it is not a device for Lookup.
			continue
		}
		d.Status = StatusSuspended
		d.Reason = s.Reason
		overlay[n] = d
	}
	r.snap.Store(&snapshot{
		central:    r.central,
		overlay:    overlay,
		version:    r.version,
		applied:    r.applied,
		validUntil: r.until,
	})
}
