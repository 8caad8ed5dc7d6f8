package dynsec_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/broker/dynsec"
)

func provisioner(t *testing.T, env *brokertest.Env) *dynsec.Provisioner {
	t.Helper()
	env.Password(brokertest.CentralID)
	p, err := dynsec.Start(dynsec.Options{BrokerURL: env.URL, Username: brokertest.CentralID + "-dynsec",
		Password: env.DynsecPassword(brokertest.CentralID), Topics: env.Topics, Timeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

type inbox struct {
	mu   sync.Mutex
	msgs map[string][]string
}

func (in *inbox) add(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs[m.Topic()] = append(in.msgs[m.Topic()], string(m.Payload()))
}

func (in *inbox) has(topic, payload string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, p := range in.msgs[topic] {
		if p == payload {
			return true
		}
	}
	return false
}

func (in *inbox) wait(topic, payload string) bool {
	for range 250 {
		if in.has(topic, payload) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func connect(env *brokertest.Env, user, pw string, in *inbox) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(env.URL).SetClientID(user).SetUsername(user).SetPassword(pw).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if in != nil {
		o.SetDefaultPublishHandler(in.add)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timeout")
	}
	return c, tok.Error()
}

func subscribe(t *testing.T, c paho.Client, filter string) (granted bool) {
	t.Helper()
	tok := c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	// paho keys a shared subscription's result without its $share/ part.
	codes := tok.(*paho.SubscribeToken).Result()
	if len(codes) != 1 {
		t.Fatalf("subscribe %s: results %v", filter, codes)
	}
	for _, c := range codes {
		return c < 0x80
	}
	return false
}

func publish(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// Enrolment makes an edge account the edge can use at once, confined to
// its own topics; revocation deletes it and disconnects the edge; an id
// naming another broker account is refused and that account left alone.
func TestProvisionEdges(t *testing.T) {
	env := brokertest.Mosquitto(t)
	p := provisioner(t, env)
	ctx := context.Background()
	tp := env.Topics

	central := &inbox{msgs: map[string][]string{}}
	cc, err := connect(env, brokertest.CentralID, env.Password(brokertest.CentralID), central)
	if err != nil {
		t.Fatalf("central: %v", err)
	}
	defer cc.Disconnect(100)
	if !subscribe(t, cc, "$share/postern-central/"+tp.AllEvents()) || !subscribe(t, cc, tp.AllStatus()) {
		t.Fatal("central's subscriptions refused")
	}

	if err := p.CreateEdge(ctx, "edge-a", "secret-a-0123456789"); err != nil {
		t.Fatalf("create edge-a: %v", err)
	}
	if err := p.CreateEdge(ctx, "edge-b", "secret-b-0123456789"); err != nil {
		t.Fatalf("create edge-b: %v", err)
	}
	if _, err := connect(env, "edge-a", "wrong", nil); err == nil {
		t.Fatal("edge-a connected with a wrong password")
	}
	ain := &inbox{msgs: map[string][]string{}}
	a, err := connect(env, "edge-a", "secret-a-0123456789", ain)
	if err != nil {
		t.Fatalf("edge-a with its enrolment password: %v", err)
	}
	defer a.Disconnect(100)
	bin := &inbox{msgs: map[string][]string{}}
	b, err := connect(env, "edge-b", "secret-b-0123456789", bin)
	if err != nil {
		t.Fatalf("edge-b: %v", err)
	}
	defer b.Disconnect(100)

	for _, f := range []string{tp.Allowlist(), tp.Receipt("edge-a")} {
		if !subscribe(t, a, f) {
			t.Errorf("edge-a may not subscribe to %s", f)
		}
	}
	for _, f := range []string{tp.Receipt("edge-b"), tp.Events("edge-b"), tp.AllEvents(), tp.Prefix() + "/#", "#",
		"$share/x/" + tp.AllEvents(), dynsec.ResponseTopic} {
		if subscribe(t, a, f) {
			t.Errorf("edge-a may subscribe to %s", f)
		}
	}
	if !subscribe(t, b, tp.Allowlist()) {
		t.Fatal("edge-b may not subscribe to the allowlist")
	}

	publish(t, a, tp.Events("edge-a"), "a-own")
	publish(t, a, tp.Events("edge-b"), "a-as-b")
	publish(t, a, tp.Allowlist(), "a-forged-allowlist")
	publish(t, a, tp.Receipt("edge-b"), "a-forged-receipt")
	// An edge cannot use the plugin to make itself an account.
	publish(t, a, dynsec.ControlTopic, `{"commands":[{"command":"createClient","username":"evil","password":"evil-password"}]}`)
	publish(t, b, tp.Events("edge-b"), "b-own")
	publish(t, cc, tp.Allowlist(), "snapshot-1")
	if !central.wait(tp.Events("edge-a"), "a-own") || !central.wait(tp.Events("edge-b"), "b-own") {
		t.Fatal("central did not get the edges' own events")
	}
	if !ain.wait(tp.Allowlist(), "snapshot-1") || !bin.wait(tp.Allowlist(), "snapshot-1") {
		t.Fatal("edges did not get central's allowlist")
	}
	time.Sleep(300 * time.Millisecond)
	if central.has(tp.Events("edge-b"), "a-as-b") {
		t.Error("edge-a published as edge-b")
	}
	if bin.has(tp.Allowlist(), "a-forged-allowlist") {
		t.Error("edge-a published the allowlist")
	}
	if _, err := connect(env, "evil", "evil-password", nil); err == nil {
		t.Error("an edge created an account through $CONTROL")
	}
	ids, err := p.Edges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[edge-a edge-b]" {
		t.Errorf("edge accounts = %v, want [edge-a edge-b]", ids)
	}

	// Re-enrolment replaces the password.
	if err := p.CreateEdge(ctx, "edge-b", "secret-b-new-0123456789"); err != nil {
		t.Fatalf("re-create edge-b: %v", err)
	}
	if _, err := connect(env, "edge-b", "secret-b-0123456789", nil); err == nil {
		t.Error("edge-b's old password still works after re-enrolment")
	}
	b2, err := connect(env, "edge-b", "secret-b-new-0123456789", nil)
	if err != nil {
		t.Fatalf("edge-b with its new password: %v", err)
	}
	b2.Disconnect(100)

	// Revocation: the connected edge is dropped and cannot come back.
	if err := p.DeleteEdge(ctx, "edge-a"); err != nil {
		t.Fatalf("delete edge-a: %v", err)
	}
	for i := 0; a.IsConnectionOpen() && i < 250; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if a.IsConnectionOpen() {
		t.Error("edge-a still connected after its account was deleted")
	}
	if _, err := connect(env, "edge-a", "secret-a-0123456789", nil); err == nil {
		t.Error("edge-a connected after revocation")
	}
	if err := p.DeleteEdge(ctx, "edge-a"); err != nil {
		t.Errorf("deleting a deleted edge: %v", err)
	}

	// Accounts that are not edges are never touched.
	for _, id := range []string{"admin", brokertest.CentralID} {
		if err := p.CreateEdge(ctx, id, "takeover-0123456789"); !errors.Is(err, dynsec.ErrForeignAccount) {
			t.Errorf("create edge %s: %v, want ErrForeignAccount", id, err)
		}
		if err := p.DeleteEdge(ctx, id); !errors.Is(err, dynsec.ErrForeignAccount) {
			t.Errorf("delete edge %s: %v, want ErrForeignAccount", id, err)
		}
	}
	if _, err := connect(env, "admin", brokertest.AdminPassword, nil); err != nil {
		t.Errorf("admin account damaged: %v", err)
	}
	if _, err := connect(env, brokertest.CentralID, "takeover-0123456789", nil); err == nil {
		t.Error("central's account took an edge password")
	}

	// Prune deletes the accounts of edges the store no longer knows.
	if err := p.CreateEdge(ctx, "edge-c", "secret-c-0123456789"); err != nil {
		t.Fatal(err)
	}
	gone, err := p.Prune(ctx, func(_ context.Context, id string) (bool, error) { return id == "edge-c", nil })
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gone) != "[edge-b]" {
		t.Errorf("pruned %v, want [edge-b]", gone)
	}
	if ids, _ := p.Edges(ctx); fmt.Sprint(ids) != "[edge-c]" {
		t.Errorf("after prune: %v, want [edge-c]", ids)
	}
}

// Without the dynsec control role the provisioner fails with a clear
// error instead of hanging or pretending.
func TestProvisionWithoutRights(t *testing.T) {
	env := brokertest.Mosquitto(t)
	p, err := dynsec.Start(dynsec.Options{BrokerURL: env.URL, Username: brokertest.CentralID,
		Password: env.Password(brokertest.CentralID), Topics: env.Topics, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.CreateEdge(context.Background(), "edge-x", "secret-x-0123456789")
	if err == nil {
		t.Fatal("edge created by an account without the dynsec role")
	}
	if !strings.Contains(err.Error(), "postern-dynsec role") {
		t.Errorf("error %q does not name the missing role", err)
	}
}

// A wrong password fails at once, saying the broker refused it.
func TestProvisionWrongPassword(t *testing.T) {
	env := brokertest.Mosquitto(t)
	env.Password(brokertest.CentralID)
	p, err := dynsec.Start(dynsec.Options{BrokerURL: env.URL, Username: brokertest.CentralID + "-dynsec",
		Password: "wrong", Topics: env.Topics, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	err = p.CreateEdge(context.Background(), "edge-x", "secret-x-0123456789")
	if !errors.Is(err, dynsec.ErrRefused) || !strings.Contains(err.Error(), "refused the connection") {
		t.Fatalf("wrong password: %v, want ErrRefused", err)
	}
	d := time.Since(start)
	t.Logf("refused after %v", d.Round(time.Millisecond))
	if d > 10*time.Second {
		t.Errorf("refusal took %v; the broker's answer should end the wait", d)
	}
}
