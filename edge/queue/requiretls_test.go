package queue

import (
	"context"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
)

// A REQUIRETLS message whose destination never authenticates is retried
// with 4.7.30 until it expires, never sent, and its NDR says 5.7.30.
func TestREQUIRETLSExpiryNDR(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxQueueLifetime, e.cfg.DelayWarning = 30*time.Minute, 0
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	now := e.clock.Now()
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device, RequireTLS: true,
		ReceivedAt: now, NextAttempt: now, Recipients: []spool.Recipient{{Addr: "a@example.com", State: spool.Pending}}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 50; i++ {
		e.eventually("attempt", func() bool { a := e.attemptsOf(m.ID); return a == i || a == -1 })
		got, err := e.sp.Get(m.ID)
		if err != nil {
			break
		}
		if rc := got.Recipients[0]; rc.EnhancedCode != "4.7.30" {
			t.Fatalf("attempt %d: %d %s %q, want 4.7.30", i, rc.Code, rc.EnhancedCode, rc.Reply)
		}
		e.clock.Set(got.NextAttempt)
	}
	reports := senderMX.Wait(t, 1, 5*time.Second)
	if r := parseNDR(t, reports[0].Data).perRcpt[0]; r.Get("Action") != "failed" || r.Get("Status") != "5.7.30" {
		t.Errorf("NDR fields %v, want failed 5.7.30", r)
	}
	if n := len(mx.Messages()); n != 0 {
		t.Errorf("the unauthenticated MX received %d message(s)", n)
	}
}
