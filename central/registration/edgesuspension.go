package registration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/central/store"
)

// Defaults of the limits on an edge's word.
const (
	DefaultEdgeSuspensionsPerHour = 3
	DefaultRelayWindow            = 7 * 24 * time.Hour
)

// EdgeReport is an edge's report that NDRs to a device's sender are
// undeliverable (an ndr-undeliverable event).
type EdgeReport struct {
	Edge    string
	Device  string
	Sender  string
	QueueID string
	EventID string
}

// SuspendByEdge decides what an edge's report does. The device is
// suspended at once only if this edge reported traffic for it within
// RelayWindow and has suspended fewer than EdgeSuspensionsPerHour devices
// in the last hour; otherwise the report becomes a suspension request for
// staff, who get a banner in the console and a mail (StaffNotify). One
// edge, compromised or confused, can thus take down at most a few devices
// it really served, never the fleet.
func (s *Service) SuspendByEdge(ctx context.Context, r EdgeReport) (store.EdgeSuspensionResult, error) {
	target := r.Sender
	if target == "" {
		target = "its sender"
	}
	reason := fmt.Sprintf("suspended by edge %s: NDR to %s undeliverable", r.Edge, target)
	now := s.now()
	window := s.RelayWindow
	if window <= 0 {
		window = DefaultRelayWindow
	}
	res, err := s.Store.SuspendByEdge(ctx, store.EdgeSuspension{
		Edge: r.Edge, Device: r.Device, Reason: reason, EventID: r.EventID,
		RelayedSince: now.Add(-window), CapSince: now.Add(-time.Hour), Cap: s.EdgeSuspensionsPerHour,
	})
	if err != nil {
		return res, err
	}
	switch res.Outcome {
	case store.EdgeSuspended:
		s.log().Warn("device suspended", "device", r.Device, "edge", r.Edge, "reason", reason, "queue_id", r.QueueID, "allowlist_version", res.Version)
		s.changed()
		s.noticeChange(ctx, r.Device)
	case store.EdgeRequested:
		s.log().Warn("suspension by edge held for staff", "device", r.Device, "edge", r.Edge, "why", res.Request.Why,
			"request", res.Request.ID, "new", res.New, "queue_id", r.QueueID)
		if res.New {
			s.notifyStaff(ctx, res.Request)
		}
	default:
		s.log().Info("ndr-undeliverable for a device that is not active; nothing to suspend", "device", r.Device, "edge", r.Edge, "queue_id", r.QueueID)
	}
	return res, nil
}

// EvidenceArrived decides again the open requests that edge's reports
// about device became for lack of traffic, now that the edge reported
// traffic for the device: the report and its evidence can reach central in
// either order (a burst after an outage is handled in parallel). Each is
// decided as SuspendByEdge would have, cap included.
func (s *Service) EvidenceArrived(ctx context.Context, edge, device string) error {
	open, err := s.Store.ListSuspensionRequests(ctx, store.RequestFilter{State: store.RequestOpen, Edge: edge, Device: device})
	if err != nil {
		return fmt.Errorf("open requests of edge %s for %s: %w", edge, device, err)
	}
	for _, q := range open {
		if q.Why != store.WhyNoTraffic || q.EventID == "" {
			continue
		}
		window := s.RelayWindow
		if window <= 0 {
			window = DefaultRelayWindow
		}
		now := s.now()
		res, err := s.Store.SuspendByEdge(ctx, store.EdgeSuspension{
			Edge: edge, Device: q.Device, Reason: q.Reason, EventID: q.EventID,
			RelayedSince: now.Add(-window), CapSince: now.Add(-time.Hour), Cap: s.EdgeSuspensionsPerHour,
		})
		if err != nil {
			return err
		}
		if res.Outcome == store.EdgeSuspended {
			s.log().Warn("device suspended", "device", q.Device, "edge", edge, "reason", q.Reason, "request", q.ID,
				"why", "relay evidence arrived after the report", "allowlist_version", res.Version)
			s.changed()
			s.noticeChange(ctx, q.Device)
		}
	}
	return nil
}

func (s *Service) notifyStaff(ctx context.Context, q store.SuspensionRequest) {
	if s.Mail == nil || len(s.StaffNotify) == 0 {
		return
	}
	link := strings.TrimRight(s.BaseURL, "/") + "/staff/requests"
	body := fmt.Sprintf(`Edge %s asked central to suspend the device %s:

  %s

Central did not suspend it by itself because %s.
Confirm or dismiss the request in the console:

  %s
`, q.Edge, q.Device, q.Reason, q.Why, link)
	for _, to := range s.StaffNotify {
		if err := s.Mail.Send(ctx, to, "Suspension request for "+q.Device+" from edge "+q.Edge, body); err != nil {
			s.log().Warn("staff notice not sent", "to", to, "request", q.ID, "err", err)
		}
	}
}

// ErrBadDecision: a request decision other than confirm or dismiss.
var ErrBadDecision = errors.New("decision must be confirm or dismiss")

// DecideRequest confirms (suspending the device) or dismisses a
// suspension request.
func (s *Service) DecideRequest(ctx context.Context, id int64, decision, actor, note string) (store.SuspensionRequest, error) {
	note = strings.TrimSpace(note)
	if len(note) > 1000 {
		return store.SuspensionRequest{}, fmt.Errorf("request %d: %w", id, ErrReasonTooLong)
	}
	var confirm bool
	switch decision {
	case "confirm":
		confirm = true
	case "dismiss":
	default:
		return store.SuspensionRequest{}, fmt.Errorf("%q: %w", decision, ErrBadDecision)
	}
	q, err := s.Store.DecideSuspensionRequest(ctx, id, confirm, actor, note)
	if err != nil {
		return q, err
	}
	s.log().Info("suspension request "+string(q.State), "request", id, "device", q.Device, "edge", q.Edge, "actor", actor)
	if confirm {
		s.changed()
		s.noticeChange(ctx, q.Device)
	}
	return q, nil
}
