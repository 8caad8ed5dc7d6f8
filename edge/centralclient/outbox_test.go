package centralclient

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/event"
)

func TestOutboxBoundAndOrder(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(t.TempDir(), "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Millisecond); return now }
	o, err := NewOutbox(sp.KV("outbox/"), "e1", 3, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		o.Emit(event.Event{Kind: event.Refusal, Count: i})
	}
	if o.Len() != 3 || o.Dropped() != 2 {
		t.Fatalf("len %d dropped %d, want 3 and 2", o.Len(), o.Dropped())
	}
	o.Emit(event.Event{}) // no kind: invalid, dropped
	if o.Dropped() != 3 {
		t.Fatalf("invalid event not dropped")
	}
	b, err := o.batch(10)
	if err != nil || len(b) != 3 {
		t.Fatalf("batch: %d %v", len(b), err)
	}
	for i, p := range b {
		e, err := event.Unmarshal(p.val)
		if err != nil || e.Count != i || e.Edge != "e1" || e.ID == "" {
			t.Fatalf("event %d: %+v %v", i, e, err)
		}
	}
	if err := o.ack(b[0].key); err != nil || o.Len() != 2 {
		t.Fatalf("ack: %v len %d", err, o.Len())
	}
	// Reopening counts what is stored.
	o2, err := NewOutbox(sp.KV("outbox/"), "e1", 0, nil, nil)
	if err != nil || o2.Len() != 2 {
		t.Fatalf("reopen: len %d %v", o2.Len(), err)
	}
}

// TestOutboxReceipts: a sent event stays until central's receipt names
// it, is due again after resendAfter or a reconnect, and a suspension
// report is kept even when the outbox is full.
func TestOutboxReceipts(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(t.TempDir(), "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	o, err := NewOutbox(sp.KV("outbox/"), "e1", 2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Emit(event.Event{Kind: event.Refusal})
	o.Emit(event.Event{Kind: event.Refusal})
	o.Emit(event.Event{Kind: event.Refusal}) // full: dropped
	o.Emit(event.Event{Kind: event.NDRUndeliverable, Device: "d.example.edu"})
	if o.Len() != 3 || o.Dropped() != 1 {
		t.Fatalf("len %d dropped %d, want 3 and 1 (the suspension report is kept)", o.Len(), o.Dropped())
	}
	now := time.Now()
	due, _ := o.due(10, now, time.Minute)
	if len(due) != 3 {
		t.Fatalf("%d due", len(due))
	}
	for _, p := range due {
		o.markSent(p.key, now)
	}
	if due, _ := o.due(10, now.Add(time.Second), time.Minute); len(due) != 0 {
		t.Fatalf("%d due right after sending", len(due))
	}
	if due, _ := o.due(10, now.Add(2*time.Minute), time.Minute); len(due) != 3 {
		t.Fatalf("%d due after resendAfter, want 3", len(due))
	}
	n, err := o.Receipt([]string{keyID(due[0].key), "unknown-id"})
	if err != nil || n != 1 || o.Len() != 2 {
		t.Fatalf("receipt: %d %v len %d", n, err, o.Len())
	}
	o.resendAll()
	if due, _ := o.due(10, now, time.Minute); len(due) != 2 {
		t.Fatalf("%d due after a reconnect, want 2", len(due))
	}
}
