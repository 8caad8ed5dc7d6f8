// Package dynsec provisions edge accounts on an external Mosquitto through
// its dynamic security plugin, managed over MQTT: commands are published to
// $CONTROL/dynamic-security/v1 and answered on
// $CONTROL/dynamic-security/v1/response.
//
// Each edge gets a client whose username is its edge id and a role of its
// own, postern-edge-<id>, whose ACL is the sync contract's (docs/CONTRACT.md):
// subscribe to the allowlist topics and the edge's own receipt topic,
// publish to the edge's own events and status topics, nothing else. The
// role is per edge because Mosquitto 2.0's plugin has no %u substitution.
// The plugin's default access (publish denied, subscribe denied) covers
// every other topic, $CONTROL included.
//
// Only accounts that carry their postern-edge-<id> role are ever changed or
// deleted: an edge id that names another account on the broker (an
// administrator, a central instance, another application) is refused, so
// creating an edge in central's console can never take over an account.
package dynsec

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/postern/postern/shared/topic"
)

// Topics of the plugin's control interface.
const (
	ControlTopic  = "$CONTROL/dynamic-security/v1"
	ResponseTopic = ControlTopic + "/response"
)

// RolePrefix starts the name of every edge role.
const RolePrefix = "postern-edge-"

// textName marks the clients this package creates (shown by
// mosquitto_ctrl dynsec getClient).
const textName = "postern edge"

// ErrForeignAccount: a broker account with the edge's name exists and is
// not a postern edge account.
var ErrForeignAccount = errors.New("dynsec: a broker account with this name exists and is not a postern edge")

// ErrRefused: the broker refused the provisioning account's credentials.
var ErrRefused = errors.New("dynsec: credentials refused by the broker")

// Error is a command the plugin answered with an error.
type Error struct {
	Command string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("dynsec %s: %s", e.Command, e.Message) }

func isNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && strings.Contains(strings.ToLower(e.Message), "not found")
}

// Options configure a Provisioner.
type Options struct {
	// BrokerURL is the broker (tcp:// or tls://).
	BrokerURL string
	// Username and Password are the provisioning account's; it needs only
	// the plugin's control topics (see deploy/mosquitto/dynsec-bootstrap.sh).
	// The broker forces the client id to the username.
	Username string
	Password string
	TLS      *tls.Config
	// Topics is the contract's topic set (the edge ACLs use its prefix).
	Topics topic.Topics
	// Timeout bounds one command round trip (default 10s).
	Timeout time.Duration
	Log     *slog.Logger
}

// Provisioner creates and deletes edge accounts. It keeps one MQTT
// connection, reconnecting when it drops; commands fail while it is down.
type Provisioner struct {
	o    Options
	log  *slog.Logger
	mqtt paho.Client

	mu      sync.Mutex
	pending map[string]chan response
	ready   chan struct{} // closed once subscribed to the response topic
	once    sync.Once
	// problem says why the link is not ready (for the caller's error).
	problem atomic.Value
	// refused: the broker turned the last connection attempt down (wrong
	// credentials); commands fail at once instead of waiting.
	refused atomic.Bool
}

type command map[string]any

type response struct {
	Command         string          `json:"command"`
	Error           string          `json:"error"`
	Data            json.RawMessage `json:"data"`
	CorrelationData string          `json:"correlationData"`
}

// Start connects to the broker; it returns at once and the connection is
// made (and remade) in the background. Commands wait up to their timeout
// for it.
func Start(o Options) (*Provisioner, error) {
	if o.BrokerURL == "" || o.Username == "" {
		return nil, errors.New("dynsec: broker URL and username are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Topics == (topic.Topics{}) {
		o.Topics = topic.New("")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &Provisioner{o: o, log: o.Log.With("component", "dynsec"), pending: map[string]chan response{}, ready: make(chan struct{})}
	opts := paho.NewClientOptions().AddBroker(o.BrokerURL).
		SetClientID(o.Username).SetUsername(o.Username).SetPassword(o.Password).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(p.onConnect).
		SetConnectionNotificationHandler(p.onNotification).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			p.log.Warn("dynsec: connection to the broker lost; reconnecting", "err", err)
		})
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	p.mqtt = paho.NewClient(opts)
	p.mqtt.Connect()
	return p, nil
}

func (p *Provisioner) onConnect(cl paho.Client) {
	go func() {
		tok := cl.Subscribe(ResponseTopic, 1, p.onResponse)
		if !tok.WaitTimeout(p.o.Timeout) || tok.Error() != nil {
			p.problem.Store(fmt.Sprintf("subscribing to %s failed: %v", ResponseTopic, tok.Error()))
			p.log.Error("dynsec: subscribing to the response topic failed", "err", tok.Error())
			return
		}
		if st, ok := tok.(*paho.SubscribeToken); ok {
			if codes := st.Result(); len(codes) != 1 || codes[ResponseTopic] >= 0x80 {
				p.problem.Store("the broker refused the subscription to " + ResponseTopic + ": the account lacks the postern-dynsec role (dynsec-bootstrap.sh)")
				p.log.Error("dynsec: the broker refused the response topic; the account lacks the dynsec control role", "username", p.o.Username)
				return
			}
		}
		p.log.Info("dynsec: connected", "broker", p.o.BrokerURL, "username", p.o.Username)
		p.once.Do(func() { close(p.ready) })
	}()
}

// onNotification notes why connection attempts fail.
func (p *Provisioner) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	switch n := n.(type) {
	case paho.ConnectionNotificationFailed:
		p.problem.Store(fmt.Sprintf("the broker refused the connection: %v", n.Reason))
		p.refused.Store(errors.Is(n.Reason, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(n.Reason, packets.ErrorRefusedNotAuthorised))
	case paho.ConnectionNotificationConnected:
		p.refused.Store(false)
	}
}

func (p *Provisioner) onResponse(_ paho.Client, m paho.Message) {
	var body struct {
		Responses []response `json:"responses"`
	}
	if err := json.Unmarshal(m.Payload(), &body); err != nil {
		p.log.Warn("dynsec: unreadable response", "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range body.Responses {
		if ch, ok := p.pending[r.CorrelationData]; ok {
			delete(p.pending, r.CorrelationData)
			ch <- r
		}
	}
}

// Close disconnects.
func (p *Provisioner) Close() { p.mqtt.Disconnect(250) }

// run sends cmds in one message and returns the plugin's answer to each,
// in order; errs[i] is the plugin's error for cmds[i] (nil: done). err is
// set when the round trip itself failed, and then nothing is known about
// what the plugin did.
func (p *Provisioner) run(ctx context.Context, cmds ...command) (data []json.RawMessage, errs []error, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	defer cancel()
	notReady := func(err error) error {
		why, _ := p.problem.Load().(string)
		if why == "" {
			why = "not connected"
		}
		return fmt.Errorf("dynsec: broker %s as %s: %s: %w", p.o.BrokerURL, p.o.Username, why, err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-p.ready:
			break wait
		case <-ctx.Done():
			return nil, nil, notReady(ctx.Err())
		case <-tick.C:
			if p.refused.Load() {
				return nil, nil, notReady(ErrRefused)
			}
		}
	}
	ids := make([]string, len(cmds))
	chans := make([]chan response, len(cmds))
	p.mu.Lock()
	for i, c := range cmds {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		ids[i] = hex.EncodeToString(b)
		c["correlationData"] = ids[i]
		chans[i] = make(chan response, 1)
		p.pending[ids[i]] = chans[i]
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, id := range ids {
			delete(p.pending, id)
		}
		p.mu.Unlock()
	}()
	payload, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		return nil, nil, err
	}
	tok := p.mqtt.Publish(ControlTopic, 1, false, payload)
	select {
	case <-tok.Done():
		if tok.Error() != nil {
			return nil, nil, fmt.Errorf("dynsec: publishing %s: %w", cmds[0]["command"], tok.Error())
		}
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("dynsec: publishing %s: %w", cmds[0]["command"], ctx.Err())
	}
	data, errs = make([]json.RawMessage, len(cmds)), make([]error, len(cmds))
	for i, ch := range chans {
		select {
		case r := <-ch:
			data[i] = r.Data
			if r.Error != "" {
				errs[i] = &Error{Command: r.Command, Message: r.Error}
			}
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("dynsec: no answer to %s from the broker (does %s have the dynsec control role?): %w", cmds[i]["command"], p.o.Username, ctx.Err())
		}
	}
	return data, errs, nil
}

// one runs a single command.
func (p *Provisioner) one(ctx context.Context, c command) (json.RawMessage, error) {
	data, errs, err := p.run(ctx, c)
	if err != nil {
		return nil, err
	}
	return data[0], errs[0]
}

// RoleName is the role of edge id.
func RoleName(id string) string { return RolePrefix + id }

// EdgeACL is the ACL of edge id's role: the sync contract's rights and
// nothing more. Subscribing under the allowlist topic is allowed as a
// pattern so that further allowlist messages (deltas) published there by
// central need no new ACL; only central may publish there. Receiving is
// granted explicitly, so the edges work on a broker whose default denies
// it.
func EdgeACL(t topic.Topics, id string) []map[string]any {
	acl := func(typ, topic string) map[string]any {
		return map[string]any{"acltype": typ, "topic": topic, "allow": true}
	}
	return []map[string]any{
		acl("subscribeLiteral", t.Allowlist()),
		acl("subscribePattern", t.Allowlist()+"/#"),
		acl("subscribeLiteral", t.Receipt(id)),
		acl("publishClientReceive", t.Allowlist()+"/#"),
		acl("publishClientReceive", t.Receipt(id)),
		acl("publishClientSend", t.Events(id)),
		acl("publishClientSend", t.Status(id)),
	}
}

type clientInfo struct {
	Username string `json:"username"`
	TextName string `json:"textname"`
	Disabled bool   `json:"disabled"`
	Roles    []struct {
		Rolename string `json:"rolename"`
	} `json:"roles"`
}

func (c clientInfo) isEdge() bool {
	return slices.ContainsFunc(c.Roles, func(r struct {
		Rolename string `json:"rolename"`
	}) bool {
		return r.Rolename == RoleName(c.Username)
	})
}

// client returns the account username; found is false when there is none.
func (p *Provisioner) client(ctx context.Context, username string) (c clientInfo, found bool, err error) {
	data, err := p.one(ctx, command{"command": "getClient", "username": username})
	if isNotFound(err) {
		return clientInfo{}, false, nil
	}
	if err != nil {
		return clientInfo{}, false, err
	}
	var body struct {
		Client clientInfo `json:"client"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return clientInfo{}, false, fmt.Errorf("dynsec getClient %s: %w", username, err)
	}
	return body.Client, true, nil
}

// CreateEdge makes the broker account of edge id with password (as issued
// at enrolment): the client, username = client id = id, with its role.
// An existing account of the same edge (re-enrolment) is replaced, which
// disconnects it; an existing account that is not an edge's is refused
// (ErrForeignAccount).
func (p *Provisioner) CreateEdge(ctx context.Context, id, password string) error {
	if err := topic.ValidEdgeID(id); err != nil {
		return fmt.Errorf("dynsec: %w", err)
	}
	if password == "" {
		return errors.New("dynsec: empty password")
	}
	c, found, err := p.client(ctx, id)
	if err != nil {
		return err
	}
	if found && !c.isEdge() {
		return fmt.Errorf("edge %s: %w", id, ErrForeignAccount)
	}
	cmds := []command{
		{"command": "deleteClient", "username": id},
		{"command": "deleteRole", "rolename": RoleName(id)},
		{"command": "createRole", "rolename": RoleName(id), "textname": "postern edge " + id, "acls": EdgeACL(p.o.Topics, id)},
		{"command": "createClient", "username": id, "password": password, "clientid": id, "textname": textName,
			"roles": []map[string]any{{"rolename": RoleName(id)}}},
	}
	_, errs, err := p.run(ctx, cmds...)
	if err != nil {
		return fmt.Errorf("edge %s: %w", id, err)
	}
	for i, e := range errs {
		if e != nil && !(i < 2 && isNotFound(e)) {
			return fmt.Errorf("edge %s: %w", id, e)
		}
	}
	p.log.Info("dynsec: broker account of edge created", "edge", id)
	return nil
}

// DeleteEdge removes edge id's account and role; the broker disconnects
// it. A missing account is not an error; an account that is not an
// edge's is left alone (ErrForeignAccount).
func (p *Provisioner) DeleteEdge(ctx context.Context, id string) error {
	if err := topic.ValidEdgeID(id); err != nil {
		return fmt.Errorf("dynsec: %w", err)
	}
	c, found, err := p.client(ctx, id)
	if err != nil {
		return err
	}
	if found && !c.isEdge() {
		return fmt.Errorf("edge %s: %w", id, ErrForeignAccount)
	}
	_, errs, err := p.run(ctx,
		command{"command": "deleteClient", "username": id},
		command{"command": "deleteRole", "rolename": RoleName(id)})
	if err != nil {
		return fmt.Errorf("edge %s: %w", id, err)
	}
	for _, e := range errs {
		if e != nil && !isNotFound(e) {
			return fmt.Errorf("edge %s: %w", id, e)
		}
	}
	if found {
		p.log.Info("dynsec: broker account of edge deleted", "edge", id)
	}
	return nil
}

// Edges lists the usernames of the edge accounts on the broker.
func (p *Provisioner) Edges(ctx context.Context) ([]string, error) {
	data, err := p.one(ctx, command{"command": "listClients", "verbose": true})
	if err != nil {
		return nil, err
	}
	var body struct {
		Clients []clientInfo `json:"clients"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return nil, fmt.Errorf("dynsec listClients: %w", err)
	}
	var out []string
	for _, c := range body.Clients {
		if c.isEdge() {
			out = append(out, c.Username)
		}
	}
	return out, nil
}

// Prune deletes the edge accounts for which keep says false (revoked or
// unknown edges), so that a revocation whose deletion failed at the time
// still takes effect. It returns the ids deleted.
func (p *Provisioner) Prune(ctx context.Context, keep func(ctx context.Context, id string) (bool, error)) ([]string, error) {
	ids, err := p.Edges(ctx)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, id := range ids {
		ok, err := keep(ctx, id)
		if err != nil {
			return gone, fmt.Errorf("dynsec prune: edge %s: %w", id, err)
		}
		if ok {
			continue
		}
		if err := p.DeleteEdge(ctx, id); err != nil {
			return gone, err
		}
		gone = append(gone, id)
	}
	return gone, nil
}
