package contract_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/enroll"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

var signKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))

// central is the real sync service on a real SQLite store.
type central struct {
	st     *sqlite.Store
	svc    *fleet.Service
	cancel context.CancelFunc
	done   chan struct{}
}

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "central.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func startCentral(t testing.TB, env *brokertest.Env, st *sqlite.Store) *central {
	t.Helper()
	reg := &registration.Service{Store: st, EdgeSuspensionsPerHour: registration.DefaultEdgeSuspensionsPerHour}
	return startCentralWith(t, env, st, reg)
}

func startCentralWith(t testing.TB, env *brokertest.Env, st *sqlite.Store, reg *registration.Service, opts ...func(*fleet.Options)) *central {
	t.Helper()
	ad := fleet.Store{S: st}
	o := fleet.Options{
		BrokerURL: env.URL, ClientID: brokertest.CentralID, Topics: env.Topics, Key: signKey,
		ValidFor: 24 * time.Hour, RepublishInterval: time.Hour,
		Source: ad, Events: ad, Status: ad, Enrol: ad, Auth: ad, Suspender: reg, Gate: ad,
		Edge: fleet.EdgeSettings{MQTTURL: env.URL, HeartbeatInterval: time.Second},
	}
	for _, f := range opts {
		f(&o)
	}
	if env.ForcesClientID { // Mosquitto
		o.Username, o.Password = brokertest.CentralID, env.Password(brokertest.CentralID)
	} else {
		o.Dial = env.Dial
	}
	svc, err := fleet.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &central{st: st, svc: svc, cancel: cancel, done: make(chan struct{})}
	reg.Changed = svc.Changed
	go func() { defer close(c.done); _ = svc.Run(ctx) }()
	t.Cleanup(c.stop)
	testkit.WaitFor(t, 5*time.Second, "first snapshot published", func() bool { return svc.Stats().Published > 0 })
	return c
}

func (c *central) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
		c.cancel = nil
	}
}

// enrolEdge creates an edge in the store with its broker credentials.
func enrolEdge(t testing.TB, env *brokertest.Env, st *sqlite.Store, id string) {
	t.Helper()
	enrolEdgeWith(t, st, id, brokerHash(env.Password(id)))
}

// enrolEdgeWith creates an enrolled edge with the given password hash.
func enrolEdgeWith(t testing.TB, st *sqlite.Store, id, passwordHash string) {
	t.Helper()
	ctx := context.Background()
	must(t, st.CreateEdge(ctx, store.Edge{ID: id, Name: id}))
	tok, hash := "tok-"+id, fleet.HashToken("tok-"+id)
	_ = tok
	must(t, st.SetEdgeEnrolment(ctx, id, hash, time.Now().Add(time.Hour)))
	if _, err := st.RedeemEnrolment(ctx, hash); err != nil {
		t.Fatal(err)
	}
	must(t, st.SetEdgeCredentials(ctx, id, id, passwordHash))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// edge is a real edge sync client with a real spool and registry; ns lets
// several simulated edges share one spool.
type edge struct {
	id     string
	reg    *devices.Table
	outbox *centralclient.Outbox
	c      *centralclient.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startEdge(t testing.TB, env *brokertest.Env, sp *spool.Spool, id, dir string) *edge {
	t.Helper()
	return startEdgeWith(t, env, sp, id, dir, nil)
}

// centralRegistry is what the sync client hands snapshots to.
type centralRegistry = centralclient.Registry

// startEdgeWith is startEdge with the device table seen by the sync
// client through wrap (nil: the table itself).
func startEdgeWith(t testing.TB, env *brokertest.Env, sp *spool.Spool, id, dir string, wrap func(*devices.Table) centralRegistry) *edge {
	t.Helper()
	reg, err := devices.New(nil, sp.KV(id+"/susp/"), nil)
	must(t, err)
	var creg centralRegistry = reg
	if wrap != nil {
		creg = wrap(reg)
	}
	ob, err := centralclient.NewOutbox(sp.KV(id+"/outbox/"), id, 0, nil, nil)
	must(t, err)
	c, err := centralclient.New(centralclient.Options{
		EdgeID: id, BrokerURL: env.URL, Password: env.Password(id), Topics: env.Topics,
		PublicKey: signKey.Public().(ed25519.PublicKey), DataDir: filepath.Join(dir, id),
		Allow: sp.KV(id + "/allow/"), Outbox: ob, Registry: creg,
		HeartbeatInterval: time.Second, MaxReconnectInterval: 500 * time.Millisecond,
	})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	e := &edge{id: id, reg: reg, outbox: ob, c: c, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(e.done); _ = c.Run(ctx) }()
	t.Cleanup(func() { e.cancel(); <-e.done })
	return e
}

func (e *edge) status(name string) string {
	d, ok := e.reg.Lookup(name)
	if !ok {
		return "unknown"
	}
	return d.Status
}

func openSpool(t testing.TB) (*spool.Spool, string) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1})
	must(t, err)
	t.Cleanup(func() { sp.Close() })
	return sp, dir
}

func registerDevice(t testing.TB, st *sqlite.Store, name string) {
	t.Helper()
	must(t, st.CreateDevice(context.Background(), store.Device{
		Name: name, IPs: []string{"10.1.2.3"}, Owner: "Ada", Department: "Physics", ContactEmail: "ada@example.edu",
		Purpose: "scan to mail", Senders: []store.Sender{{Address: "scan@example.edu"}}, OwnerKeyHash: "k-" + name,
	}, "owner"))
}

// TestApproveSuspendAcrossFleet: approving a device in central's store
// makes every edge enforce it; suspending it is enforced within 2 s. Runs
// with 1 edge and 3 edges; with POSTERN_TEST_FLEET=N (make bench sets 50)
// also with a fleet of N edge sync clients. Logs latencies.
func TestApproveSuspendAcrossFleet(t *testing.T) {
	sizes := []int{1, 3}
	if v := os.Getenv("POSTERN_TEST_FLEET"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("POSTERN_TEST_FLEET=%q: want a number of edges", v)
		}
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		t.Run(fmt.Sprintf("edges=%d", n), func(t *testing.T) {
			brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
				st := openStore(t)
				c := startCentral(t, env, st)
				sp, dir := openSpool(t)
				edges := make([]*edge, n)
				for i := range edges {
					id := fmt.Sprintf("edge-%02d", i)
					enrolEdge(t, env, st, id)
					edges[i] = startEdge(t, env, sp, id, dir)
				}
				for _, e := range edges {
					testkit.WaitFor(t, 10*time.Second, "edge connected", e.c.Connected)
				}
				ctx := context.Background()
				const name = "scanner.example.edu"
				registerDevice(t, st, name)

				measure := func(what, want string, change func()) {
					start := time.Now()
					change()
					c.svc.Changed()
					lat := make([]time.Duration, n)
					for i, e := range edges {
						testkit.WaitFor(t, 2*time.Second, what+" enforced on "+e.id, func() bool { return e.status(name) == want })
						lat[i] = time.Since(start)
					}
					sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
					t.Logf("%s %s -> enforced on %d edges: median %v, max %v", env.Name, what, n, lat[n/2].Round(time.Microsecond), lat[n-1].Round(time.Microsecond))
				}
				measure("approve", devices.StatusActive, func() {
					must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
				})
				measure("suspend", devices.StatusSuspended, func() {
					must(t, st.SuspendDevice(ctx, name, "staff", "abuse"))
				})
				// Fleet view: every edge reported the version it applied.
				v, _, err := st.AllowlistSnapshot(ctx)
				must(t, err)
				testkit.WaitFor(t, 60*time.Second, "edge status stored", func() bool {
					es, err := st.ListEdges(ctx)
					if err != nil || len(es) != n {
						return false
					}
					for _, e := range es {
						if !e.Status.Online || e.Status.AllowlistVersion != v {
							return false
						}
					}
					return true
				})
			})
		})
	}
}

// TestNDRUndeliverableSuspendsEverywhere: one edge reports an undeliverable
// NDR; central suspends the device with an audit entry and a second edge
// enforces the suspension. The same event delivered twice is stored once.
func TestNDRUndeliverableSuspendsEverywhere(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		st := openStore(t)
		ctx := context.Background()
		const name = "copier.example.edu"
		registerDevice(t, st, name)
		must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
		c := startCentral(t, env, st)
		sp, dir := openSpool(t)
		enrolEdge(t, env, st, "edge-a")
		enrolEdge(t, env, st, "edge-b")
		a, b := startEdge(t, env, sp, "edge-a", dir), startEdge(t, env, sp, "edge-b", dir)
		testkit.WaitFor(t, 5*time.Second, "edge-b enforces active device", func() bool { return b.status(name) == devices.StatusActive })

		// edge-a relays for the device (its delivery summary), so its
		// report suspends the device without staff.
		a.outbox.Emit(event.Event{Kind: event.Delivery, Device: name, Count: 3})
		testkit.WaitFor(t, 5*time.Second, "delivery summary stored", func() bool {
			evs, err := st.ListEvents(ctx, store.EventFilter{Kind: event.Delivery})
			return err == nil && len(evs) == 1
		})
		ev := event.Event{ID: event.NewID(), Kind: event.NDRUndeliverable, Device: name, Sender: "scan@example.edu", QueueID: "Q1", Reason: "5.1.1 user unknown"}
		a.outbox.Emit(ev)
		a.outbox.Emit(ev) // redelivery of the same id
		testkit.WaitFor(t, 5*time.Second, "suspension reaches edge-b", func() bool { return b.status(name) == devices.StatusSuspended })
		d, err := st.Device(ctx, name)
		must(t, err)
		want := "suspended by edge edge-a: NDR to scan@example.edu undeliverable"
		if d.Status != store.Suspended || d.StatusReason != want {
			t.Fatalf("device %s %q, want suspended %q", d.Status, d.StatusReason, want)
		}
		audit, err := st.ListAudit(ctx, store.AuditFilter{})
		must(t, err)
		found := false
		for _, e := range audit {
			if strings.Contains(fmt.Sprint(e), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit entry %q", want)
		}
		testkit.WaitFor(t, 5*time.Second, "both copies consumed", func() bool { return c.svc.Stats().Events >= 3 })
		evs, err := st.ListEvents(ctx, store.EventFilter{Kind: event.NDRUndeliverable})
		must(t, err)
		if len(evs) != 1 || evs[0].Edge != "edge-a" {
			t.Fatalf("stored events: %+v", evs)
		}
	})
}

// TestCentralDownEdgeKeepsEnforcing: with central stopped (on Mosquitto,
// whose persistent session holds central's queue), the edge keeps
// enforcing and its events reach central's store once central is back.
func TestCentralDownEdgeKeepsEnforcing(t *testing.T) {
	env := brokertest.Mosquitto(t)
	st := openStore(t)
	ctx := context.Background()
	const name = "lab.example.edu"
	registerDevice(t, st, name)
	must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(time.Hour)))
	c := startCentral(t, env, st)
	sp, dir := openSpool(t)
	enrolEdge(t, env, st, "edge-a")
	e := startEdge(t, env, sp, "edge-a", dir)
	testkit.WaitFor(t, 5*time.Second, "enforced", func() bool { return e.status(name) == devices.StatusActive })
	c.stop()
	for i := 0; i < 20; i++ {
		e.outbox.Emit(event.Event{Kind: event.Refusal, ClientIP: "10.0.0.9", Reason: "sender not registered", Count: i + 1})
	}
	testkit.WaitFor(t, 5*time.Second, "events acknowledged by the broker", func() bool { return e.c.Counters()["events_sent"] >= 20 })
	if e.outbox.Len() != 20 {
		t.Fatalf("outbox holds %d events while central is down, want 20 (kept until central's receipt)", e.outbox.Len())
	}
	if e.status(name) != devices.StatusActive {
		t.Fatal("edge stopped enforcing while central was down")
	}
	startCentral(t, env, st)
	testkit.WaitFor(t, 10*time.Second, "queued events stored", func() bool {
		evs, err := st.ListEvents(ctx, store.EventFilter{Limit: 100})
		return err == nil && len(evs) == 20
	})
	testkit.WaitFor(t, 10*time.Second, "outbox empty after the receipts", func() bool { return e.outbox.Len() == 0 })
}

// TestEnrolAndFetch: the edge enrols over HTTP with its one-time token
// (edge/enroll against the real handler and store), connects with the
// issued credentials, and can fetch the snapshot over HTTPS; a used token
// and wrong credentials are refused.
func TestEnrolAndFetch(t *testing.T) {
	env := brokertest.Embedded(t)
	st := openStore(t)
	ctx := context.Background()
	env.UseAuth(fleet.Store{S: st}) // the broker checks the store's credentials
	c := startCentral(t, env, st)
	srv := httptest.NewServer(c.svc.Handler())
	defer srv.Close()
	must(t, st.CreateEdge(ctx, store.Edge{ID: "edge-new", Name: "new"}))
	must(t, st.SetEdgeEnrolment(ctx, "edge-new", fleet.HashToken("one-time"), time.Now().Add(time.Hour)))

	state, err := enroll.Enroll(ctx, nil, srv.URL, "one-time", true)
	must(t, err)
	if state.EdgeID != "edge-new" || state.Username != "edge-new" || state.MQTTURL != env.URL {
		t.Fatalf("enrolment: %+v", state)
	}
	if pub, err := allowlist.ParsePublicKey(state.PublicKey); err != nil || !pub.Equal(signKey.Public()) {
		t.Fatalf("public key: %v", err)
	}
	if _, err := enroll.Enroll(ctx, nil, srv.URL, "one-time", true); err == nil {
		t.Fatal("token accepted twice")
	}
	dir := t.TempDir()
	must(t, enroll.Save(dir, state))
	loaded, err := enroll.Load(dir)
	must(t, err)
	if loaded.Password != state.Password {
		t.Fatal("enrolment did not round-trip")
	}

	// The issued credentials work for MQTT and for the HTTPS fetch.
	sp, _ := openSpool(t)
	reg, _ := devices.New(nil, nil, nil)
	ob, _ := centralclient.NewOutbox(sp.KV("outbox/"), state.EdgeID, 0, nil, slog.Default())
	pub, _ := allowlist.ParsePublicKey(state.PublicKey)
	cl, err := centralclient.New(centralclient.Options{EdgeID: state.EdgeID, BrokerURL: state.MQTTURL, Password: state.Password,
		PublicKey: pub, Allow: sp.KV("allow/"), Outbox: ob, Registry: reg, CentralURL: srv.URL})
	must(t, err)
	must(t, cl.Fetch(ctx))
	if cl.Current() == nil {
		t.Fatal("no snapshot after fetch")
	}
	bad, err := centralclient.New(centralclient.Options{EdgeID: state.EdgeID, Password: "wrong", PublicKey: pub,
		Allow: sp.KV("allow2/"), Outbox: ob, Registry: reg, CentralURL: srv.URL})
	must(t, err)
	if err := bad.Fetch(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("fetch with a wrong password: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = cl.Run(runCtx) }()
	testkit.WaitFor(t, 5*time.Second, "enrolled edge connects", cl.Connected)
	cancel()
	<-done
}
