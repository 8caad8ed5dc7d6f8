// Package topic names the MQTT topics of the Postern sync contract (see
// docs/CONTRACT.md) and defines the edge status message carried on them.
//
// Every topic lives under one prefix (default "postern/v1"):
//
//	<prefix>/allowlist              signed snapshot, retained, QoS 1, central only
//	<prefix>/allowlist/delta        signed delta to the snapshot, retained, QoS 1, central only
//	<prefix>/edges/<id>/events      events of edge <id>, QoS 1, that edge only
//	<prefix>/edges/<id>/status      status of edge <id>, retained, QoS 1, that edge only
//	<prefix>/edges/<id>/receipt     events central stored, retained, QoS 1, central only; edge <id> reads
//
// Edge ids are restricted (see ValidEdgeID) so that an id can never contain
// a topic separator or wildcard: the per-edge ACLs of both brokers rely on it.
package topic

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// DefaultPrefix is the topic prefix when none is configured.
const DefaultPrefix = "postern/v1"

// Kinds of per-edge topics (the last topic level).
const (
	KindEvents = "events"
	KindStatus = "status"
	// KindReceipt is central's receipt topic of an edge (not a topic
	// central consumes: ParseEdge does not accept it).
	KindReceipt = "receipt"
)

// Topics builds the topic names under one prefix.
type Topics struct {
	prefix string
}

// New returns the topics under prefix (surrounding slashes are removed;
// an empty prefix means DefaultPrefix).
func New(prefix string) Topics {
	p := strings.Trim(prefix, "/")
	if p == "" {
		p = DefaultPrefix
	}
	return Topics{prefix: p}
}

// Prefix returns the normalised prefix.
func (t Topics) Prefix() string { return t.prefix }

// Allowlist is the topic of the retained, signed allowlist snapshot.
func (t Topics) Allowlist() string { return t.prefix + "/allowlist" }

// AllowlistDelta is the topic of signed deltas between snapshots. The
// latest is retained, so an edge learns the current version at every
// subscribe from one small message. A subscription to Allowlist does not
// match it: edges that know no deltas never receive them.
func (t Topics) AllowlistDelta() string { return t.prefix + "/allowlist/delta" }

// Events is the topic edge publishes its events on.
func (t Topics) Events(edge string) string { return t.prefix + "/edges/" + edge + "/" + KindEvents }

// Status is the retained status topic of edge.
func (t Topics) Status(edge string) string { return t.prefix + "/edges/" + edge + "/" + KindStatus }

// Receipt is the retained topic on which central tells edge which of its
// events it has stored.
func (t Topics) Receipt(edge string) string { return t.prefix + "/edges/" + edge + "/" + KindReceipt }

// AllEvents is the filter central subscribes to for every edge's events.
func (t Topics) AllEvents() string { return t.prefix + "/edges/+/" + KindEvents }

// AllStatus is the filter central subscribes to for every edge's status.
func (t Topics) AllStatus() string { return t.prefix + "/edges/+/" + KindStatus }

// ParseEdge splits a per-edge topic into edge id and kind (KindEvents or
// KindStatus). ok is false for any other topic, including ones whose edge
// id is not valid.
func (t Topics) ParseEdge(name string) (edge, kind string, ok bool) {
	rest, found := strings.CutPrefix(name, t.prefix+"/edges/")
	if !found {
		return "", "", false
	}
	edge, kind, found = strings.Cut(rest, "/")
	if !found || ValidEdgeID(edge) != nil {
		return "", "", false
	}
	if kind != KindEvents && kind != KindStatus {
		return "", "", false
	}
	return edge, kind, true
}

// MaxEdgeIDLen bounds edge ids.
const MaxEdgeIDLen = 64

// ValidEdgeID reports whether id may be used as an edge id: 1–64 characters
// from a-z, 0-9, '-' and '_', starting with a letter or digit. This keeps
// ids safe as topic levels, MQTT client ids, Mosquitto usernames (the ACL
// patterns substitute %u) and file names.
func ValidEdgeID(id string) error {
	if id == "" || len(id) > MaxEdgeIDLen {
		return fmt.Errorf("edge id %q: must be 1 to %d characters", id, MaxEdgeIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("edge id %q: only a-z, 0-9, '-' and '_' are allowed, starting with a letter or digit", id)
		}
	}
	return nil
}

// Status is the retained message on an edge's status topic. The edge
// publishes it on connect and at every heartbeat; the broker publishes the
// edge's last will (Online false) when the connection is lost.
type Status struct {
	Edge   string    `json:"edge"`
	Online bool      `json:"online"`
	Time   time.Time `json:"time"`
	// Software is the edge's version string.
	Software string `json:"software,omitempty"`
	// AllowlistVersion is the version of the snapshot the edge enforces
	// (0: none yet); AllowlistValidUntil its expiry.
	AllowlistVersion    int64     `json:"allowlist_version"`
	AllowlistValidUntil time.Time `json:"allowlist_valid_until,omitzero"`
	// QueueDepth is the number of messages in the edge's spool.
	QueueDepth int `json:"queue_depth"`
	// Outbox is the number of events not yet acknowledged by the broker.
	Outbox int `json:"outbox"`
	// Counters are monotonic counters since the edge started (for example
	// "snapshots_rejected", "events_sent", "smtp_accepted").
	Counters map[string]int64 `json:"counters,omitempty"`
}

// MarshalStatus encodes s (the wire form).
func MarshalStatus(s Status) ([]byte, error) { return json.Marshal(s) }

// UnmarshalStatus decodes the wire form and checks the edge id.
func UnmarshalStatus(b []byte) (Status, error) {
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	if err := ValidEdgeID(s.Edge); err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	return s, nil
}

// Receipt is central's retained message on an edge's receipt topic: the
// ids of events central stored (or will never store, e.g. oversized) since
// the previous receipt. The edge deletes an event from its outbox only
// when a receipt names it.
type Receipt struct {
	Edge string    `json:"edge"`
	Time time.Time `json:"time"`
	IDs  []string  `json:"ids"`
}

// MarshalReceipt encodes r.
func MarshalReceipt(r Receipt) ([]byte, error) { return json.Marshal(r) }

// UnmarshalReceipt decodes a receipt.
func UnmarshalReceipt(b []byte) (Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("receipt: %w", err)
	}
	return r, nil
}
