package fleet

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/postern/postern/shared/topic"
)

// Receipts make event delivery end to end: an edge deletes an event from
// its outbox only when central names it in a receipt, which central
// publishes (retained, QoS 1, on the edge's receipt topic) after the
// event is stored. A broker that acknowledged an event and then lost it
// (restart without persistence, crash before autosave) thus loses
// nothing: the edge still holds the event and sends it again.

// receiptInterval is how often pending receipts are published.
const receiptInterval = 200 * time.Millisecond

// maxReceiptIDs bounds one receipt message.
const maxReceiptIDs = 1000

type receipts struct {
	mu      sync.Mutex
	pending map[string][]string // edge -> event ids stored
}

// receipt notes that event id of edge is stored (or never will be).
func (s *Service) receipt(edge, id string) {
	if id == "" {
		return
	}
	s.rcpt.mu.Lock()
	if s.rcpt.pending == nil {
		s.rcpt.pending = map[string][]string{}
	}
	s.rcpt.pending[edge] = append(s.rcpt.pending[edge], id)
	s.rcpt.mu.Unlock()
}

// receiptLoop publishes pending receipts every receiptInterval.
func (s *Service) receiptLoop(ctx context.Context) {
	tick, stop := s.clock.Ticker(receiptInterval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			s.flushReceipts(context.Background())
			return
		case <-tick:
			s.flushReceipts(ctx)
		}
	}
}

// flushReceipts publishes one receipt per edge with pending ids; ids whose
// receipt was not acknowledged stay pending.
func (s *Service) flushReceipts(ctx context.Context) {
	if s.mqtt == nil || !s.mqtt.IsConnectionOpen() || !s.linked.Load() {
		return
	}
	s.rcpt.mu.Lock()
	batch := s.rcpt.pending
	s.rcpt.pending = nil
	s.rcpt.mu.Unlock()
	var failed map[string][]string
	for edge, ids := range batch {
		for len(ids) > 0 {
			n := min(len(ids), maxReceiptIDs)
			if err := s.publishReceipt(ctx, edge, ids[:n]); err != nil {
				s.log.Warn("receipt not published; retrying", "edge", edge, "events", len(ids), "err", err)
				if failed == nil {
					failed = map[string][]string{}
				}
				failed[edge] = ids
				break
			}
			ids = ids[n:]
		}
	}
	if failed != nil {
		s.rcpt.mu.Lock()
		if s.rcpt.pending == nil {
			s.rcpt.pending = map[string][]string{}
		}
		for edge, ids := range failed {
			s.rcpt.pending[edge] = append(ids, s.rcpt.pending[edge]...)
		}
		s.rcpt.mu.Unlock()
	}
}

func (s *Service) publishReceipt(ctx context.Context, edge string, ids []string) error {
	b, err := json.Marshal(topic.Receipt{Edge: edge, Time: s.clock.Now().UTC(), IDs: ids})
	if err != nil {
		return err
	}
	tok := s.mqtt.Publish(s.o.Topics.Receipt(edge), 1, true, b)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errNoPuback
	}
	if err := tok.Error(); err != nil {
		return err
	}
	s.receiptsSent.Add(int64(len(ids)))
	return nil
}
