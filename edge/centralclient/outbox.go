package centralclient

import (
	"errors"
	"fmt"
	"log/slog"
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
// event to Badger (fsynced) and wakes the publisher; the publisher deletes
// an event only after the broker acknowledged it (PUBACK). Events survive
// broker outages and edge restarts; a crash between PUBACK and delete
// re-sends an event, which central de-duplicates by id.
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
	o := &Outbox{kv: kv, edge: edge, clock: clock, log: log, max: max, wake: make(chan struct{}, 1)}
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
	if o.n >= o.max {
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

// batch returns up to n of the oldest stored events.
func (o *Outbox) batch(n int) ([]pending, error) {
	var out []pending
	stop := errors.New("stop")
	err := o.kv.Iterate(func(k string, v []byte) error {
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

// ack removes an acknowledged event.
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
