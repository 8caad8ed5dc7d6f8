package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/topic"
)

// StoreBacked is the part of central's store the sync service uses.
type StoreBacked interface {
	AllowlistSnapshot(ctx context.Context) (int64, []store.AllowlistDevice, error)
	AllowlistVersion(ctx context.Context) (int64, error)
	AddEvent(ctx context.Context, e event.Event) (bool, error)
	AddEvents(ctx context.Context, es []event.Event) ([]bool, error)
	RedeemEnrolment(ctx context.Context, tokenHash string) (store.Edge, error)
	SetEdgeCredentials(ctx context.Context, id, username, passwordHash string) error
	EdgeByUsername(ctx context.Context, username string) (store.Edge, error)
	Edge(ctx context.Context, id string) (store.Edge, error)
	UpdateEdgeStatus(ctx context.Context, id string, s store.EdgeStatus) error
	NoteEdgeOverLimit(ctx context.Context, id string, n int64, reason string) error
}

// Store adapts central's store to every interface of this package
// (Source, EventStore, StatusStore, EdgeGate, Enroller, EdgeAuth).
type Store struct {
	S   StoreBacked
	Log *slog.Logger
}

// Allowlist implements Source.
func (a Store) Allowlist(ctx context.Context) (int64, []allowlist.Device, error) {
	v, ds, err := a.S.AllowlistSnapshot(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := make([]allowlist.Device, len(ds))
	for i, d := range ds {
		st := allowlist.Active
		if d.Status != store.Active {
			st = allowlist.Suspended
		}
		out[i] = allowlist.Device{Name: d.Name, Status: st, Senders: d.Senders,
			MessagesPerHour: d.MessagesPerHour, RecipientsPerHour: d.RecipientsPerHour, Reason: d.Reason, Reinstated: d.Reinstated}
	}
	return v, out, nil
}

// AllowlistVersion implements VersionSource.
func (a Store) AllowlistVersion(ctx context.Context) (int64, error) {
	return a.S.AllowlistVersion(ctx)
}

// AddEvent implements EventStore.
func (a Store) AddEvent(ctx context.Context, e event.Event) (bool, error) {
	return a.S.AddEvent(ctx, e)
}

// AddEvents implements BatchEventStore.
func (a Store) AddEvents(ctx context.Context, es []event.Event) ([]bool, error) {
	return a.S.AddEvents(ctx, es)
}

// UpdateEdgeStatus implements StatusStore. A last will (no time) keeps the
// previous last-seen time.
func (a Store) UpdateEdgeStatus(ctx context.Context, s topic.Status) error {
	es := store.EdgeStatus{Online: s.Online, LastSeen: s.Time, AllowlistVersion: s.AllowlistVersion,
		QueueDepth: s.QueueDepth, Outbox: s.Outbox, Software: s.Software, Counters: s.Counters}
	if s.Time.IsZero() || !s.Online {
		prev, err := a.S.Edge(ctx, s.Edge)
		if err != nil {
			return fmt.Errorf("edge %s: %w", s.Edge, err)
		}
		if s.Time.IsZero() {
			es = prev.Status
			es.Online = false
		}
	}
	return a.S.UpdateEdgeStatus(ctx, s.Edge, es)
}

// RedeemEnrolment implements Enroller.
func (a Store) RedeemEnrolment(ctx context.Context, tokenHash string) (string, error) {
	e, err := a.S.RedeemEnrolment(ctx, tokenHash)
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrBadToken
	}
	if err != nil {
		return "", err
	}
	return e.ID, nil
}

// SetEdgeCredentials implements Enroller.
func (a Store) SetEdgeCredentials(ctx context.Context, id, username, hash string) error {
	return a.S.SetEdgeCredentials(ctx, id, username, hash)
}

// EdgePasswordHash implements EdgeAuth (the broker's and the snapshot
// endpoint's credential check).
func (a Store) EdgePasswordHash(ctx context.Context, username string) (string, error) {
	e, err := a.S.EdgeByUsername(ctx, username)
	if err != nil {
		return "", err
	}
	if !e.Enrolled || e.PasswordHash == "" {
		return "", fmt.Errorf("edge %s is not enrolled", username)
	}
	return e.PasswordHash, nil
}

// EdgeActive implements EdgeGate.
func (a Store) EdgeActive(ctx context.Context, id string) (bool, error) {
	e, err := a.S.Edge(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !e.Revoked(), nil
}

// NoteEdgeOverLimit implements EdgeGate.
func (a Store) NoteEdgeOverLimit(ctx context.Context, id string, n int64, reason string) error {
	return a.S.NoteEdgeOverLimit(ctx, id, n, reason)
}
