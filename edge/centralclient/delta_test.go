package centralclient

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
)

// chainFixture is a history of three versions: v1 {a, b}, v2 adds c,
// v3 suspends b; with the full snapshots and the deltas between them.
type chainFixture struct {
	snaps  map[int64]allowlist.Snapshot
	full   map[int64][]byte
	deltas map[[2]int64][]byte
}

func newChain(t *testing.T) chainFixture {
	t.Helper()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	f := chainFixture{snaps: map[int64]allowlist.Snapshot{}, full: map[int64][]byte{}, deltas: map[[2]int64][]byte{}}
	devs := []allowlist.Device{dev("a.example.edu", allowlist.Active), dev("b.example.edu", allowlist.Active)}
	for v := int64(1); v <= 3; v++ {
		switch v {
		case 2:
			devs = append(devs, dev("c.example.edu", allowlist.Active))
		case 3:
			devs[1].Status, devs[1].Reason = allowlist.Suspended, "abuse"
		}
		s := allowlist.Snapshot{Version: v, Issued: t0.Add(time.Duration(v) * time.Minute), ValidUntil: t0.Add(24 * time.Hour), Devices: append([]allowlist.Device(nil), devs...)}
		if err := s.Normalize(); err != nil {
			t.Fatal(err)
		}
		f.snaps[v] = s
		f.full[v] = snapshot(t, centralPriv, v, s.Issued, s.Devices...)
	}
	for _, p := range [][2]int64{{1, 2}, {2, 3}, {1, 3}, {3, 3}} {
		next := f.snaps[p[1]]
		if p[0] == p[1] {
			next.Issued = next.Issued.Add(time.Minute)
		}
		d, err := allowlist.NewDelta(p[0], f.snaps[p[0]].Devices, next)
		if err != nil {
			t.Fatal(err)
		}
		if f.deltas[p], err = allowlist.EncodeDelta(d, centralPriv); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// offlineEdge is a sync client that is never connected (HandleSnapshot
// and HandleDelta are called directly) on a real spool and device table.
func offlineEdge(t *testing.T, sp *spool.Spool) (*Client, *devices.Table) {
	t.Helper()
	reg, err := devices.New(nil, sp.KV("susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := NewOutbox(sp.KV("outbox/"), "edge-a", 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{EdgeID: "edge-a", PublicKey: centralPub, Allow: sp.KV("allow/"), Outbox: ob, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func holds(t *testing.T, c *Client, reg *devices.Table, want allowlist.Snapshot) {
	t.Helper()
	cur := c.Current()
	if cur == nil || cur.Version != want.Version {
		t.Fatalf("edge holds %+v, want version %d", cur, want.Version)
	}
	h := allowlist.NewHasher()
	for _, d := range reg.CentralDevices() {
		a := toAllowlist(d)
		h.Add(&a)
	}
	if allowlist.HashString(h.Sum()) != allowlist.HashString(allowlist.ContentHash(want.Devices)) {
		t.Fatalf("edge's device list differs from version %d", want.Version)
	}
}

// TestDeltaOutOfOrder: deltas arriving late, early or twice never leave
// the edge with a list central did not sign for its version, and the
// state survives a restart (snapshot plus persisted deltas, verified
// again).
func TestDeltaOutOfOrder(t *testing.T) {
	f := newChain(t)
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(t.TempDir(), "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, reg := offlineEdge(t, sp)
	if err := c.HandleDelta(f.deltas[[2]int64{1, 2}], "mqtt"); !errors.Is(err, allowlist.ErrDeltaBase) {
		t.Fatalf("delta without a snapshot: %v", err)
	}
	if err := c.HandleSnapshot(f.full[1], "mqtt"); err != nil {
		t.Fatal(err)
	}
	// v2->v3 before v1->v2: a gap, nothing applied.
	if err := c.HandleDelta(f.deltas[[2]int64{2, 3}], "mqtt"); !errors.Is(err, allowlist.ErrDeltaBase) {
		t.Fatalf("early delta: %v", err)
	}
	holds(t, c, reg, f.snaps[1])
	if err := c.HandleDelta(f.deltas[[2]int64{1, 2}], "mqtt"); err != nil {
		t.Fatal(err)
	}
	holds(t, c, reg, f.snaps[2])
	if err := c.HandleDelta(f.deltas[[2]int64{1, 2}], "mqtt"); !errors.Is(err, allowlist.ErrSame) {
		t.Fatalf("delta twice: %v", err)
	}
	if err := c.HandleDelta(f.deltas[[2]int64{2, 3}], "mqtt"); err != nil {
		t.Fatal(err)
	}
	holds(t, c, reg, f.snaps[3])
	if reg.Version() != 3 {
		t.Fatalf("device table at version %d", reg.Version())
	}
	if d, _ := reg.Lookup("b.example.edu"); d.Status != devices.StatusSuspended {
		t.Fatalf("b is %s after the delta that suspends it", d.Status)
	}
	// The coalesced delta v1->v3 arriving late is older than nothing: the
	// version is held already.
	if err := c.HandleDelta(f.deltas[[2]int64{1, 3}], "mqtt"); !errors.Is(err, allowlist.ErrSame) {
		t.Fatalf("late coalesced delta: %v", err)
	}
	// A republish moves validity on without changing the list.
	if err := c.HandleDelta(f.deltas[[2]int64{3, 3}], "mqtt"); err != nil {
		t.Fatal(err)
	}
	holds(t, c, reg, f.snaps[3])
	if !c.Current().Issued.After(f.snaps[3].Issued) {
		t.Fatal("republish delta did not move issued on")
	}
	// The full snapshot of an older version after all that is a rollback.
	if err := c.HandleSnapshot(f.full[2], "mqtt"); !errors.Is(err, allowlist.ErrOlder) {
		t.Fatalf("older full snapshot: %v", err)
	}

	// Restart on the same spool: snapshot v1 plus two deltas and the
	// republish, verified and applied again.
	c2, reg2 := offlineEdge(t, sp)
	holds(t, c2, reg2, f.snaps[3])
	if !c2.Current().Issued.Equal(c.Current().Issued) {
		t.Fatal("restart lost the republished validity")
	}
	// A full snapshot replaces the chain.
	if err := c2.HandleSnapshot(snapshot(t, centralPriv, 4, time.Now(), f.snaps[3].Devices...), "https"); err != nil {
		t.Fatal(err)
	}
	if len(c2.chain) != 0 {
		t.Fatalf("%d deltas kept after a full snapshot", len(c2.chain))
	}
	c3, reg3 := offlineEdge(t, sp)
	if c3.Current().Version != 4 || reg3.Version() != 4 {
		t.Fatalf("after restart version %d", c3.Current().Version)
	}
}

// TestDeltaCoalesced: one delta covering several versions applies on its
// base.
func TestDeltaCoalesced(t *testing.T) {
	f := newChain(t)
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(t.TempDir(), "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, reg := offlineEdge(t, sp)
	if err := c.HandleSnapshot(f.full[1], "mqtt"); err != nil {
		t.Fatal(err)
	}
	if err := c.HandleDelta(f.deltas[[2]int64{1, 3}], "mqtt"); err != nil {
		t.Fatal(err)
	}
	holds(t, c, reg, f.snaps[3])
	if err := c.HandleDelta(f.deltas[[2]int64{2, 3}], "mqtt"); !errors.Is(err, allowlist.ErrSame) {
		t.Fatalf("delta to the version held: %v", err)
	}
}
