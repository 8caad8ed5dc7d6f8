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
