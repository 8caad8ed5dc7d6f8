// Package broker runs central's embedded MQTT broker (mochi-mqtt) with the
// access rules of the sync contract (docs/CONTRACT.md):
//
//   - Anonymous clients are refused. Edges log in with their edge id as
//     username and the password issued at enrolment (stored only as a hash),
//     and must use their edge id as client id, so one edge can never take
//     over another edge's persistent session.
//   - An edge may subscribe to the allowlist topic and its own receipt
//     topic and nothing else, and
//     publish only to its own events and status topics; its last will must
//     be its own status topic. A publish elsewhere disconnects it (MQTT
//     3.1.1 has no negative PUBACK) and is never delivered.
//   - Edges are refused until central's own client has subscribed, so no
//     event is acknowledged to an edge while nobody would receive it.
//   - Only central publishes the allowlist. Central's own client reaches the
//     broker in-process through Dial (no network, no password) and is the
//     only client with rights beyond one edge.
package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/postern/postern/shared/topic"
)

// EdgeAuth looks up an edge's credentials. It returns the hash stored for
// the edge whose MQTT username is username (see HashPassword), and an error
// when there is no such edge or it is not enrolled.
type EdgeAuth interface {
	EdgePasswordHash(ctx context.Context, username string) (hash string, err error)
}

// Options configures the broker.
type Options struct {
	// Listen is the TCP address for edges (host:port; port 0 picks one).
	Listen string
	// TLS, when set, makes the listener speak MQTT over TLS.
	TLS *tls.Config
	// Topics is the contract's topic set.
	Topics topic.Topics
	// CentralClientID is the client id central's own client uses through Dial.
	CentralClientID string
	// Edges checks edge credentials.
	Edges EdgeAuth
	// MaxPacketSize bounds any MQTT packet (default 32 MiB; a 100,000-device
	// snapshot is about 1.2 MB).
	MaxPacketSize uint32
	Log           *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	srv *mqtt.Server
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
	inproc map[net.Conn]struct{} // server ends of Dial connections
	closed bool
}

const inprocListener = "inproc"

// Start starts the broker listening on opts.Listen.
func Start(opts Options) (*Broker, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Edges == nil {
		return nil, errors.New("broker: no edge credential source")
	}
	if opts.CentralClientID == "" {
		return nil, errors.New("broker: no central client id")
	}
	if opts.MaxPacketSize == 0 {
		opts.MaxPacketSize = 32 << 20
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = opts.MaxPacketSize
	// Central is the only subscriber to many topics; keep enough room for
	// a burst of events from a whole fleet reconnecting.
	caps.MaximumClientWritesPending = 64 * 1024
	caps.Compatibilities.ObscureNotAuthorized = true
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       quiet(opts.Log),
	})
	h := &hook{topics: opts.Topics, centralID: opts.CentralClientID, edges: opts.Edges, log: opts.Log}
	if err := srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", opts.Listen, err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	if err := srv.AddListener(listeners.NewNet("edges", ln)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: add listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	opts.Log.Info("mqtt broker listening", "addr", ln.Addr().String(), "tls", opts.TLS != nil)
	return &Broker{srv: srv, ln: ln, log: opts.Log}, nil
}

// quiet passes the broker's own warnings and errors on, not its chatter.
func quiet(l *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{l.Handler(), slog.LevelWarn}).With("component", "mqtt-broker")
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(as), f.min}
}

func (f levelFilter) WithGroup(name string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(name), f.min}
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.ln.Addr() }

// Dial opens an in-process connection for central's own MQTT client. The
// connection counts as central: it needs no password but must use the
// configured central client id.
func (b *Broker) Dial() (net.Conn, error) {
	client, server := bufferedPipe()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("broker: closed")
	}
	if b.inproc == nil {
		b.inproc = map[net.Conn]struct{}{}
	}
	b.inproc[server] = struct{}{}
	b.mu.Unlock()
	go func() {
		defer func() {
			b.mu.Lock()
			delete(b.inproc, server)
			b.mu.Unlock()
		}()
		if err := b.srv.EstablishConnection(inprocListener, server); err != nil && !isClosed(err) {
			b.log.Debug("in-process mqtt connection ended", "err", err)
		}
	}()
	return client, nil
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, packets.ErrServerShuttingDown) ||
		strings.Contains(err.Error(), "io: read/write on closed pipe") || strings.Contains(err.Error(), "EOF")
}

// Close stops the broker and disconnects every client.
func (b *Broker) Close() error {
	// In-process connections belong to no listener, so the server would
	// wait for them forever: end them first.
	b.mu.Lock()
	b.closed = true
	for c := range b.inproc {
		c.Close()
	}
	b.mu.Unlock()
	return b.srv.Close()
}

// Kick drops the connection and the session of the client with id (an
// edge that was revoked). It reports whether there was one.
func (b *Broker) Kick(id string) bool {
	cl, ok := b.srv.Clients.Get(id)
	if !ok || cl.Net.Listener == inprocListener {
		return false
	}
	b.srv.UnsubscribeClient(cl)
	cl.Stop(errors.New("edge revoked"))
	b.srv.Clients.Delete(id)
	b.log.Warn("mqtt: revoked edge disconnected", "client_id", id)
	return true
}

// HashPassword returns the stored form of an edge's MQTT password. The
// passwords are 256-bit random strings issued by central, so a plain
// SHA-256 is enough (no dictionary to defend against) and keeps a
// reconnect storm of a whole fleet cheap.
func HashPassword(password string) string {
	sum := sha256.Sum256([]byte(password))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckPassword reports whether password matches hash (constant time).
func CheckPassword(hash, password string) bool {
	want := HashPassword(password)
	return len(hash) == len(want) && subtle.ConstantTimeCompare([]byte(hash), []byte(want)) == 1
}

// hook enforces authentication and the ACL.
type hook struct {
	mqtt.HookBase
	topics    topic.Topics
	centralID string
	edges     EdgeAuth
	log       *slog.Logger
	ready     atomic.Bool // central has subscribed
}

func (h *hook) ID() string { return "postern-acl" }

func (h *hook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSubscribed
}

// OnSubscribed opens the broker to edges once central's client has
// subscribed: an event an edge publishes before central's subscription
// exists would be acknowledged and dropped (the embedded broker keeps no
// sessions across restarts).
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if h.isCentral(cl) && !h.ready.Load() {
		h.ready.Store(true)
		h.log.Info("mqtt broker open to edges (central subscribed)")
	}
}

func (h *hook) isCentral(cl *mqtt.Client) bool {
	return cl.Net.Listener == inprocListener && cl.ID == h.centralID
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if cl.Net.Listener == inprocListener {
		if cl.ID != h.centralID {
			h.log.Warn("mqtt: refused in-process client with wrong client id", "client_id", cl.ID)
			return false
		}
		return true
	}
	refuse := func(why string) bool {
		h.log.Warn("mqtt: refused connection", "remote", cl.Net.Remote, "username", user, "client_id", cl.ID, "why", why)
		return false
	}
	if !h.ready.Load() {
		return refuse("central not subscribed yet; retry")
	}
	if user == "" || !pk.Connect.PasswordFlag {
		return refuse("no credentials")
	}
	if err := topic.ValidEdgeID(user); err != nil {
		return refuse("username is not an edge id")
	}
	if user == h.centralID {
		return refuse("username is central's client id")
	}
	if cl.ID != user {
		return refuse("client id must equal the edge id")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hash, err := h.edges.EdgePasswordHash(ctx, user)
	if err != nil {
		return refuse(fmt.Sprintf("lookup: %v", err))
	}
	if !CheckPassword(hash, string(pk.Connect.Password)) {
		return refuse("wrong password")
	}
	if pk.Connect.WillFlag && pk.Connect.WillTopic != h.topics.Status(user) {
		return refuse("last will must be the edge's own status topic")
	}
	return true
}

func (h *hook) OnACLCheck(cl *mqtt.Client, name string, write bool) bool {
	if h.isCentral(cl) {
		return true
	}
	edge := string(cl.Properties.Username)
	if topic.ValidEdgeID(edge) != nil || cl.ID != edge || cl.Net.Listener == inprocListener {
		return false
	}
	ok := false
	if write {
		ok = name == h.topics.Events(edge) || name == h.topics.Status(edge)
	} else {
		ok = name == h.topics.Allowlist() || name == h.topics.AllowlistDelta() || name == h.topics.Receipt(edge)
	}
	if !ok {
		h.log.Warn("mqtt: denied", "edge", edge, "topic", name, "write", write)
	}
	return ok
}
