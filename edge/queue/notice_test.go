package queue

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
)

// retryPast walks message id through its retries (the clock jumps to
// each next attempt) until its next attempt is more than d after received
// and 2 more attempts have run, and returns the attempt count.
func (e *env) retryPast(id string, received time.Time, d time.Duration) int {
	e.t.Helper()
	extra := 0
	for i := 1; ; i++ {
		e.eventually("attempt", func() bool { return e.attemptsOf(id) == i })
		got, err := e.sp.Get(id)
		if err != nil {
			e.t.Fatal(err)
		}
		if got.NextAttempt.Sub(received) > d {
			if extra++; extra > 2 {
				return i
			}
		}
		e.clock.Set(got.NextAttempt)
	}
}

// TestDelayWarningOnByDefault: with the default configuration a message
// still undelivered after 4 hours gets its sender one delay warning
// (Action: delayed, Will-Retry-Until the give-up time, the next attempt in
// the text), and only one however many attempts follow.
func TestDelayWarningOnByDefault(t *testing.T) {
	e := newEnv(t)
	def := config.Default(false).Delivery
	if def.DelayWarning != 4*time.Hour {
		t.Fatalf("default delivery.delay_warning %v, want 4h", def.DelayWarning)
	}
	e.cfg.DelayWarning = def.DelayWarning
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 4, 1}, "not now"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com")
	var warnedAt time.Time
	for i := 1; ; i++ {
		e.eventually("attempt", func() bool { return e.attemptsOf(m.ID) == i })
		if len(senderMX.Messages()) > 0 && warnedAt.IsZero() {
			warnedAt = e.clock.Now()
		}
		got, _ := e.sp.Get(m.ID)
		if !warnedAt.IsZero() && got.NextAttempt.Sub(warnedAt) > 3*time.Hour {
			break
		}
		if i > 50 {
			t.Fatal("no delay warning after 50 attempts")
		}
		e.clock.Set(got.NextAttempt)
	}
	if age := warnedAt.Sub(m.ReceivedAt); age < 4*time.Hour {
		t.Errorf("delay warning after %v, want 4h or more", age)
	}
	warns := senderMX.Messages()
	if len(warns) != 1 {
		t.Fatalf("%d delay warnings, want exactly 1", len(warns))
	}
	n := parseNDR(t, warns[0].Data)
	r := n.perRcpt[0]
	if r.Get("Action") != "delayed" || r.Get("Status") != "4.4.1" ||
		r.Get("Will-Retry-Until") != m.ReceivedAt.Add(def.MaxQueueLifetime).Format(time.RFC1123Z) {
		t.Errorf("delay warning fields %v", r)
	}
	if !strings.Contains(n.text, "The next attempt is at ") {
		t.Errorf("delay warning text does not give the next attempt: %q", n.text)
	}
}

// TestDelayWarningNotify: NOTIFY decides per recipient. Of five pending
// recipients, those with NOTIFY=DELAY, NOTIFY=FAILURE,DELAY or no NOTIFY
// are in the delay warning; NOTIFY=NEVER, NOTIFY=SUCCESS and
// NOTIFY=FAILURE are not (and are not reported later either).
func TestDelayWarningNotify(t *testing.T) {
	e := newEnv(t)
	e.cfg.DelayWarning = 30 * time.Minute
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 4, 1}, "not now"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(), Recipients: []spool.Recipient{
			{Addr: "delay@example.com", Notify: []string{"DELAY"}},
			{Addr: "both@example.com", Notify: []string{"FAILURE", "DELAY"}},
			{Addr: "default@example.com"},
			{Addr: "never@example.com", Notify: []string{"NEVER"}},
			{Addr: "success@example.com", Notify: []string{"SUCCESS"}},
			{Addr: "failure@example.com", Notify: []string{"FAILURE"}},
		}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.retryPast(m.ID, m.ReceivedAt, time.Hour)
	warns := senderMX.Messages()
	if len(warns) != 1 {
		t.Fatalf("%d delay warnings, want 1", len(warns))
	}
	var got []string
	for _, r := range parseNDR(t, warns[0].Data).perRcpt {
		if r.Get("Action") != "delayed" {
			t.Errorf("action %q", r.Get("Action"))
		}
		got = append(got, strings.TrimPrefix(r.Get("Final-Recipient"), "rfc822; "))
	}
	sort.Strings(got)
	if want := "both@example.com default@example.com delay@example.com"; strings.Join(got, " ") != want {
		t.Errorf("delay warning for %v, want %s", got, want)
	}
}

// TestRelayedNotice: a next hop without DSN cannot pass NOTIFY=SUCCESS
// on, so the edge sends the sender a "relayed" notice (RFC 3461 §5.2.2)
// for the recipient that asked for it, and none for the others. A next
// hop that supports DSN gets the NOTIFY and the edge sends nothing.
func TestRelayedNotice(t *testing.T) {
	e := newEnv(t)
	mx := deliverytest.Start(t, deliverytest.Options{Addr: fmt.Sprintf("127.0.0.2:%d", e.port), Name: "mx-nodsn", NoDSN: true})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(), Recipients: []spool.Recipient{
			{Addr: "success@example.com", Notify: []string{"SUCCESS", "FAILURE"}},
			{Addr: "default@example.com"},
			{Addr: "failure@example.com", Notify: []string{"FAILURE"}},
		}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	e.start()
	mx.Wait(t, 1, 10*time.Second)
	reports := senderMX.Wait(t, 1, 10*time.Second)
	n := parseNDR(t, reports[0].Data)
	if len(n.perRcpt) != 1 {
		t.Fatalf("relayed notice for %d recipients, want 1: %v", len(n.perRcpt), n.perRcpt)
	}
	r := n.perRcpt[0]
	if r.Get("Action") != "relayed" || r.Get("Status") != "2.0.0" || r.Get("Final-Recipient") != "rfc822; success@example.com" {
		t.Errorf("relayed notice fields %v", r)
	}
	if got := n.header.Get("Subject"); got != "Delivery Status Notification (relayed)" {
		t.Errorf("subject %q", got)
	}
	e.eventually("queue empty", func() bool { return len(e.all()) == 0 })

	// A next hop with DSN: NOTIFY is passed on, no notice from the edge.
	mx.Close()
	dsnMX := e.sink("127.0.0.2", deliverytest.Behaviour{})
	e.put("success@example.com") // no NOTIFY: no success notice asked
	m3 := &spool.Envelope{From: "scanner@example.edu", Device: device, ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
		Recipients: []spool.Recipient{{Addr: "success@example.com", Notify: []string{"SUCCESS"}}}}
	if err := e.sp.Put(context.Background(), m3, []byte(body)); err != nil {
		t.Fatal(err)
	}
	got := dsnMX.Wait(t, 2, 10*time.Second)
	e.eventually("queue empty", func() bool { return len(e.all()) == 0 })
	if n := len(senderMX.Messages()); n != 1 {
		t.Errorf("%d notices to the sender, want only the first relayed one", n)
	}
	passed := false
	for _, msg := range got {
		if v := msg.Notify["success@example.com"]; len(v) == 1 && v[0] == "SUCCESS" {
			passed = true
		}
	}
	if !passed {
		t.Error("NOTIFY=SUCCESS not passed on to a next hop with DSN")
	}
}
