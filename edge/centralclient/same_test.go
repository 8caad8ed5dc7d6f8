package centralclient

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/shared/allowlist"
)

// TestEqualSnapshotIgnoredSilently: the same snapshot again, or an earlier
// republish of the same version, is ignored without a log line and
// without counting a rejection; only a lower version counts as
// snapshots_rejected_older.
func TestEqualSnapshotIgnoredSilently(t *testing.T) {
	var logs bytes.Buffer
	e := openEdge(t, brokertest.Embedded(t), "edge-1", t.TempDir(), func(o *Options) {
		o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	defer e.close()
	t0 := time.Now().Truncate(time.Millisecond)
	d := dev("a.example.edu", allowlist.Active)
	cur := snapshot(t, centralPriv, 5, t0, d)
	if err := e.c.HandleSnapshot(cur, "mqtt"); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	for _, wire := range [][]byte{
		cur,
		snapshot(t, centralPriv, 5, t0, d), // same content re-encoded
		snapshot(t, centralPriv, 5, t0.Add(-time.Millisecond), d),    // earlier republish, arriving late
		snapshot(t, centralPriv, 5, t0.Add(-10*time.Millisecond), d), // over HTTPS after a newer MQTT one
	} {
		if err := e.c.HandleSnapshot(wire, "mqtt"); !errors.Is(err, allowlist.ErrSame) {
			t.Fatalf("equal snapshot: %v, want ErrSame", err)
		}
	}
	if strings.Contains(logs.String(), "rejected") || strings.Contains(logs.String(), "older") {
		t.Fatalf("equal snapshots were logged:\n%s", logs.String())
	}
	c := e.c.Counters()
	if c["snapshots_rejected_older"] != 0 || c["snapshots_rejected"] != 0 || c["snapshots_applied"] != 1 {
		t.Fatalf("counters after equal snapshots: %v", c)
	}
	// A real rollback is rejected, logged and counted.
	if err := e.c.HandleSnapshot(snapshot(t, centralPriv, 4, t0.Add(time.Hour), d), "mqtt"); !errors.Is(err, allowlist.ErrOlder) {
		t.Fatalf("lower version: %v", err)
	}
	if c := e.c.Counters(); c["snapshots_rejected_older"] != 1 {
		t.Fatalf("rollback not counted: %v", c)
	}
	if !strings.Contains(logs.String(), "reason=older") {
		t.Fatalf("rollback not logged:\n%s", logs.String())
	}
	// A later republish of the same version is applied (valid_until moves).
	if err := e.c.HandleSnapshot(snapshot(t, centralPriv, 5, t0.Add(time.Minute), d), "mqtt"); err != nil {
		t.Fatal(err)
	}
}
