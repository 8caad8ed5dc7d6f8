package centralclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
	"github.com/postern/postern/shared/topic"
)

var (
	centralPriv = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	centralPub  = centralPriv.Public().(ed25519.PublicKey)
	forgerPriv  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32))
)

func snapshot(t testing.TB, priv ed25519.PrivateKey, version int64, issued time.Time, devs ...allowlist.Device) []byte {
	t.Helper()
	w, err := allowlist.Encode(allowlist.Snapshot{Version: version, Issued: issued, ValidUntil: issued.Add(24 * time.Hour), Devices: devs}, priv)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func dev(name string, st allowlist.Status) allowlist.Device {
	return allowlist.Device{Name: name, Status: st, Senders: []string{"scan@example.edu"}}
}

// edge is one edge's sync client with its real spool and registry.
type edge struct {
	t      testing.TB
	id     string
	dir    string
	sp     *spool.Spool
	reg    *devices.Table
	outbox *Outbox
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}
}

type edgeOpt func(*Options)

func openEdge(t testing.TB, env *brokertest.Env, id, dir string, opts ...edgeOpt) *edge {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return openEdgeOn(t, env, id, dir, sp, "", opts...)
}

// openEdgeOn opens an edge on an existing spool; ns separates several
// simulated edges sharing one spool.
func openEdgeOn(t testing.TB, env *brokertest.Env, id, dir string, sp *spool.Spool, ns string, opts ...edgeOpt) *edge {
	t.Helper()
	reg, err := devices.New(nil, sp.KV(ns+"susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := NewOutbox(sp.KV(ns+"outbox/"), id, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		EdgeID: id, BrokerURL: env.URL, Password: env.Password(id), Topics: env.Topics,
		PublicKey: centralPub, DataDir: dir, Allow: sp.KV(ns + "allow/"), Outbox: ob, Registry: reg,
		HeartbeatInterval: time.Second, MaxReconnectInterval: 500 * time.Millisecond,
	}
	for _, f := range opts {
		f(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{t: t, id: id, dir: dir, sp: sp, reg: reg, outbox: ob, c: c}
	t.Cleanup(e.close)
	return e
}

func (e *edge) run() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() { defer close(e.done); _ = e.c.Run(ctx) }()
}

func (e *edge) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

func (e *edge) close() {
	e.stop()
	if e.sp != nil {
		e.sp.Close()
		e.sp = nil
	}
}

func (e *edge) status(name string) string {
	d, ok := e.reg.Lookup(name)
	if !ok {
		return "unknown"
	}
	return d.Status
}

// central is a stand-in for central's MQTT side: a persistent session that
// collects events and publishes snapshots.
type central struct {
	t  testing.TB
	c  paho.Client
	mu sync.Mutex
	// seen counts deliveries per event id.
	seen   map[string]int
	status map[string][]byte
}

func startCentral(t testing.TB, env *brokertest.Env) *central {
	t.Helper()
	ce := &central{t: t, seen: map[string]int{}, status: map[string][]byte{}}
	h := func(_ paho.Client, m paho.Message) {
		ce.mu.Lock()
		defer ce.mu.Unlock()
		if edge, kind, ok := env.Topics.ParseEdge(m.Topic()); ok && kind == "status" {
			ce.status[edge] = m.Payload()
			return
		}
		ev, err := event.Unmarshal(m.Payload())
		if err != nil {
			t.Errorf("bad event: %v", err)
			return
		}
		ce.seen[ev.ID]++
		// Receipt it like central does once stored (not from inside
		// the handler: that would block paho's reader).
		if edge, _, ok := env.Topics.ParseEdge(m.Topic()); ok && ce.c != nil {
			b, _ := topic.MarshalReceipt(topic.Receipt{Edge: edge, Time: time.Now(), IDs: []string{ev.ID}})
			go ce.c.Publish(env.Topics.Receipt(edge), 1, true, b)
		}
	}
	o := env.CentralOptions().SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond).
		SetDefaultPublishHandler(h).
		SetOnConnectHandler(func(c paho.Client) {
			go c.SubscribeMultiple(map[string]byte{env.Topics.AllEvents(): 1, env.Topics.AllStatus(): 1}, h)
		})
	ce.c = paho.NewClient(o)
	if tok := ce.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("central connect: %v", tok.Error())
	}
	testkit.WaitFor(t, 5*time.Second, "central subscribed", func() bool { return ce.c.IsConnectionOpen() })
	time.Sleep(100 * time.Millisecond)
	t.Cleanup(func() { ce.c.Disconnect(100) })
	return ce
}

func (ce *central) publish(topic string, wire []byte) {
	ce.t.Helper()
	tok := ce.c.Publish(topic, 1, true, wire)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		ce.t.Fatalf("publish: %v", tok.Error())
	}
}

func (ce *central) counts() (distinct, total int) {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	for _, n := range ce.seen {
		distinct++
		total += n
	}
	return distinct, total
}

// TestSnapshotEnforcedRejectedPersisted: approve -> enforced, suspend ->
// refused within 2 s, forged/unsigned/older rejected, and after a restart
// without network the persisted snapshot is enforced.
func TestSnapshotEnforcedRejectedPersisted(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		ce := startCentral(t, env)
		dir := t.TempDir()
		e := openEdge(t, env, "edge-1", dir)
		e.run()
		t0 := time.Now()

		ce.publish(env.Topics.Allowlist(), snapshot(t, centralPriv, 1, t0, dev("scanner.example.edu", allowlist.Active)))
		testkit.WaitFor(t, 2*time.Second, "approved device enforced", func() bool { return e.status("scanner.example.edu") == devices.StatusActive })

		start := time.Now()
		ce.publish(env.Topics.Allowlist(), snapshot(t, centralPriv, 2, t0.Add(time.Second), dev("scanner.example.edu", allowlist.Suspended)))
		testkit.WaitFor(t, 2*time.Second, "suspension enforced", func() bool { return e.status("scanner.example.edu") == devices.StatusSuspended })
		t.Logf("%s: suspend -> enforced in %v", env.Name, time.Since(start))

		bad := map[string][]byte{
			"signature": snapshot(t, forgerPriv, 9, t0.Add(2*time.Second), dev("scanner.example.edu", allowlist.Active)),
			"unsigned":  []byte(`{"format":1,"version":10,"devices":[{"name":"scanner.example.edu","status":"active"}]}`),
			"older":     snapshot(t, centralPriv, 1, t0.Add(3*time.Second), dev("scanner.example.edu", allowlist.Active)),
		}
		for reason, wire := range bad {
			ce.publish(env.Topics.Allowlist(), wire)
			testkit.WaitFor(t, 2*time.Second, reason+" rejection counted", func() bool { return e.c.Counters()["snapshots_rejected_"+reason] == 1 })
		}
		if v := e.reg.Version(); v != 2 || e.status("scanner.example.edu") != devices.StatusSuspended {
			t.Fatalf("after rejected snapshots: version %d, status %s", v, e.status("scanner.example.edu"))
		}
		// Put the genuine snapshot back as the retained one for later edges.
		ce.publish(env.Topics.Allowlist(), snapshot(t, centralPriv, 3, t0.Add(4*time.Second), dev("scanner.example.edu", allowlist.Active)))
		testkit.WaitFor(t, 2*time.Second, "reinstated", func() bool { return e.status("scanner.example.edu") == devices.StatusActive })
		e.close()

		// Restart offline: the broker address is dead.
		env.Stop()
		off := openEdge(t, env, "edge-1", dir)
		if v := off.reg.Version(); v != 3 || off.status("scanner.example.edu") != devices.StatusActive {
			t.Fatalf("offline restart: version %d, status %s", v, off.status("scanner.example.edu"))
		}
		off.run()
		time.Sleep(300 * time.Millisecond)
		if off.status("scanner.example.edu") != devices.StatusActive {
			t.Fatal("offline edge lost its allowlist")
		}
	})
}

// TestEventsSurviveBrokerOutageAndRestart: events emitted while the broker
// is down, across an edge restart, all reach central once the broker is
// back, and each is deleted from the outbox only after central's receipt.
func TestEventsSurviveBrokerOutageAndRestart(t *testing.T) {
	brokertest.Each(t, func(t *testing.T, env *brokertest.Env) {
		ce := startCentral(t, env)
		dir := t.TempDir()
		e := openEdge(t, env, "edge-1", dir)
		e.run()
		testkit.WaitFor(t, 5*time.Second, "edge connected", e.c.Connected)
		e.outbox.Emit(event.Event{Kind: event.Refusal, Reason: "before outage"})
		testkit.WaitFor(t, 5*time.Second, "first event delivered", func() bool { d, _ := ce.counts(); return d == 1 })
		testkit.WaitFor(t, 5*time.Second, "first event receipted", func() bool { return e.outbox.Len() == 0 })

		env.Stop()
		const n = 40
		for i := 0; i < n/2; i++ {
			e.outbox.Emit(event.Event{Kind: event.RateLimit, Device: fmt.Sprintf("d%d.example.edu", i), Reason: "during outage"})
		}
		e.close() // edge restarts while the broker is still down
		e = openEdge(t, env, "edge-1", dir)
		if e.outbox.Len() != n/2 {
			t.Fatalf("outbox after restart holds %d events, want %d", e.outbox.Len(), n/2)
		}
		e.run()
		for i := n / 2; i < n; i++ {
			e.outbox.Emit(event.Event{Kind: event.NDR, Sender: "scan@example.edu", Reason: "during outage, after restart"})
		}
		time.Sleep(300 * time.Millisecond)
		if d, _ := ce.counts(); d != 1 {
			t.Fatalf("central saw %d events while the broker was down", d)
		}
		env.Start()
		testkit.WaitFor(t, 15*time.Second, "all events delivered", func() bool { d, _ := ce.counts(); return d == n+1 })
		testkit.WaitFor(t, 5*time.Second, "outbox empty", func() bool { return e.outbox.Len() == 0 })
		d, total := ce.counts()
		t.Logf("%s: %d distinct events, %d deliveries (duplicates are dropped by id at central)", env.Name, d, total)
	})
}

// TestStatusReported: the edge's retained status carries the applied
// allowlist version and outbox depth, and an orderly stop leaves "offline".
func TestStatusReported(t *testing.T) {
	env := brokertest.Embedded(t)
	ce := startCentral(t, env)
	ce.publish(env.Topics.Allowlist(), snapshot(t, centralPriv, 5, time.Now(), dev("a.example.edu", allowlist.Active)))
	e := openEdge(t, env, "edge-s", t.TempDir(), func(o *Options) { o.QueueDepth = func() int { return 7 } })
	e.run()
	testkit.WaitFor(t, 5*time.Second, "status with version 5", func() bool {
		ce.mu.Lock()
		defer ce.mu.Unlock()
		var st struct {
			Online           bool  `json:"online"`
			AllowlistVersion int64 `json:"allowlist_version"`
			QueueDepth       int   `json:"queue_depth"`
		}
		return json.Unmarshal(ce.status["edge-s"], &st) == nil && st.Online && st.AllowlistVersion == 5 && st.QueueDepth == 7
	})
	e.stop()
	testkit.WaitFor(t, 5*time.Second, "offline status", func() bool {
		ce.mu.Lock()
		defer ce.mu.Unlock()
		return bytes.Contains(ce.status["edge-s"], []byte(`"online":false`))
	})
}

// TestFetchOverHTTPS: with no broker, the edge fetches and verifies the
// snapshot from central's HTTPS endpoint, with ETag revalidation.
func TestFetchOverHTTPS(t *testing.T) {
	env := brokertest.Embedded(t)
	env.Stop() // MQTT unavailable
	wire := snapshot(t, centralPriv, 4, time.Now(), dev("fetched.example.edu", allowlist.Active))
	var hits, notModified int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if u, p, ok := r.BasicAuth(); !ok || u != "edge-f" || p != env.Password("edge-f") || r.URL.Path != SnapshotPath {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Header().Set("ETag", `"v4"`)
		if r.Header.Get("If-None-Match") == `"v4"` {
			notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(wire)
	}))
	defer srv.Close()
	e := openEdge(t, env, "edge-f", t.TempDir(), func(o *Options) {
		o.CentralURL = srv.URL
		o.FetchAfter = 50 * time.Millisecond
		o.FetchInterval = 50 * time.Millisecond
	})
	e.run()
	testkit.WaitFor(t, 5*time.Second, "fetched snapshot enforced", func() bool { return e.status("fetched.example.edu") == devices.StatusActive })
	testkit.WaitFor(t, 5*time.Second, "revalidated with ETag", func() bool { mu.Lock(); defer mu.Unlock(); return notModified > 0 })

	// A tampered body is rejected.
	mu.Lock()
	wire = append(bytes.Clone(wire[:len(wire)-1]), wire[len(wire)-1]^1)
	mu.Unlock()
	err := e.c.Fetch(context.Background())
	if !errors.Is(err, allowlist.ErrBadSignature) {
		// The ETag short-circuits; drop it and retry.
		e.c.mu.Lock()
		e.c.etag = ""
		e.c.mu.Unlock()
		err = e.c.Fetch(context.Background())
	}
	if !errors.Is(err, allowlist.ErrBadSignature) {
		t.Fatalf("tampered fetch: %v", err)
	}
}
