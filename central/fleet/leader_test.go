package fleet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

var key = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

// switchLeader is a leader decided by the test (the PostgreSQL election
// itself is tested in central/leader).
type switchLeader struct{ atomic.Bool }

func (l *switchLeader) IsLeader(context.Context) bool { return l.Load() }

// startInstance runs one central instance's sync service on st with its
// own broker account id.
func startInstance(t *testing.T, env *brokertest.Env, st *sqlite.Store, id string, l fleet.Leader, group string) (*fleet.Service, func()) {
	t.Helper()
	ad := fleet.Store{S: st}
	svc, err := fleet.New(fleet.Options{
		BrokerURL: env.URL, ClientID: id, Username: id, Password: env.Password(id), Topics: env.Topics, Key: key,
		ValidFor: 24 * time.Hour, RepublishInterval: time.Hour, Leader: l, PollInterval: 100 * time.Millisecond,
		SharedGroup: group,
		Source:      ad, Events: ad, Status: ad, Enrol: ad, Auth: ad, Gate: ad,
		Suspender: &registration.Service{Store: st, EdgeSuspensionsPerHour: registration.DefaultEdgeSuspensionsPerHour},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return svc, stop
}

// retained follows the retained allowlist on the broker.
type retained struct {
	mu  sync.Mutex
	ver int64
}

func (r *retained) version() int64 { r.mu.Lock(); defer r.mu.Unlock(); return r.ver }

// Two instances on one store and one Mosquitto, each with its own
// account: only the leader publishes; a change made through the follower
// is published by the leader's poll; after a hand-over the new leader
// publishes at once and the old one stops; the follower's HTTPS copy
// follows the store throughout; the retained snapshot is never older than
// one the broker held before.
func TestOnlyLeaderPublishes(t *testing.T) {
	env := brokertest.Mosquitto(t)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()

	start := func(id string, l *switchLeader) *fleet.Service {
		svc, _ := startInstance(t, env, st, id, l, "")
		return svc
	}
	la, lb := &switchLeader{}, &switchLeader{}
	la.Store(true)
	a := start(brokertest.CentralID, la)
	b := start("postern-central-2", lb)

	r := &retained{}
	var older atomic.Int64
	// An edge account: it may read the allowlist.
	w := paho.NewClient(paho.NewClientOptions().AddBroker(env.URL).SetClientID("watcher").
		SetUsername("watcher").SetPassword(env.Password("watcher")).SetCleanSession(true))
	if tok := w.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher connect: %v", tok.Error())
	}
	defer w.Disconnect(100)
	w.Subscribe(env.Topics.Allowlist(), 1, func(_ paho.Client, m paho.Message) {
		snap, err := allowlist.Decode(m.Payload(), key.Public().(ed25519.PublicKey))
		if err != nil {
			t.Errorf("retained snapshot: %v", err)
			return
		}
		r.mu.Lock()
		if snap.Version < r.ver {
			older.Add(1)
		}
		r.ver = snap.Version
		r.mu.Unlock()
	}).Wait()

	storeVer := func() int64 {
		v, err := st.AllowlistVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	change := func(name string) int64 {
		t.Helper()
		d := store.Device{Name: name, IPs: []string{"10.1.2.3"}, Owner: "Ada", ContactEmail: "ada@example.edu",
			MessagesPerHour: 10, RecipientsPerHour: 10, OwnerKeyHash: "k-" + name, Senders: []store.Sender{{Address: "scan@example.edu"}}}
		if err := st.CreateDevice(ctx, d, "owner"); err != nil {
			t.Fatal(err)
		}
		if err := st.ApproveDevice(ctx, name, "staff", "", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		return storeVer()
	}
	httpsVer := func(s *fleet.Service) int64 { _, _, v := s.Current(); return v }

	testkit.WaitFor(t, 5*time.Second, "leader's first snapshot retained", func() bool { return r.version() == storeVer() })
	v0 := storeVer()

	// A change made through the follower (its Changed), published by the
	// leader's poll.
	v1 := change("one.example.edu")
	if v1 <= v0 {
		t.Fatalf("approval left the version at %d", v1)
	}
	b.Changed()
	testkit.WaitFor(t, 5*time.Second, "change via follower retained", func() bool { return r.version() == v1 })
	testkit.WaitFor(t, 5*time.Second, "follower's HTTPS copy current", func() bool { return httpsVer(b) == v1 })
	if n := b.Stats().Published; n != 0 {
		t.Fatalf("follower published %d snapshots", n)
	}

	// Hand-over: b leads, a follows.
	la.Store(false)
	lb.Store(true)
	testkit.WaitFor(t, 5*time.Second, "new leader publishes on takeover", func() bool { return b.Stats().Published > 0 })
	aPub := a.Stats().Published
	v2 := change("two.example.edu")
	a.Changed()
	testkit.WaitFor(t, 5*time.Second, "change after hand-over retained", func() bool { return r.version() == v2 })
	testkit.WaitFor(t, 5*time.Second, "old leader's HTTPS copy current", func() bool { return httpsVer(a) == v2 })
	if n := a.Stats().Published; n != aPub {
		t.Fatalf("old leader published %d more snapshots after losing leadership", n-aPub)
	}
	if n := older.Load(); n != 0 {
		t.Fatalf("%d times the retained snapshot went back to an older version", n)
	}
}

// Two instances in one shared-subscription group on Mosquitto: each event
// an edge publishes reaches exactly one instance (the load splits) and is
// stored once. One instance first ran with a plain subscription in its
// persistent session; it must not go on receiving every event.
func TestSharedSubscriptionSplitsEvents(t *testing.T) {
	env := brokertest.Mosquitto(t)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := t.Context()
	const edge = "edge-a"
	if err := st.CreateEdge(ctx, store.Edge{ID: edge, Name: edge}); err != nil {
		t.Fatal(err)
	}
	hash := fleet.HashToken("tok")
	if err := st.SetEdgeEnrolment(ctx, edge, hash, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RedeemEnrolment(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if err := st.SetEdgeCredentials(ctx, edge, edge, "unused"); err != nil {
		t.Fatal(err)
	}

	// A plain subscription left in a's persistent session.
	first, stopFirst := startInstance(t, env, st, brokertest.CentralID, &switchLeader{}, "")
	testkit.WaitFor(t, 5*time.Second, "plain instance subscribed", first.Connected)
	stopFirst()
	lead := &switchLeader{}
	lead.Store(true)
	b, _ := startInstance(t, env, st, "postern-central-2", lead, "postern-central")
	a, _ := startInstance(t, env, st, brokertest.CentralID, &switchLeader{}, "postern-central") // resumes first's session
	testkit.WaitFor(t, 5*time.Second, "b publishes", func() bool { return b.Stats().Published > 0 })

	ed := paho.NewClient(paho.NewClientOptions().AddBroker(env.URL).SetClientID(edge).
		SetUsername(edge).SetPassword(env.Password(edge)).SetCleanSession(true))
	if tok := ed.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("edge connect: %v", tok.Error())
	}
	defer ed.Disconnect(100)
	testkit.WaitFor(t, 5*time.Second, "both instances subscribed", func() bool { return a.Connected() && b.Connected() })
	const n = 40
	for i := range n {
		e := event.Event{ID: event.NewID(), Edge: edge, Kind: event.Delivery, Time: time.Now(), QueueID: fmt.Sprintf("Q%d", i)}
		wire, err := event.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if tok := ed.Publish(env.Topics.Events(edge), 1, false, wire); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish event: %v", tok.Error())
		}
	}
	total := func() int64 { return a.Stats().Events + b.Stats().Events + first.Stats().Events }
	testkit.WaitFor(t, 10*time.Second, "all events consumed", func() bool { return total() >= n })
	time.Sleep(300 * time.Millisecond) // any second copy would arrive now
	sa, sb, sf := a.Stats(), b.Stats(), first.Stats()
	if got := total(); got != n || sa.Duplicates+sb.Duplicates+sf.Duplicates != 0 {
		t.Fatalf("%d events handled, %d+%d+%d duplicates; want each of %d once", got, sa.Duplicates, sb.Duplicates, sf.Duplicates, n)
	}
	if sa.Events == 0 || sb.Events == 0 {
		t.Errorf("events not split: instance a %d, b %d", sa.Events, sb.Events)
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{Kind: event.Delivery})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n {
		t.Errorf("%d events stored, want %d", len(evs), n)
	}
}
