// Package centralclient is the edge's side of the sync contract (docs/CONTRACT.md):
// it keeps the edge's device table on the newest allowlist snapshot central
// signed, and delivers the edge's events and status to central.
//
// Guarantees:
//   - Only a snapshot that verifies with central's public key and is newer
//     than the current one (allowlist.Accept) is applied. Anything else is
//     logged and counted, and the current snapshot stays.
//   - An applied snapshot is persisted (fsynced) in the spool's "allow/"
//     bucket first; New loads and re-verifies it, so an edge that starts
//     without network enforces the last good allowlist. The device table swaps
//     the whole device set atomically, so no SMTP session sees half of it.
//   - Events go through the Outbox: stored before Emit returns, deleted
//     only when central's receipt says central stored them (end to end,
//     not the broker's PUBACK). Nothing is lost across broker outages,
//     broker restarts without persistence or edge restarts; duplicates are
//     possible and central drops them by event id.
//   - The MQTT session is persistent (fixed client id = edge id, clean
//     session off, paho's file store under the data folder, subscriptions
//     resumed, unordered delivery, a default handler for retained messages
//     that arrive before Subscribe returns), reconnects with exponential
//     backoff, and leaves a retained last will (status offline).
//   - When MQTT cannot deliver a snapshot, the client fetches it from
//     central over HTTPS (go-retryablehttp) and verifies it the same way.
//   - With a device table that can list central's devices (DeltaRegistry)
//     the client follows central's signed deltas instead of full
//     snapshots, applying one only on its exact base and only if the
//     result matches the delta's content hash; anything else makes it
//     take the full snapshot (see delta.go).
package centralclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/topic"
)

// Registry is where applied snapshots go (*devices.Table).
type Registry interface {
	SetCentral(version int64, issued time.Time, devices []devices.Device, validUntil time.Time)
}

// Options configure a Client. Zero durations take the defaults noted.
type Options struct {
	EdgeID    string
	BrokerURL string // tcp://host:1883, tls://host:8883
	Username  string // default EdgeID
	Password  string
	TLS       *tls.Config
	Topics    topic.Topics
	PublicKey ed25519.PublicKey
	// DataDir holds paho's persistent store (DataDir/mqtt).
	DataDir string
	// CentralURL is central's base URL for the HTTPS snapshot fetch; empty
	// disables the fallback.
	CentralURL string
	HTTPClient *retryablehttp.Client // default: 3 retries, 30s timeout

	// Allow is the spool bucket "allow/" holding the last good snapshot.
	Allow    KV
	Outbox   *Outbox
	Registry Registry

	HeartbeatInterval time.Duration // default 30s
	// FetchAfter: fetch over HTTPS when MQTT has delivered no snapshot this
	// long after start, or has been disconnected this long (default 30s);
	// then every FetchInterval while that holds (default 5m).
	FetchAfter    time.Duration
	FetchInterval time.Duration
	// ResendAfter: an event the broker acknowledged but central has not
	// receipted is sent again after this long (default 10m), and after
	// every reconnect.
	ResendAfter time.Duration
	// MaxReconnectInterval caps the reconnect backoff (default 1m).
	MaxReconnectInterval time.Duration

	// Deliveries, when set, is reported every SummaryInterval (default
	// DefaultSummaryInterval) as per-device delivery events.
	Deliveries      *DeliverySummary
	SummaryInterval time.Duration

	// QueueDepth and Counters feed the status message; both optional.
	QueueDepth func() int
	Counters   func() map[string]int64
	Software   string

	// Clock drives heartbeats and timestamps (default clock.Real).
	Clock clock.Clock
	Log   *slog.Logger
}

// Client runs the edge's MQTT link. Create it with New, then Run.
type Client struct {
	o      Options
	log    *slog.Logger
	clock  clock.Clock
	mqtt   paho.Client
	status chan struct{} // request an immediate status publish

	mu      sync.Mutex // serialises snapshot handling
	current atomic.Pointer[allowlist.Snapshot]
	etag    string
	// hash and devices are the content hash and length of the list in
	// force (with a DeltaRegistry); chain the deltas applied on top of the
	// persisted snapshot; deltaMode whether central was seen to publish deltas; fullSub
	// whether the full snapshot is subscribed to (see delta.go).
	hash      string
	devices   int
	chain     [][]byte
	deltaMode bool
	fullSub   bool
	// fullWanted: a delta did not fit and no full snapshot came since.
	fullWanted bool

	connected    atomic.Bool
	disconnected atomic.Int64 // unix nanos of the last connection loss (0: never connected)
	started      time.Time

	counters sync.Map // string -> *atomic.Int64
}

const persistKey = "snapshot"

// New checks opts, loads the persisted snapshot (verifying it again) and
// applies it to the device table. It does not touch the network.
func New(opts Options) (*Client, error) {
	if err := topic.ValidEdgeID(opts.EdgeID); err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	if len(opts.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("sync: no allowlist public key (enrol the edge or set sync.public_key)")
	}
	if opts.Allow == nil || opts.Outbox == nil || opts.Registry == nil {
		return nil, errors.New("sync: Allow, Outbox and Registry are required")
	}
	if opts.Username == "" {
		opts.Username = opts.EdgeID
	}
	if opts.Topics == (topic.Topics{}) {
		opts.Topics = topic.New("")
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 30 * time.Second
	}
	if opts.FetchAfter <= 0 {
		opts.FetchAfter = 30 * time.Second
	}
	if opts.FetchInterval <= 0 {
		opts.FetchInterval = 5 * time.Minute
	}
	if opts.ResendAfter <= 0 {
		opts.ResendAfter = 10 * time.Minute
	}
	if opts.SummaryInterval <= 0 {
		opts.SummaryInterval = DefaultSummaryInterval
	}
	if opts.MaxReconnectInterval <= 0 {
		opts.MaxReconnectInterval = time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c := &Client{o: opts, log: opts.Log.With("edge", opts.EdgeID), clock: opts.Clock, status: make(chan struct{}, 1)}
	if err := c.loadPersisted(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadPersisted applies the snapshot stored by a previous run.
func (c *Client) loadPersisted() error {
	var wire, chain []byte
	haveChain := false
	err := c.o.Allow.Iterate(func(k string, v []byte) error {
		switch k {
		case persistKey:
			wire = bytes.Clone(v)
		case deltasKey:
			chain, haveChain = bytes.Clone(v), true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sync: load persisted snapshot: %w", err)
	}
	if wire == nil {
		c.log.Info("no persisted allowlist; waiting for central")
		return nil
	}
	s, err := allowlist.Decode(wire, c.o.PublicKey)
	if err != nil {
		// A snapshot that no longer verifies (key rotated, disk damage) is
		// not enforced; the edge waits for central like a fresh one.
		c.log.Error("persisted allowlist rejected", "err", err)
		c.count("snapshots_rejected")
		return nil
	}
	n := len(s.Devices)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.apply(&s)
	if haveChain {
		c.loadChainLocked(chain)
	}
	cur := c.current.Load()
	c.log.Info("persisted allowlist loaded", "version", cur.Version, "snapshot_version", s.Version, "deltas", len(c.chain),
		"issued", cur.Issued, "valid_until", cur.ValidUntil, "devices", n)
	return nil
}

// Current returns the snapshot in force without its device list, which
// only the device table holds (nil if none).
func (c *Client) Current() *allowlist.Snapshot { return c.current.Load() }

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Counters returns a copy of the client's counters.
func (c *Client) Counters() map[string]int64 {
	out := map[string]int64{}
	c.counters.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	out["events_dropped"] = c.o.Outbox.Dropped()
	return out
}

func (c *Client) count(name string) {
	v, _ := c.counters.LoadOrStore(name, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// HandleSnapshot verifies, persists and applies one snapshot in wire form
// from source ("mqtt" or "https"). Rejections are logged and counted and
// returned; ErrSame (a redelivery) is returned but neither logged nor
// counted.
func (c *Client) HandleSnapshot(wire []byte, source string) error {
	if len(wire) >= bigWire {
		// Decoding a large list makes garbage several times its final
		// size; collecting more often meanwhile keeps the peak down. The
		// setting is global: one large apply at a time changes it.
		gcPercentMu.Lock()
		old := debug.SetGCPercent(applyGCPercent)
		defer func() {
			debug.SetGCPercent(old)
			gcPercentMu.Unlock()
		}()
	}
	s, err := allowlist.Decode(wire, c.o.PublicKey)
	if err != nil {
		c.reject(err, source, 0)
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := allowlist.Accept(c.current.Load(), &s); err != nil {
		if !errors.Is(err, allowlist.ErrSame) {
			c.reject(err, source, s.Version)
		}
		c.dropFullLocked(true)
		return err
	}
	if err := c.o.Allow.Set(persistKey, wire); err != nil {
		// Enforce it anyway: it is newer and verified. After a restart the
		// edge falls back to the previous persisted one until central
		// sends again.
		c.log.Error("allowlist not persisted", "version", s.Version, "err", err)
	}
	if c.chain = nil; c.deltaMode {
		// The deltas persisted applied to the previous snapshot.
		c.persistChainLocked()
	}
	active, suspended := s.Counts()
	c.apply(&s)
	c.dropFullLocked(true)
	c.count("snapshots_applied")
	c.log.Info("allowlist applied", "source", source, "version", s.Version, "issued", s.Issued,
		"valid_until", s.ValidUntil, "active", active, "suspended", suspended, "bytes", len(wire))
	c.requestStatus()
	return nil
}

func (c *Client) reject(err error, source string, version int64) {
	c.rejectAs("snapshots", err, source, version)
}

// rejectAs logs and counts a rejected snapshot or delta (what).
func (c *Client) rejectAs(what string, err error, source string, version int64) {
	reason := "format"
	switch {
	case errors.Is(err, allowlist.ErrUnsigned):
		reason = "unsigned"
	case errors.Is(err, allowlist.ErrBadSignature):
		reason = "signature"
	case errors.Is(err, allowlist.ErrOlder):
		reason = "older"
	}
	c.count(what + "_rejected")
	c.count(what + "_rejected_" + reason)
	msg := "allowlist rejected"
	if what == "deltas" {
		msg = "allowlist delta rejected"
	}
	c.log.Warn(msg, "source", source, "reason", reason, "version", version, "err", err)
}

// apply hands s to the device table and makes its header current; it
// empties s.Devices. c.mu must be held.
func (c *Client) apply(s *allowlist.Snapshot) {
	if _, ok := c.o.Registry.(DeltaRegistry); ok {
		c.hash, c.devices = contentHash(s.Devices), len(s.Devices)
	}
	devs := make([]devices.Device, len(s.Devices))
	for i, d := range s.Devices {
		devs[i] = devices.Device{
			Name:              d.Name,
			Senders:           d.Senders,
			Status:            string(d.Status),
			MessagesPerHour:   d.MessagesPerHour,
			RecipientsPerHour: d.RecipientsPerHour,
			Source:            devices.SourceCentral,
			Reason:            d.Reason,
			Reinstated:        d.Reinstated,
		}
	}
	// From here the device table holds the devices: drop the decoded list
	// (devs shares its strings) so that it can be freed while the table
	// packs, and keep only the header as current.
	s.Devices = nil
	c.o.Registry.SetCentral(s.Version, s.Issued, devs, s.ValidUntil)
	hdr := *s
	c.current.Store(&hdr)
	if len(devs) >= bigAllowlist {
		// Decoding and packing a large list leaves tens of MB of garbage
		// (the JSON text, the decoded list, the previous table); give it
		// back to the OS now instead of keeping the process at its peak
		// until the runtime's scavenger gets round to it.
		debug.FreeOSMemory()
	}
}

// bigWire is the wire size (about 5,000 devices) from which a snapshot is
// decoded and applied with the GC at applyGCPercent.
const (
	bigWire        = 64 << 10
	applyGCPercent = 25
)

var gcPercentMu sync.Mutex

// bigAllowlist is the size from which applying a snapshot ends with
// returning the garbage to the OS at once.
const bigAllowlist = 5000

// Run connects to the broker and runs until ctx ends: it keeps the
// connection up, publishes events from the outbox and status heartbeats,
// and falls back to HTTPS fetches. On return it publishes an offline
// status and disconnects cleanly.
func (c *Client) Run(ctx context.Context) error {
	c.started = c.clock.Now()
	will, err := topic.MarshalStatus(topic.Status{Edge: c.o.EdgeID, Online: false, Software: c.o.Software})
	if err != nil {
		return err
	}
	opts := paho.NewClientOptions().
		AddBroker(c.o.BrokerURL).
		SetClientID(c.o.EdgeID).
		SetUsername(c.o.Username).
		SetPassword(c.o.Password).
		SetCleanSession(false).
		SetResumeSubs(true).
		SetOrderMatters(false).
		SetDefaultPublishHandler(c.onMessage).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).
		SetMaxReconnectInterval(c.o.MaxReconnectInterval).
		SetConnectTimeout(10*time.Second).
		SetKeepAlive(30*time.Second).
		SetBinaryWill(c.o.Topics.Status(c.o.EdgeID), will, 1, true).
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(c.onLost)
	if c.o.DataDir != "" {
		opts.SetStore(paho.NewFileStore(filepath.Join(c.o.DataDir, "mqtt")))
	}
	if c.o.TLS != nil {
		opts.SetTLSConfig(c.o.TLS)
	}
	c.mqtt = paho.NewClient(opts)
	c.mqtt.Connect() // retries in the background (ConnectRetry)

	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); c.summaryLoop(ctx) }()
	go func() { defer wg.Done(); c.publishLoop(ctx) }()
	go func() { defer wg.Done(); c.statusLoop(ctx) }()
	go func() { defer wg.Done(); c.fetchLoop(ctx) }()
	<-ctx.Done()
	wg.Wait()
	if c.mqtt.IsConnectionOpen() {
		b, _ := topic.MarshalStatus(c.statusNow(false))
		c.mqtt.Publish(c.o.Topics.Status(c.o.EdgeID), 1, true, b).WaitTimeout(2 * time.Second)
	}
	c.mqtt.Disconnect(500)
	return ctx.Err()
}

func (c *Client) onConnect(cl paho.Client) {
	c.connected.Store(true)
	c.count("mqtt_connects")
	c.log.Info("mqtt connected", "broker", c.o.BrokerURL)
	go func() {
		filters := map[string]byte{c.o.Topics.Receipt(c.o.EdgeID): 1}
		full := true
		if _, ok := c.o.Registry.(DeltaRegistry); ok {
			filters[c.o.Topics.AllowlistDelta()] = 1
			c.mu.Lock()
			// Following deltas, the full snapshot is taken only when a
			// delta does not fit; the retained delta says at once.
			full = !c.deltaMode || c.current.Load() == nil || c.fullSub
			c.fullSub = full
			c.mu.Unlock()
		}
		if full {
			filters[c.o.Topics.Allowlist()] = 1
		} else if tok := cl.Unsubscribe(c.o.Topics.Allowlist()); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			// The persistent session may hold the subscription from before.
			c.log.Warn("mqtt unsubscribe from the full allowlist failed", "err", tok.Error())
		}
		tok := cl.SubscribeMultiple(filters, c.onMessage)
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			c.log.Error("mqtt subscribe failed", "topic", c.o.Topics.Allowlist(), "err", tok.Error())
		}
		c.requestStatus()
		c.o.Outbox.resendAll()
		c.o.Outbox.signal()
	}()
}

func (c *Client) onLost(_ paho.Client, err error) {
	c.connected.Store(false)
	c.disconnected.Store(c.clock.Now().UnixNano())
	c.log.Warn("mqtt connection lost; reconnecting", "err", err)
}

// onMessage receives the snapshot (and anything a broker sends on the
// session; only the allowlist topic is acted on).
func (c *Client) onMessage(_ paho.Client, m paho.Message) {
	if m.Topic() == c.o.Topics.Receipt(c.o.EdgeID) {
		c.handleReceipt(m.Payload())
		return
	}
	if m.Topic() == c.o.Topics.AllowlistDelta() {
		if _, ok := c.o.Registry.(DeltaRegistry); ok {
			_ = c.HandleDelta(m.Payload(), "mqtt")
		}
		return
	}
	if m.Topic() != c.o.Topics.Allowlist() {
		return
	}
	_ = c.HandleSnapshot(m.Payload(), "mqtt")
}

// publishLoop drains the outbox while connected.
func (c *Client) publishLoop(ctx context.Context) {
	tick, stopTick := c.clock.Ticker(5 * time.Second)
	defer stopTick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.o.Outbox.wake:
		case <-tick:
		}
		for c.mqtt.IsConnectionOpen() && ctx.Err() == nil {
			n, err := c.publishBatch(ctx)
			if err != nil {
				c.log.Warn("event publish interrupted", "err", err)
				break
			}
			if n == 0 {
				break
			}
		}
	}
}

// handleReceipt deletes the events central's receipt names.
func (c *Client) handleReceipt(b []byte) {
	r, err := topic.UnmarshalReceipt(b)
	if err != nil || r.Edge != c.o.EdgeID {
		c.log.Warn("bad receipt from central ignored", "err", err)
		return
	}
	n, err := c.o.Outbox.Receipt(r.IDs)
	if err != nil {
		c.log.Error("outbox delete after receipt failed; the events will be sent again", "err", err)
	}
	for i := 0; i < n; i++ {
		c.count("events_receipted")
	}
}

// publishBatch publishes up to 128 due events and marks each one the
// broker acknowledged as sent (deleted on central's receipt). It returns
// how many were acknowledged.
func (c *Client) publishBatch(ctx context.Context) (int, error) {
	batch, err := c.o.Outbox.due(128, c.clock.Now(), c.o.ResendAfter)
	if err != nil || len(batch) == 0 {
		return 0, err
	}
	name := c.o.Topics.Events(c.o.EdgeID)
	toks := make([]paho.Token, len(batch))
	for i, p := range batch {
		// Marked before publishing: a receipt may come back before the
		// PUBACK is seen. A publish that fails is sent again after the
		// reconnect (resendAll) or after ResendAfter.
		c.o.Outbox.markSent(p.key, c.clock.Now())
		toks[i] = c.mqtt.Publish(name, 1, false, p.val)
	}
	acked := 0
	for _, tok := range toks {
		select {
		case <-tok.Done():
		case <-time.After(30 * time.Second):
			return acked, errors.New("no PUBACK within 30s")
		case <-ctx.Done():
			return acked, ctx.Err()
		}
		if err := tok.Error(); err != nil {
			return acked, err
		}
		acked++
		c.count("events_sent")
	}
	return acked, nil
}

func (c *Client) requestStatus() {
	select {
	case c.status <- struct{}{}:
	default:
	}
}

func (c *Client) statusNow(online bool) topic.Status {
	s := topic.Status{
		Edge:     c.o.EdgeID,
		Online:   online,
		Time:     c.clock.Now().UTC(),
		Software: c.o.Software,
		Outbox:   c.o.Outbox.Len(),
		Counters: c.Counters(),
	}
	if cur := c.current.Load(); cur != nil {
		s.AllowlistVersion = cur.Version
		s.AllowlistValidUntil = cur.ValidUntil
	}
	if c.o.QueueDepth != nil {
		s.QueueDepth = c.o.QueueDepth()
	}
	if c.o.Counters != nil {
		for k, v := range c.o.Counters() {
			s.Counters[k] = v
		}
	}
	return s
}

// statusLoop publishes the retained status at every heartbeat and when
// something changed (connect, new snapshot).
func (c *Client) statusLoop(ctx context.Context) {
	tick, stopTick := c.clock.Ticker(c.o.HeartbeatInterval)
	defer stopTick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-c.status:
		}
		if !c.mqtt.IsConnectionOpen() {
			continue
		}
		b, err := topic.MarshalStatus(c.statusNow(true))
		if err != nil {
			c.log.Error("status encode", "err", err)
			continue
		}
		// QoS 0 would do for a heartbeat, but the retained status must
		// replace the last will reliably.
		tok := c.mqtt.Publish(c.o.Topics.Status(c.o.EdgeID), 1, true, b)
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}
