package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/postern/postern/shared/topic"
)

// EdgeGate says whether an edge may be heard at all and records what was
// refused (fleet.Store implements it).
type EdgeGate interface {
	// EdgeActive is false for an unknown or revoked edge.
	EdgeActive(ctx context.Context, id string) (bool, error)
	// NoteEdgeOverLimit adds n refused events to the edge's count.
	NoteEdgeOverLimit(ctx context.Context, id string, n int64, reason string) error
}

// Defaults of the per-edge caps.
const (
	DefaultMaxEventsPerMinute = 600
	DefaultMaxEventBytes      = 16 << 10
)

var (
	errRevoked  = errors.New("edge unknown or revoked")
	errTooLarge = errors.New("event larger than edges.max_event_bytes")
	errTooMany  = errors.New("edge over edges.max_events_per_minute")
)

// gate holds the per-edge rate windows and the refusals not yet written.
type gate struct {
	mu     sync.Mutex
	edges  map[string]*edgeWindow
	active map[string]activeEntry
}

type edgeWindow struct {
	start   time.Time
	n       int
	pending int64 // refusals not yet recorded in the store
	noted   time.Time
	reason  string
}

// activeFor is how long an edge's revocation state is cached: a status
// heartbeat from every edge every few seconds must not cost a store read
// each. Revocation drops the embedded broker session at once; events of a
// revoked edge are refused at the latest this much later.
const activeFor = 5 * time.Second

type activeEntry struct {
	ok bool
	at time.Time
}

// edgeActive is Gate.EdgeActive behind the activeFor cache.
func (s *Service) edgeActive(ctx context.Context, edge string) (bool, error) {
	now := s.clock.Now()
	s.gate.mu.Lock()
	if e, hit := s.gate.active[edge]; hit && now.Sub(e.at) < activeFor {
		s.gate.mu.Unlock()
		return e.ok, nil
	}
	s.gate.mu.Unlock()
	ok, err := s.o.Gate.EdgeActive(ctx, edge)
	if err != nil {
		return false, err
	}
	s.gate.mu.Lock()
	if s.gate.active == nil {
		s.gate.active = map[string]activeEntry{}
	}
	s.gate.active[edge] = activeEntry{ok: ok, at: now}
	s.gate.mu.Unlock()
	return ok, nil
}

// forgetEdge drops the cached state of edge (after revoking it here).
func (s *Service) forgetEdge(edge string) {
	s.gate.mu.Lock()
	delete(s.gate.active, edge)
	s.gate.mu.Unlock()
}

// EdgeRevoked makes this instance refuse edge's messages at once.
func (s *Service) EdgeRevoked(edge string) { s.forgetEdge(edge) }

// noteEvery bounds how often refusals of one edge are written to the
// store and logged: a flooding edge must not flood the store instead.
const noteEvery = 10 * time.Second

// admit decides whether a message from edge is heard. Events beyond the
// caps, and anything from a revoked edge, are refused: logged, counted and
// recorded on the edge (throttled), and acknowledged so the broker does
// not deliver them again.
func (s *Service) admit(ctx context.Context, edge, kind string, payload []byte) error {
	if s.o.Gate != nil {
		ok, err := s.edgeActive(ctx, edge)
		if err != nil {
			return err
		}
		if !ok {
			s.refused.Add(1)
			s.log.Warn("message from an unknown or revoked edge refused", "edge", edge, "kind", kind)
			return errRevoked
		}
	}
	if kind != topic.KindEvents {
		return nil
	}
	var why error
	if len(payload) > s.o.MaxEventBytes {
		why = fmt.Errorf("%w (%d bytes)", errTooLarge, len(payload))
	}
	now := s.clock.Now()
	s.gate.mu.Lock()
	if s.gate.edges == nil {
		s.gate.edges = map[string]*edgeWindow{}
	}
	w := s.gate.edges[edge]
	if w == nil {
		w = &edgeWindow{start: now}
		s.gate.edges[edge] = w
	}
	if now.Sub(w.start) >= time.Minute {
		w.start, w.n = now, 0
	}
	if why == nil {
		w.n++
		if w.n > s.o.MaxEventsPerMinute {
			why = errTooMany
		}
	}
	var flush int64
	var reason string
	if why != nil {
		w.pending++
		w.reason = why.Error()
		if now.Sub(w.noted) >= noteEvery {
			flush, reason, w.pending, w.noted = w.pending, w.reason, 0, now
		}
	}
	s.gate.mu.Unlock()
	if why == nil {
		return nil
	}
	s.refused.Add(1)
	if flush > 0 {
		s.log.Warn("events from edge refused", "edge", edge, "refused", flush, "why", reason)
		if s.o.Gate != nil {
			if err := s.o.Gate.NoteEdgeOverLimit(ctx, edge, flush, reason); err != nil {
				s.log.Error("recording refused events failed", "edge", edge, "err", err)
			}
		}
	}
	return why
}
