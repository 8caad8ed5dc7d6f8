// Package fleet is central's side of the sync contract (docs/CONTRACT.md).
//
// It publishes the signed allowlist snapshot (retained, QoS 1) at start,
// on every change that affects enforcement (Changed) and every republish
// interval, each followed by a signed delta from the previous one
// (retained on its own topic); consumes the edges' events and status through a persistent
// MQTT session (clean session off, fixed client id), so events published
// while central is away are delivered when it returns; and serves the
// HTTPS enrolment and snapshot-fetch endpoints.
//
// Guarantees:
//   - An event is acknowledged to the broker only after it is stored; the
//     store de-duplicates by event id, so redeliveries are harmless. With
//     a store that writes batches (BatchEventStore) the events that
//     arrived meanwhile are stored in one transaction, and each is
//     acknowledged after its commit.
//   - A newly stored ndr-undeliverable event goes to the Suspender, which
//     suspends the device centrally ("suspended by edge X: NDR to S
//     undeliverable") only within the limits on one edge's word, and
//     otherwise files a suspension request for staff.
//   - The edge id of an event or status is the one in its topic, which the
//     broker's ACL ties to the edge's credentials; a payload cannot speak
//     for another edge.
package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/topic"
)

// Source returns the allowlist as the store holds it now. The version must
// grow with every change that affects enforcement.
type Source interface {
	Allowlist(ctx context.Context) (version int64, devices []allowlist.Device, err error)
}

// VersionSource is the cheap read of the store's allowlist version, polled
// when several instances share the store (see Options.Leader). A Source
// without it is read in full on every poll.
type VersionSource interface {
	AllowlistVersion(ctx context.Context) (int64, error)
}

// Leader says whether this instance may publish the allowlist now (see
// central/leader). It is asked right before every publish.
type Leader interface {
	IsLeader(ctx context.Context) bool
}

// EventStore records events.
type EventStore interface {
	// AddEvent stores e unless an event with its id exists; inserted
	// reports which.
	AddEvent(ctx context.Context, e event.Event) (inserted bool, err error)
}

// BatchEventStore is an EventStore that also stores many events in one
// transaction (all or none), saying for each whether it was new. With
// it, the Service writes events in batches (see eventLoop).
type BatchEventStore interface {
	EventStore
	AddEvents(ctx context.Context, es []event.Event) (inserted []bool, err error)
}

// Suspender decides what an edge's ndr-undeliverable report does
// (*registration.Service: an automatic suspension within the limits on an
// edge's word, else a request for staff).
type Suspender interface {
	SuspendByEdge(ctx context.Context, r registration.EdgeReport) (store.EdgeSuspensionResult, error)
	// EvidenceArrived re-decides the edge's reports about device that
	// waited for lack of traffic, once the edge reported traffic for it.
	EvidenceArrived(ctx context.Context, edge, device string) error
}

// StatusStore records edge status for the fleet view.
type StatusStore interface {
	UpdateEdgeStatus(ctx context.Context, s topic.Status) error
}

// Options configure a Service.
type Options struct {
	// BrokerURL is the broker central connects to. With the embedded
	// broker set Dial (broker.Dial) and any URL ("tcp://inproc").
	BrokerURL string
	Dial      func() (net.Conn, error)
	Username  string
	Password  string
	TLS       *tls.Config
	// ClientID names central's persistent session (mqtt.client_id).
	ClientID string
	// SharedGroup, when set, subscribes to events and status as the
	// shared subscription $share/<SharedGroup>/<filter> (mqtt.shared_group),
	// so the broker hands each message to one instance of the group.
	SharedGroup string
	Topics      topic.Topics

	Key               ed25519.PrivateKey
	ValidFor          time.Duration // allowlist.valid_for
	RepublishInterval time.Duration // allowlist.republish_interval

	Source Source
	// Leader, when set, limits publishing to the instance it elects; the
	// others only keep their HTTPS copy current. Every PollInterval each
	// instance reads the store's version, so a change made through any
	// instance is published by the leader, and an instance that has just
	// become leader publishes at once. nil: this instance always
	// publishes, and only on Changed and the republish interval.
	Leader       Leader
	PollInterval time.Duration // database.leader_interval (default 1s)

	Events    EventStore
	Suspender Suspender
	Status    StatusStore
	// Gate refuses revoked edges and records over-limit ones (nil: every
	// edge is heard).
	Gate EdgeGate
	// MaxEventsPerMinute and MaxEventBytes cap each edge's events
	// (edges.max_events_per_minute, edges.max_event_bytes).
	MaxEventsPerMinute int
	MaxEventBytes      int
	// Enrol and Auth are needed by the HTTP handlers (see Handler).
	Enrol Enroller
	Auth  EdgeAuth
	// Edge is what enrolment tells a new edge.
	Edge EdgeSettings

	// Clock drives republishing and timestamps (default clock.Real).
	Clock clock.Clock
	Log   *slog.Logger
}

// Service runs central's MQTT link.
type Service struct {
	o     Options
	log   *slog.Logger
	clock clock.Clock
	mqtt  paho.Client

	trigger chan struct{}
	// conn counts connections to the broker (set before linked). A
	// version is published again on a new connection (the broker may have
	// lost it), but once per connection: publishedConn is the connection
	// publishedVer went out on.
	conn          atomic.Int64
	publishedConn atomic.Int64
	// publishedVer is the version last published with a PUBACK.
	publishedVer atomic.Int64
	// linked: connected and subscribed (see onConnect).
	linked atomic.Bool
	// leading: Leader said yes at the last poll or publish.
	leading atomic.Bool

	mu   sync.RWMutex
	wire []byte // last encoded snapshot
	etag string
	ver  int64
	// snap is the last encoded snapshot, normalized (its devices are the
	// base of the next delta once published).
	snap allowlist.Snapshot

	// base is the snapshot the last published delta produced (Version 0:
	// none since this instance started publishing); only publish touches it.
	base        allowlist.Snapshot
	deltas      atomic.Int64
	deltaBytes  atomic.Int64
	deltaChange atomic.Int64

	// evq feeds eventLoop (nil: events are stored one by one); batch is
	// the store it writes to.
	evq     chan pendingEvent
	evStop  chan struct{} // closed when eventLoop returns
	batch   BatchEventStore
	batches atomic.Int64

	gate         gate
	rcpt         receipts
	receiptsSent atomic.Int64
	refused      atomic.Int64
	published    atomic.Int64
	skipped      atomic.Int64
	// followerBuilds counts snapshots built for HTTPS only, while another
	// instance leads.
	followerBuilds atomic.Int64
	events         atomic.Int64
	dups           atomic.Int64
}

// New checks opts. Nothing runs until Run.
func New(o Options) (*Service, error) {
	if o.Source == nil || o.Events == nil || o.Status == nil || o.Suspender == nil {
		return nil, errors.New("sync: Source, Events, Status and Suspender are required")
	}
	if len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("sync: no allowlist signing key")
	}
	if o.ClientID == "" {
		return nil, errors.New("sync: no MQTT client id")
	}
	if o.ValidFor <= 0 {
		o.ValidFor = 7 * 24 * time.Hour
	}
	if o.RepublishInterval <= 0 || o.RepublishInterval >= o.ValidFor {
		o.RepublishInterval = o.ValidFor / 4
	}
	if o.Topics == (topic.Topics{}) {
		o.Topics = topic.New("")
	}
	if o.MaxEventsPerMinute <= 0 {
		o.MaxEventsPerMinute = DefaultMaxEventsPerMinute
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, log: o.Log.With("component", "sync"), clock: o.Clock, trigger: make(chan struct{}, 1)}
	if b, ok := o.Events.(BatchEventStore); ok {
		s.batch, s.evq, s.evStop = b, make(chan pendingEvent, maxEventBatch), make(chan struct{})
	}
	return s, nil
}

// PublicKey is the key edges verify snapshots with.
func (s *Service) PublicKey() ed25519.PublicKey { return s.o.Key.Public().(ed25519.PublicKey) }

// Changed asks for a new snapshot now (coalesced: many calls while one is
// being built give one more snapshot). Call it after every change that
// affects enforcement.
func (s *Service) Changed() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Current returns the last encoded snapshot, its ETag and version (nil
// before the first build).
func (s *Service) Current() (wire []byte, etag string, version int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.wire, s.etag, s.ver
}

// Run connects to the broker and publishes and consumes until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	opts := paho.NewClientOptions().
		AddBroker(s.o.BrokerURL).
		SetClientID(s.o.ClientID).
		SetUsername(s.o.Username).
		SetPassword(s.o.Password).
		SetCleanSession(false).
		SetResumeSubs(true).
		SetOrderMatters(false).
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(s.onMessage).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.linked.Store(false)
			s.log.Warn("mqtt connection lost; reconnecting", "err", err)
		})
	if s.o.Dial != nil {
		dial := s.o.Dial
		opts.SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return dial() })
	}
	if s.o.TLS != nil {
		opts.SetTLSConfig(s.o.TLS)
	}
	s.mqtt = paho.NewClient(opts)
	s.mqtt.Connect()
	done := make(chan struct{})
	go func() { defer close(done); s.receiptLoop(ctx) }()
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		if s.evq != nil {
			s.eventLoop(ctx)
		}
	}()
	s.publishLoop(ctx)
	<-done
	<-evDone
	s.mqtt.Disconnect(500)
	return ctx.Err()
}

func (s *Service) onConnect(cl paho.Client) {
	s.log.Info("mqtt connected", "broker", s.o.BrokerURL, "client_id", s.o.ClientID)
	go func() {
		plain := []string{s.o.Topics.AllEvents(), s.o.Topics.AllStatus()}
		filters := map[string]byte{}
		for _, f := range plain {
			filters[s.subscription(f)] = 1
		}
		if s.o.SharedGroup != "" {
			// A session that subscribed plainly before would go on
			// receiving every message besides its share.
			if tok := cl.Unsubscribe(plain...); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				s.log.Warn("mqtt unsubscribe of unshared filters failed", "err", tok.Error())
			}
		}
		tok := cl.SubscribeMultiple(filters, s.onMessage)
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			s.log.Error("mqtt subscribe failed", "err", tok.Error())
		}
		// Publishing only from here on keeps clear of paho's resume of
		// its session store, which runs right after the connection is up
		// and must not share a packet with a new publish.
		s.conn.Add(1)
		s.linked.Store(true)
		// A broker that lost its retained messages gets the snapshot back
		// (once: a publish that raced with this one on the new
		// connection counts).
		s.Changed()
	}()
}

// subscription is the filter central subscribes with for topic filter f.
func (s *Service) subscription(f string) string {
	if s.o.SharedGroup == "" {
		return f
	}
	return "$share/" + s.o.SharedGroup + "/" + f
}

// publishLoop builds and publishes a snapshot at start, on Changed (only
// if the version moved since the last publish) and every
// RepublishInterval (always: valid_until moves on).
func (s *Service) publishLoop(ctx context.Context) {
	tick, stopTick := s.clock.Ticker(s.o.RepublishInterval)
	defer stopTick()
	var poll <-chan time.Time
	if s.o.Leader != nil {
		p, stopPoll := s.clock.Ticker(s.o.PollInterval)
		defer stopPoll()
		poll = p
	}
	retry := time.Duration(0)
	s.Changed()
	for {
		var after <-chan time.Time
		if retry > 0 {
			after = time.After(retry)
		}
		force := false
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		case <-tick:
			force = true
		case <-after:
			force = true
		case <-poll:
			was := s.leading.Load()
			now := s.isLeader(ctx)
			if now && !was {
				// Whatever the previous leader left retained may be
				// older than the store.
				force = true
			} else if !s.moved(ctx, now) {
				continue
			}
		}
		if err := s.publish(ctx, force); err != nil {
			s.log.Error("allowlist publish failed", "err", err)
			retry = min(max(2*retry, time.Second), 30*time.Second)
			continue
		}
		retry = 0
	}
}

// publish builds, signs and publishes one snapshot and waits for the
// PUBACK. Unless force is set, a version published already is not
// published again: Changed may be called for changes that did not affect
// enforcement, or several times for one change.
func (s *Service) publish(ctx context.Context, force bool) error {
	start := s.clock.Now()
	ver, devs, err := s.o.Source.Allowlist(ctx)
	if err != nil {
		return fmt.Errorf("read allowlist: %w", err)
	}
	if s.o.Leader != nil && !s.isLeader(ctx) {
		// A follower keeps its HTTPS copy current and leaves the broker
		// to the leader.
		if _, _, have := s.Current(); !force && have == ver {
			return nil
		}
		if err := s.encode(ver, devs); err != nil {
			return err
		}
		s.followerBuilds.Add(1)
		return nil
	}
	if !force && ver == s.publishedVer.Load() && s.conn.Load() == s.publishedConn.Load() {
		s.skipped.Add(1)
		return nil
	}
	if err := s.encode(ver, devs); err != nil {
		return err
	}
	wire, _, _ := s.Current()
	if s.mqtt == nil || !s.mqtt.IsConnectionOpen() || !s.linked.Load() {
		return errors.New("not connected to the broker (edges can fetch over HTTPS meanwhile)")
	}
	// Read once linked: the connection this publish goes out on, so the
	// trigger of its onConnect finds the version published already.
	conn := s.conn.Load()
	// Leadership is confirmed after the store was read, so an instance
	// that lost it meanwhile never publishes what it read.
	if s.o.Leader != nil && !s.isLeader(ctx) {
		return nil
	}
	tok := s.mqtt.Publish(s.o.Topics.Allowlist(), 1, true, wire)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("no PUBACK for the snapshot within 30s")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish allowlist: %w", err)
	}
	s.published.Add(1)
	s.publishedVer.Store(ver)
	s.publishedConn.Store(conn)
	s.log.Info("allowlist published", "version", ver, "devices", len(devs), "bytes", len(wire),
		"took", s.clock.Now().Sub(start).Round(time.Millisecond))
	return s.publishDelta(ctx)
}

// publishDelta publishes, retained, the delta from the snapshot the last
// delta produced to the snapshot just published (a republish without
// changes when there is none: the retained delta then still names the
// current version). It follows the full snapshot, so an edge that finds
// the delta does not fit its version and turns to the full snapshot finds
// one at least as new.
func (s *Service) publishDelta(ctx context.Context) error {
	s.mu.RLock()
	next := s.snap
	s.mu.RUnlock()
	base := s.base
	if base.Version == 0 || base.Version > next.Version {
		base = next
	}
	d, err := allowlist.NewDelta(base.Version, base.Devices, next)
	if err != nil {
		return fmt.Errorf("delta from version %d to %d: %w", base.Version, next.Version, err)
	}
	wire, err := allowlist.EncodeDelta(d, s.o.Key)
	if err != nil {
		return fmt.Errorf("encode delta from version %d to %d: %w", base.Version, next.Version, err)
	}
	tok := s.mqtt.Publish(s.o.Topics.AllowlistDelta(), 1, true, wire)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("no PUBACK for the delta within 30s")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish allowlist delta: %w", err)
	}
	s.base = next
	s.deltas.Add(1)
	s.deltaBytes.Store(int64(len(wire)))
	s.deltaChange.Store(int64(len(d.Upsert) + len(d.Remove)))
	s.log.Info("allowlist delta published", "base", d.Base, "version", d.Version,
		"changed", len(d.Upsert), "removed", len(d.Remove), "bytes", len(wire))
	return nil
}

// encode signs a snapshot of ver and makes it the one served over HTTPS.
func (s *Service) encode(ver int64, devs []allowlist.Device) error {
	now := s.clock.Now()
	snap := allowlist.Snapshot{Version: ver, Issued: now, ValidUntil: now.Add(s.o.ValidFor), Devices: devs}
	if err := snap.Normalize(); err != nil {
		return fmt.Errorf("allowlist version %d: %w", ver, err)
	}
	wire, err := allowlist.Encode(snap, s.o.Key)
	if err != nil {
		return fmt.Errorf("encode allowlist version %d: %w", ver, err)
	}
	s.mu.Lock()
	s.wire, s.ver, s.snap = wire, ver, snap
	s.etag = fmt.Sprintf(`"v%d-%d"`, ver, snap.Issued.UnixMilli())
	s.mu.Unlock()
	return nil
}

// isLeader asks the Leader (nil: always) and remembers the answer.
func (s *Service) isLeader(ctx context.Context) bool {
	if s.o.Leader == nil {
		return true
	}
	now := s.o.Leader.IsLeader(ctx)
	if was := s.leading.Swap(now); was != now {
		s.log.Info("allowlist publisher role changed", "leader", now)
	}
	return now
}

// Connected reports whether the MQTT link is up: connected and subscribed.
func (s *Service) Connected() bool { return s.linked.Load() }

// Leading reports whether this instance publishes the allowlist (always
// true without a Leader).
func (s *Service) Leading() bool { return s.o.Leader == nil || s.leading.Load() }

// moved reports whether the store's version differs from the one this
// instance last published (leading) or holds for HTTPS (following).
func (s *Service) moved(ctx context.Context, leading bool) bool {
	var ver int64
	if vs, ok := s.o.Source.(VersionSource); ok {
		v, err := vs.AllowlistVersion(ctx)
		if err != nil {
			s.log.Warn("allowlist version poll failed", "err", err)
			return false
		}
		ver = v
	} else {
		return true
	}
	if leading {
		return ver != s.publishedVer.Load()
	}
	_, _, have := s.Current()
	return ver != have
}

// onMessage handles events and status from edges. Messages are
// acknowledged only once handled, so a store failure makes the broker
// deliver them again after reconnecting. Events go to the batch writer
// when the store has one (see eventLoop).
func (s *Service) onMessage(_ paho.Client, m paho.Message) {
	edge, kind, ok := s.o.Topics.ParseEdge(m.Topic())
	if !ok {
		m.Ack()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.admit(ctx, edge, kind, m.Payload()); err != nil {
		if errors.Is(err, errTooLarge) {
			// Never acceptable: the edge may forget it. An event over
			// the rate cap gets no receipt, so the edge sends it again
			// later.
			if e, perr := event.Unmarshal(m.Payload()); perr == nil {
				s.receipt(edge, e.ID)
			}
		}
		if errors.Is(err, errRevoked) || errors.Is(err, errTooLarge) || errors.Is(err, errTooMany) {
			m.Ack()
		}
		// Else the store could not say: the broker delivers it again.
		return
	}
	if kind == topic.KindEvents && s.evq != nil {
		select {
		case s.evq <- pendingEvent{edge: edge, m: m}:
		case <-s.evStop:
			// Shutting down: unacknowledged, the broker delivers it again.
		}
		return
	}
	s.consume(ctx, edge, kind, m)
}

// consume stores one admitted message and acknowledges it once stored.
func (s *Service) consume(ctx context.Context, edge, kind string, m paho.Message) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
		}
		if kind == topic.KindEvents {
			err = s.handleEvent(ctx, edge, m.Payload())
		} else {
			err = s.handleStatus(ctx, edge, m.Payload())
		}
		if err == nil || errors.Is(err, errMalformed) {
			break
		}
	}
	if err != nil && !errors.Is(err, errMalformed) {
		s.log.Error("edge message not stored; the broker will redeliver it", "edge", edge, "topic", m.Topic(), "err", err)
		return
	}
	if err != nil {
		s.log.Warn("malformed message from edge dropped", "edge", edge, "topic", m.Topic(), "err", err)
	}
	m.Ack()
}

// pendingEvent is an admitted event message waiting for the batch writer.
type pendingEvent struct {
	edge string
	m    paho.Message
}

// maxEventBatch bounds one transaction of events (the broker hands
// central at most max_inflight_messages unacknowledged ones anyway).
const maxEventBatch = 256

// eventLoop stores events in batches: it takes whatever has arrived since
// the last commit (without waiting for more, so a lone event is not
// delayed), stores it in one transaction, then handles and acknowledges
// each event. Under load the batches grow by themselves while a commit
// is under way; each acknowledgement still follows its commit.
func (s *Service) eventLoop(ctx context.Context) {
	defer close(s.evStop)
	batch := make([]pendingEvent, 0, maxEventBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			// Unacknowledged: the broker delivers them again.
			return
		case p := <-s.evq:
			batch = append(batch, p)
		}
	more:
		for len(batch) < maxEventBatch {
			select {
			case p := <-s.evq:
				batch = append(batch, p)
			default:
				break more
			}
		}
		s.storeBatch(batch)
	}
}

// storeBatch stores one batch of event messages and acknowledges each one
// handled. If the batch cannot be stored it falls back to storing its
// events one by one, so one bad event cannot hold up the others.
func (s *Service) storeBatch(batch []pendingEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs := make([]event.Event, 0, len(batch))
	keep := batch[:0:0]
	for _, p := range batch {
		e, err := s.parseEvent(p.edge, p.m.Payload())
		if err != nil {
			s.log.Warn("malformed message from edge dropped", "edge", p.edge, "topic", p.m.Topic(), "err", err)
			p.m.Ack()
			continue
		}
		evs = append(evs, e)
		keep = append(keep, p)
	}
	if len(evs) == 0 {
		return
	}
	var inserted []bool
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
		}
		if inserted, err = s.batch.AddEvents(ctx, evs); err == nil {
			break
		}
	}
	if err != nil {
		s.log.Warn("event batch not stored; storing its events one by one", "events", len(evs), "err", err)
		for _, p := range keep {
			s.consume(ctx, p.edge, topic.KindEvents, p.m)
		}
		return
	}
	s.batches.Add(1)
	// What follows the insert (suspension decisions, receipts) takes
	// store reads of its own: up to postWorkers events at a time, as
	// when every message had its own handler.
	var wg sync.WaitGroup
	sem := make(chan struct{}, postWorkers)
	for i, e := range evs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if attempt > 0 {
					time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
				}
				if err = s.stored(ctx, keep[i].edge, e, inserted[i]); err == nil {
					break
				}
			}
			if err != nil {
				s.log.Error("edge event not handled; the broker will redeliver it", "edge", keep[i].edge, "event_id", e.ID, "err", err)
				return
			}
			keep[i].m.Ack()
		}()
	}
	wg.Wait()
}

var (
	errMalformed = errors.New("malformed")
	errNoPuback  = errors.New("no PUBACK within 10s")
)

// postWorkers bounds the events of a batch handled at once after their
// insert.
const postWorkers = 8

func (s *Service) handleEvent(ctx context.Context, edge string, payload []byte) error {
	e, err := s.parseEvent(edge, payload)
	if err != nil {
		return err
	}
	inserted, err := s.o.Events.AddEvent(ctx, e)
	if err != nil {
		return fmt.Errorf("store event %s: %w", e.ID, err)
	}
	return s.stored(ctx, edge, e, inserted)
}

// parseEvent decodes an event from edge's topic; the topic's edge id wins
// over the payload's, and a delivery summary keeps only what central
// understands (normaliseDelivery), whichever path stores it.
func (s *Service) parseEvent(edge string, payload []byte) (event.Event, error) {
	e, err := event.Unmarshal(payload)
	if err != nil {
		return e, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if e.Edge != edge {
		s.log.Warn("event names another edge; using the topic's", "edge", edge, "claimed", e.Edge, "event_id", e.ID)
		e.Edge = edge
	}
	if e.Kind == event.Delivery {
		normaliseDelivery(&e)
	}
	return e, nil
}

// stored does what follows storing event e (inserted: it was new):
// suspension decisions and the receipt to the edge.
func (s *Service) stored(ctx context.Context, edge string, e event.Event, inserted bool) error {
	s.events.Add(1)
	if !inserted {
		s.dups.Add(1)
		if e.Kind != event.NDRUndeliverable {
			s.receipt(edge, e.ID)
			return nil
		}
		// A redelivery after the suspension step failed must still get
		// it; SuspendByEdge is idempotent.
	} else {
		s.log.Info("edge event", "edge", edge, "event_id", e.ID, "kind", e.Kind, "device", e.Device, "queue_id", e.QueueID, "reason", e.Reason)
	}
	if inserted && (e.Kind == event.Delivery || e.Kind == event.NDR) && e.Device != "" {
		if err := s.o.Suspender.EvidenceArrived(ctx, edge, e.Device); err != nil {
			return fmt.Errorf("suspension requests of %s: %w", e.Device, err)
		}
	}
	if e.Kind == event.NDRUndeliverable && e.Device != "" {
		// The event is stored, so a redelivery would not retry this: the
		// error makes the caller retry here, then it is left to staff
		// (the event is visible).
		if _, err := s.o.Suspender.SuspendByEdge(ctx, registration.EdgeReport{Edge: edge, Device: e.Device, Sender: ndrTarget(e),
			QueueID: e.QueueID, EventID: e.ID}); err != nil {
			return fmt.Errorf("suspension report for %s: %w", e.Device, err)
		}
	}
	s.receipt(edge, e.ID)
	return nil
}

// ndrTarget is the address the undeliverable NDR was sent to: the device's
// sender.
func ndrTarget(e event.Event) string {
	if e.Sender != "" {
		return e.Sender
	}
	return e.Recipient
}

func (s *Service) handleStatus(ctx context.Context, edge string, payload []byte) error {
	st, err := topic.UnmarshalStatus(payload)
	if err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	if st.Edge != edge {
		return fmt.Errorf("%w: status of %q on %s's topic", errMalformed, st.Edge, edge)
	}
	// A last will (offline) carries no time: the edge was last seen at
	// its previous heartbeat, which the store keeps.
	if err := s.o.Status.UpdateEdgeStatus(ctx, st); err != nil {
		return fmt.Errorf("store status of %s: %w", edge, err)
	}
	return nil
}

// Stats are counters for metrics and tests.
type Stats struct {
	// Skipped counts builds not published because their version was
	// published already; Refused messages from revoked edges or beyond
	// the per-edge caps; Receipted event ids sent back in receipts.
	Published, Skipped, Refused, Events, Duplicates, Receipted int64
	// FollowerBuilds counts snapshots built only for HTTPS while another
	// instance led.
	FollowerBuilds int64
	// EventBatches counts transactions of the batch writer.
	EventBatches int64
	// Deltas counts deltas published; DeltaBytes and DeltaChanges are the
	// wire size and the number of devices changed or removed of the last.
	Deltas, DeltaBytes, DeltaChanges int64
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{Published: s.published.Load(), Skipped: s.skipped.Load(), Refused: s.refused.Load(), Receipted: s.receiptsSent.Load(), Events: s.events.Load(), Duplicates: s.dups.Load(), FollowerBuilds: s.followerBuilds.Load(),
		EventBatches: s.batches.Load(), Deltas: s.deltas.Load(), DeltaBytes: s.deltaBytes.Load(), DeltaChanges: s.deltaChange.Load()}
}
