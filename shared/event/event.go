// Package event defines the events edges report to central (part of the
// sync contract, see docs/CONTRACT.md). Events carry who, what and why —
// never message bodies. Each has a unique ID so central can de-duplicate
// redeliveries (MQTT QoS 1 is at-least-once).
package event

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Kind says what happened.
type Kind string

const (
	// NDR: the edge generated a non-delivery report to a device's sender.
	NDR Kind = "ndr"
	// NDRUndeliverable: an NDR to the device's sender could not be
	// delivered; the edge suspended the device locally. Central suspends it
	// everywhere.
	NDRUndeliverable Kind = "ndr-undeliverable"
	// NDRWarning: an NDR to a device's registered sender could not be
	// delivered, for a reason that does not show the address is gone
	// (expiry, size or policy refusal); the device stays active.
	NDRWarning Kind = "ndr-warning"
	// ReportDropped: the edge did not send an NDR or delay notice because
	// its sender is outside the affiliated domains and the message did not
	// come from a registered device using one of its registered senders.
	ReportDropped Kind = "report-dropped"
	// RateLimit: a device (or unregistered client) hit its hourly limit.
	RateLimit Kind = "rate-limit"
	// Refusal: a summary of why a client's mail was refused (FCrDNS
	// mismatch, sender not registered, suspended …), so owners can fix it.
	Refusal Kind = "refusal"
	// Delivery: a periodic per-device delivery summary.
	Delivery Kind = "delivery"
	// TLS: the TLS version and cipher a device used at intake.
	TLS Kind = "tls"
)

// Event is one report from an edge.
type Event struct {
	ID        string    `json:"id"`
	Edge      string    `json:"edge"`
	Time      time.Time `json:"time"`
	Kind      Kind      `json:"kind"`
	Device    string    `json:"device,omitempty"`    // registered DNS name, if known
	ClientIP  string    `json:"client_ip,omitempty"` // the connecting IP
	Sender    string    `json:"sender,omitempty"`
	Recipient string    `json:"recipient,omitempty"`
	QueueID   string    `json:"queue_id,omitempty"`
	Reason    string    `json:"reason,omitempty"` // human-readable why
	// Count aggregates repeated refusals/limit hits in one event.
	Count int `json:"count,omitempty"`
	// Detail holds kind-specific small values (e.g. "tls_version",
	// "cipher", "status": "5.1.1", "delivered": "12").
	Detail map[string]string `json:"detail,omitempty"`
}

// NewID returns a random 128-bit event id in hex.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("event: crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Validate checks the fields central relies on.
func (e *Event) Validate() error {
	switch {
	case e.ID == "" || len(e.ID) > 64:
		return fmt.Errorf("event: bad id %q", e.ID)
	case e.Edge == "":
		return fmt.Errorf("event %s: no edge", e.ID)
	case e.Kind == "":
		return fmt.Errorf("event %s: no kind", e.ID)
	case e.Time.IsZero():
		return fmt.Errorf("event %s: no time", e.ID)
	}
	return nil
}

// Marshal encodes e as JSON (the wire form).
func Marshal(e Event) ([]byte, error) { return json.Marshal(e) }

// Unmarshal decodes and validates the wire form.
func Unmarshal(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("event: %w", err)
	}
	return e, e.Validate()
}
