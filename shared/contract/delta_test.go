package contract_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/testkit"
)

// deltaTap is a second central account on the broker (Mosquitto's
// postern-central-2, which may write every topic): it records the deltas
// central publishes and injects others, as an attacker holding broker
// write access would.
type deltaTap struct {
	t   *testing.T
	env *brokertest.Env
	cl  paho.Client
	mu  sync.Mutex
	got map[int64][]byte // by produced version
}

func newDeltaTap(t *testing.T, env *brokertest.Env) *deltaTap {
	const id = "postern-central-2"
	tp := &deltaTap{t: t, env: env, got: map[int64][]byte{}}
	o := paho.NewClientOptions().AddBroker(env.URL).SetClientID(id).SetUsername(id).SetPassword(env.Password(id))
	tp.cl = paho.NewClient(o)
	if tok := tp.cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("tap connect: %v", tok.Error())
	}
	t.Cleanup(func() { tp.cl.Disconnect(100) })
	tok := tp.cl.Subscribe(env.Topics.AllowlistDelta(), 1, func(_ paho.Client, m paho.Message) {
		d, err := allowlist.DecodeDelta(m.Payload(), signKey.Public().(ed25519.PublicKey))
		if err != nil {
			return
		}
		tp.mu.Lock()
		tp.got[d.Version] = bytes.Clone(m.Payload())
		tp.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("tap subscribe: %v", tok.Error())
	}
	return tp
}

func (tp *deltaTap) delta(version int64) []byte {
	tp.t.Helper()
	var w []byte
	testkit.WaitFor(tp.t, 5*time.Second, "central's delta seen", func() bool {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		w = tp.got[version]
		return w != nil
	})
	return w
}

// inject publishes wire as a retained delta.
func (tp *deltaTap) inject(wire []byte) {
	tp.t.Helper()
	if tok := tp.cl.Publish(tp.env.Topics.AllowlistDelta(), 1, true, wire); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		tp.t.Fatalf("inject: %v", tok.Error())
	}
}

// TestDeltaAttacks: a delta signed by another key, a replayed delta, a
// genuinely signed delta for another base and one whose result does not
// match its hash, all injected through Mosquitto onto the delta topic,
// each leave the edge with exactly central's allowlist (version and
// content hash of the store's snapshot); the next real change still
// arrives as a delta.
func TestDeltaAttacks(t *testing.T) {
	env := brokertest.Mosquitto(t)
	st := openStore(t)
	ctx := context.Background()
	const a, b = "a.example.edu", "b.example.edu"
	registerDevice(t, st, a)
	registerDevice(t, st, b)
	must(t, st.ApproveDevice(ctx, a, "staff", "ok", time.Now().Add(time.Hour)))
	tap := newDeltaTap(t, env)
	c := startCentral(t, env, st)
	sp, dir := openSpool(t)
	enrolEdge(t, env, st, "edge-a")
	e := startEdge(t, env, sp, "edge-a", dir)
	testkit.WaitFor(t, 5*time.Second, "edge enforces a", func() bool { return e.status(a) == devices.StatusActive })

	// right waits until the edge holds the store's allowlist exactly.
	right := func(what string) {
		t.Helper()
		v, ds, err := storeAllowlist(ctx, st)
		must(t, err)
		want := allowlist.HashString(allowlist.ContentHash(ds))
		testkit.WaitFor(t, 5*time.Second, what+": edge holds central's allowlist", func() bool {
			cur := e.c.Current()
			return cur != nil && cur.Version == v && edgeHash(e) == want
		})
	}
	counter := func(name string) int64 { return e.c.Counters()[name] }
	waitCounter := func(name string, before int64) {
		t.Helper()
		testkit.WaitFor(t, 5*time.Second, name+" counted", func() bool { return counter(name) > before })
	}

	change := func(f func()) {
		t.Helper()
		f()
		c.svc.Changed()
	}
	change(func() { must(t, st.ApproveDevice(ctx, b, "staff", "ok", time.Now().Add(time.Hour))) })
	testkit.WaitFor(t, 5*time.Second, "b approved", func() bool { return e.status(b) == devices.StatusActive })
	v1 := e.c.Current().Version
	d1 := tap.delta(v1)
	change(func() { must(t, st.SuspendDevice(ctx, b, "staff", "abuse")) })
	testkit.WaitFor(t, 5*time.Second, "b suspended", func() bool { return e.status(b) == devices.StatusSuspended })
	right("after two changes")
	// The first change may still come in full (the edge drops the full
	// subscription taken at its first connect only once it is current).
	if n := counter("deltas_applied"); n < 1 {
		t.Fatalf("%d deltas applied for two changes", n)
	}
	v2 := e.c.Current().Version
	_, cur, err := storeAllowlist(ctx, st)
	must(t, err)
	now := time.Now()
	// reactivate is the content an attacker wants: b active again.
	reactivate := allowlist.Snapshot{Version: v2 + 1, Issued: now, ValidUntil: now.Add(time.Hour), Devices: cloneAL(cur)}
	for i := range reactivate.Devices {
		if reactivate.Devices[i].Name == b {
			reactivate.Devices[i].Status, reactivate.Devices[i].Reason = allowlist.Active, ""
		}
	}

	t.Run("signed by another key", func(t *testing.T) {
		_, otherKey, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
		d, err := allowlist.NewDelta(v2, cur, reactivate)
		must(t, err)
		w, err := allowlist.EncodeDelta(d, otherKey)
		must(t, err)
		before := counter("deltas_rejected_signature")
		tap.inject(w)
		waitCounter("deltas_rejected_signature", before)
		right("forged delta")
	})
	t.Run("replayed", func(t *testing.T) {
		before := counter("deltas_ignored")
		tap.inject(d1)
		waitCounter("deltas_ignored", before)
		right("replayed delta")
	})
	t.Run("for another base", func(t *testing.T) {
		// Genuinely signed, but standing on a version the edge does not
		// hold: the edge takes the full snapshot instead.
		other := reactivate
		other.Version = v2 + 10
		d, err := allowlist.NewDelta(v2+9, cur, other)
		must(t, err)
		w, err := allowlist.EncodeDelta(d, signKey)
		must(t, err)
		before := counter("deltas_gap")
		tap.inject(w)
		waitCounter("deltas_gap", before)
		right("delta for another base")
		if e.status(b) != devices.StatusSuspended {
			t.Fatal("b active after a delta for another base")
		}
	})
	t.Run("wrong result", func(t *testing.T) {
		d, err := allowlist.NewDelta(v2, cur, reactivate)
		must(t, err)
		d.Hash = allowlist.HashString(allowlist.ContentHash(cur)) // not what the change produces
		w, err := allowlist.EncodeDelta(d, signKey)
		must(t, err)
		before := counter("deltas_mismatch")
		tap.inject(w)
		waitCounter("deltas_mismatch", before)
		right("delta with a wrong hash")
	})
	// The edge's state was never wrong; the next real change arrives.
	change(func() { must(t, st.ReinstateDevice(ctx, b, "staff", "ok")) })
	testkit.WaitFor(t, 5*time.Second, "b reinstated", func() bool { return e.status(b) == devices.StatusActive })
	right("after a real change")
	// An edge that starts now, with the attacker's delta retained, ends
	// with central's allowlist too.
	sp2, dir2 := openSpool(t)
	enrolEdge(t, env, st, "edge-b")
	e2 := startEdge(t, env, sp2, "edge-b", dir2)
	testkit.WaitFor(t, 5*time.Second, "new edge enforces b", func() bool { return e2.status(b) == devices.StatusActive })
}

// TestFullOnlyEdge: an edge whose device table cannot take deltas (an
// edge of before deltas) keeps receiving full snapshots.
func TestFullOnlyEdge(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		c := startCentral(t, env, st)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		e := startEdgeWith(t, env, sp, "edge-a", dir, func(r *devices.Table) centralRegistry { return fullOnly{r} })
		testkit.WaitFor(t, 5*time.Second, "first snapshot", func() bool { return e.c.Current() != nil })
		const name = "scan.example.edu"
		registerDevice(t, st, name)
		must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
		c.svc.Changed()
		testkit.WaitFor(t, 5*time.Second, "approval enforced", func() bool { return e.status(name) == devices.StatusActive })
		if n := e.c.Counters()["deltas_applied"]; n != 0 {
			t.Fatalf("a full-only edge applied %d deltas", n)
		}
		if c.svc.Stats().Deltas == 0 {
			t.Fatal("central published no delta")
		}
	})
}

// fullOnly hides the table's CentralDevices, as a device table of before
// deltas.
type fullOnly struct{ t *devices.Table }

func (f fullOnly) SetCentral(v int64, issued time.Time, ds []devices.Device, until time.Time) {
	f.t.SetCentral(v, issued, ds, until)
}

// storeAllowlist is the store's allowlist as central signs it
// (normalized).
func storeAllowlist(ctx context.Context, st *sqlite.Store) (int64, []allowlist.Device, error) {
	v, ds, err := fleet.Store{S: st}.Allowlist(ctx)
	if err != nil {
		return 0, nil, err
	}
	s := allowlist.Snapshot{Version: v, Issued: time.Now(), ValidUntil: time.Now().Add(time.Hour), Devices: ds}
	if err := s.Normalize(); err != nil {
		return 0, nil, err
	}
	return v, s.Devices, nil
}

// edgeHash is the content hash of the central list the edge enforces.
func edgeHash(e *edge) string {
	h := allowlist.NewHasher()
	for _, d := range e.reg.CentralDevices() {
		a := allowlist.Device{Name: d.Name, Status: allowlist.Status(d.Status), Senders: d.Senders, MessagesPerHour: d.MessagesPerHour,
			RecipientsPerHour: d.RecipientsPerHour, Reason: d.Reason, Reinstated: d.Reinstated}
		h.Add(&a)
	}
	return allowlist.HashString(h.Sum())
}

func cloneAL(ds []allowlist.Device) []allowlist.Device {
	out := make([]allowlist.Device, len(ds))
	for i, d := range ds {
		out[i] = d
		out[i].Senders = append([]string(nil), d.Senders...)
	}
	return out
}
