package centralclient

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/shared/event"
)

// KV is the durable key-value bucket the sync client keeps its state in
// (*spool.Bucket satisfies it). Set and Delete return after fsync.
type KV interface {
	Set(key string, val []byte) error
	Delete(key string) error
	Iterate(fn func(key string, val []byte) error) error
}

// DefaultMaxOutbox bounds the outbox: beyond it new events are dropped
// (and counted) rather than filling the disk the spool needs for mail.
const DefaultMaxOutbox = 100_000

// Outbox is the edge's durable queue of events for central. Emit writes an
// event to Badger (fsynced) and wakes the publisher. The broker's PUBACK
// only marks an event sent: it is deleted when central's receipt names it
// (central stored it), so no broker (restarted without persistence,
// crashed before saving) can lose one. An event sent but not receipted is
// sent again after every reconnect and every ResendAfter. Events survive
// broker outages and edge restarts; central de-duplicates resends by id.
// An ndr-undeliverable event (a suspension) is never dropped for lack of
// room.
type Outbox struct {
	kv    KV
	edge  string
	clock func() time.Time
	log   *slog.Logger
	max   int

	mu      sync.Mutex
	n       int // events stored
	seq     uint32
	wake    chan struct{}
	dropped atomic.Int64
	emitted atomic.Int64
	// sent: events published (PUBACK) and awaiting central's receipt, by
	// event id.
	sent map[string]*sentEvent
}

type sentEvent struct {
	key string
	at  time.Time
}

// NewOutbox opens the outbox in kv (the spool's "outbox/" bucket) for
// edge. max <= 0 means DefaultMaxOutbox; clock nil means time.Now.
func NewOutbox(kv KV, edge string, max int, clock func() time.Time, log *slog.Logger) (*Outbox, error) {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if max <= 0 {
		max = DefaultMaxOutbox
	}
	o := &Outbox{kv: kv, edge: edge, clock: clock, log: log, max: max, wake: make(chan struct{}, 1), sent: map[string]*sentEvent{}}
	if err := kv.Iterate(func(string, []byte) error { o.n++; return nil }); err != nil {
		return nil, fmt.Errorf("outbox: count: %w", err)
	}
	if o.n > 0 {
		o.signal()
	}
	return o, nil
}

// Emit stores e for delivery to central. It fills in ID, Edge and Time
// when empty. It blocks for one (group-committed) fsync, never for the
// network, and never fails the caller: an event that cannot be stored is
// logged and counted as dropped.
func (o *Outbox) Emit(e event.Event) {
	if e.ID == "" {
		e.ID = event.NewID()
	}
	if e.Edge == "" {
		e.Edge = o.edge
	}
	if e.Time.IsZero() {
		e.Time = o.clock()
	}
	e.Time = e.Time.UTC()
	b, err := event.Marshal(e)
	if err == nil {
		err = e.Validate()
	}
	if err != nil {
		o.drop(e, err)
		return
	}
	o.mu.Lock()
	if o.n >= o.max && e.Kind != event.NDRUndeliverable {
		o.mu.Unlock()
		o.drop(e, errors.New("outbox full"))
		return
	}
	o.n++
	o.seq++
	// Keys sort by time of emission, so central sees events in order
	// as far as the network allows.
	key := fmt.Sprintf("%016x-%08x-%s", e.Time.UnixNano(), o.seq, e.ID)
	o.mu.Unlock()
	if err := o.kv.Set(key, b); err != nil {
		o.mu.Lock()
		o.n--
		o.mu.Unlock()
		o.drop(e, err)
		return
	}
	o.emitted.Add(1)
	o.signal()
}

func (o *Outbox) drop(e event.Event, err error) {
	o.dropped.Add(1)
	o.log.Error("event dropped", "event_id", e.ID, "kind", e.Kind, "device", e.Device, "queue_id", e.QueueID, "err", err)
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Len is the number of events waiting for acknowledgement.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

// Dropped is the number of events that could not be stored.
func (o *Outbox) Dropped() int64 { return o.dropped.Load() }

type pending struct {
	key string
	val []byte
}

// batch returns up to n of the oldest stored events that are not awaiting
// a receipt (sent within resendAfter of now). resendAfter 0 returns every
// stored event.
func (o *Outbox) batch(n int) ([]pending, error) { return o.due(n, time.Time{}, 0) }

func (o *Outbox) due(n int, now time.Time, resendAfter time.Duration) ([]pending, error) {
	var out []pending
	stop := errors.New("stop")
	err := o.kv.Iterate(func(k string, v []byte) error {
		if resendAfter > 0 {
			o.mu.Lock()
			se := o.sent[keyID(k)]
			waiting := se != nil && now.Sub(se.at) < resendAfter
			o.mu.Unlock()
			if waiting {
				return nil
			}
		}
		out = append(out, pending{k, v})
		if len(out) >= n {
			return stop
		}
		return nil
	})
	if err != nil && !errors.Is(err, stop) {
		return nil, err
	}
	return out, nil
}

// keyID is the event id in an outbox key (time-seq-id).
func keyID(key string) string {
	if i := strings.LastIndexByte(key, '-'); i >= 0 {
		return key[i+1:]
	}
	return key
}

// markSent records that the broker acknowledged the event under key.
func (o *Outbox) markSent(key string, at time.Time) {
	o.mu.Lock()
	o.sent[keyID(key)] = &sentEvent{key: key, at: at}
	o.mu.Unlock()
}

// resendAll makes every sent, unreceipted event due again (after a
// reconnect: the broker may have lost what it acknowledged).
func (o *Outbox) resendAll() {
	o.mu.Lock()
	for _, se := range o.sent {
		se.at = time.Time{}
	}
	n := len(o.sent)
	o.mu.Unlock()
	if n > 0 {
		o.signal()
	}
}

// Receipt deletes the events central reports stored. Ids the outbox
// does not hold as sent (an older retained receipt, another run's) are
// ignored. It returns how many were deleted.
func (o *Outbox) Receipt(ids []string) (int, error) {
	deleted := 0
	for _, id := range ids {
		o.mu.Lock()
		se := o.sent[id]
		o.mu.Unlock()
		if se == nil {
			continue
		}
		if err := o.ack(se.key); err != nil {
			return deleted, err
		}
		o.mu.Lock()
		delete(o.sent, id)
		o.mu.Unlock()
		deleted++
	}
	return deleted, nil
}

// ack removes an event from the store.
func (o *Outbox) ack(key string) error {
	if err := o.kv.Delete(key); err != nil {
		return err
	}
	o.mu.Lock()
	if o.n > 0 {
		o.n--
	}
	o.mu.Unlock()
	return nil
}
