package queue

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/event"
)

func smtpErr(code int, enh [3]int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: msg}
}

func refuse(prefix string, err *smtp.SMTPError) func(string) *smtp.SMTPError {
	return func(addr string) *smtp.SMTPError {
		if strings.HasPrefix(addr, prefix) {
			return err
		}
		return nil
	}
}

// ndr is a delivered NDR parsed back with the standard library.
type ndr struct {
	header  mail.Header
	text    string
	perMsg  textproto.MIMEHeader
	perRcpt []textproto.MIMEHeader
	third   string
}

func parseNDR(t *testing.T, data []byte) ndr {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("NDR content type %q %v %v", mt, params, err)
	}
	var n ndr
	n.header = m.Header
	mr := multipart.NewReader(m.Body, params["boundary"])
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		switch i {
		case 0:
			n.text = string(b)
		case 1:
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
			n.perMsg, _ = tr.ReadMIMEHeader()
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					n.perRcpt = append(n.perRcpt, h)
				}
				if err != nil {
					break
				}
			}
		case 2:
			n.third = string(b)
		}
	}
	return n
}

func TestDeliveredFirstTry(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com", "b@example.com")
	got := mx.Wait(t, 1, 5*time.Second)
	if string(got[0].Data) != body || len(got[0].To) != 2 {
		t.Fatalf("sink got %q for %v", got[0].Data, got[0].To)
	}
	e.eventually("message removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	// The counters follow the delete a moment later.
	e.eventually("spool counters at zero", func() bool { st := e.sp.Stats(); return st.Messages == 0 && st.Bytes == 0 })
}

func TestMultipleDomainsOneTransactionEach(t *testing.T) {
	e := newEnv(t)
	mxCom := e.sink("127.0.0.2", deliverytest.Behaviour{})
	mxEdu := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com", "x@example.edu", "b@EXAMPLE.com")
	e.eventually("message removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	if c, d := mxCom.Messages(), mxEdu.Messages(); len(c) != 1 || len(c[0].To) != 2 || len(d) != 1 || len(d[0].To) != 1 {
		t.Fatalf("example.com got %d transactions, example.edu %d", len(c), len(d))
	}
}

func TestTemporaryFailureThenSuccess(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 7, 1}, "greylisted"))})
	e.start()
	m := e.put("a@example.com")
	e.eventually("first attempt", func() bool { return e.attemptsOf(m.ID) == 1 })
	got, _ := e.sp.Get(m.ID)
	// Jitter 0.5 gives exactly retry_min.
	if want := m.ReceivedAt.Add(5 * time.Minute); !got.NextAttempt.Equal(want) {
		t.Errorf("next attempt %v, want %v", got.NextAttempt, want)
	}
	r := got.Recipients[0]
	if r.State != spool.Pending || r.Code != 451 || r.EnhancedCode != "4.7.1" || r.Reply != "greylisted" || r.RemoteMTA != "mx.example.com" {
		t.Errorf("recipient after 451: %+v", r)
	}
	if len(got.History) != 1 || !strings.Contains(got.History[0].Host, "127.0.0.2") || got.LastError == "" {
		t.Errorf("history %+v last error %q", got.History, got.LastError)
	}
	// Nothing happens before the retry is due: no busy loop, no early try.
	sessions := mx.Sessions()
	e.clock.Advance(4 * time.Minute)
	time.Sleep(100 * time.Millisecond)
	if mx.Sessions() != sessions || e.attemptsOf(m.ID) != 1 {
		t.Fatalf("retried before due: %d sessions, %d attempts", mx.Sessions(), e.attemptsOf(m.ID))
	}
	mx.SetBehaviour(deliverytest.Behaviour{})
	e.clock.Advance(time.Minute)
	mx.Wait(t, 1, 5*time.Second)
	e.eventually("message removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	if n := len(e.events.kinds(event.NDR)); n != 0 {
		t.Errorf("%d NDR events for a delivered message", n)
	}
}

func TestPermanentFailureNDR(t *testing.T) {
	e := newEnv(t)
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("nobody", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
		DSNEnvID: "scan-7", ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
		Recipients: []spool.Recipient{{Addr: "nobody@example.com", ORCPT: "rfc822;Nobody@example.com"}}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	got := senderMX.Wait(t, 1, 5*time.Second)[0]
	if got.From != "" || len(got.To) != 1 || got.To[0] != "scanner@example.edu" {
		t.Fatalf("NDR envelope from %q to %v, want <> to the sender", got.From, got.To)
	}
	n := parseNDR(t, got.Data)
	if n.header.Get("Subject") != "Undelivered Mail Returned to Sender" || n.header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("NDR header %v", n.header)
	}
	if n.perMsg.Get("Reporting-Mta") != "dns; edge.example.edu" || n.perMsg.Get("Original-Envelope-Id") != "scan-7" ||
		n.perMsg.Get("Arrival-Date") != m.ReceivedAt.Format(time.RFC1123Z) {
		t.Errorf("per-message fields %v", n.perMsg)
	}
	if len(n.perRcpt) != 1 {
		t.Fatalf("%d recipient blocks", len(n.perRcpt))
	}
	r := n.perRcpt[0]
	for k, want := range map[string]string{
		"Final-Recipient": "rfc822; nobody@example.com", "Original-Recipient": "rfc822;Nobody@example.com",
		"Action": "failed", "Status": "5.1.1", "Remote-Mta": "dns; mx.example.com",
		"Diagnostic-Code": "smtp; 550 5.1.1 User unknown",
	} {
		if r.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, r.Get(k), want)
		}
	}
	if !strings.Contains(n.text, "User unknown") || !strings.Contains(n.third, "Message-ID: <m1@example.edu>") || strings.Contains(n.third, "scan attached") {
		t.Errorf("text %q / returned headers %q", n.text, n.third)
	}
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	evs := e.events.kinds(event.NDR)
	if len(evs) != 1 || evs[0].Device != device || evs[0].Sender != "scanner@example.edu" || evs[0].QueueID != m.ID || evs[0].Validate() != nil {
		t.Errorf("NDR events %+v", evs)
	}
	if d, _ := e.reg.Lookup(device); !d.Active() {
		t.Error("device suspended although its NDR was delivered")
	}
}

func TestNotifyNeverSuppressesNDR(t *testing.T) {
	e := newEnv(t)
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := &spool.Envelope{From: "scanner@example.edu", Device: device, ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
		Recipients: []spool.Recipient{{Addr: "a@example.com", Notify: []string{"NEVER"}}, {Addr: "b@example.com", Notify: []string{"SUCCESS"}}}}
	e.sp.Put(context.Background(), m, []byte(body))
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	time.Sleep(100 * time.Millisecond)
	if len(senderMX.Messages()) != 0 || len(e.events.kinds(event.NDR)) != 0 {
		t.Errorf("NDR sent despite NOTIFY without FAILURE")
	}
}

func TestMixedRecipients(t *testing.T) {
	e := newEnv(t)
	mixed := func(addr string) *smtp.SMTPError {
		switch {
		case strings.HasPrefix(addr, "bad"):
			return smtpErr(550, [3]int{5, 1, 1}, "User unknown")
		case strings.HasPrefix(addr, "later"):
			return smtpErr(452, [3]int{4, 2, 2}, "Mailbox full")
		}
		return nil
	}
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: mixed})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("good@example.com", "bad@example.com", "later@example.com")
	ndrs := senderMX.Wait(t, 1, 5*time.Second)
	e.eventually("first attempt recorded", func() bool { return e.attemptsOf(m.ID) == 1 })
	got, _ := e.sp.Get(m.ID)
	states := []spool.RcptState{got.Recipients[0].State, got.Recipients[1].State, got.Recipients[2].State}
	if states[0] != spool.Delivered || states[1] != spool.Failed || states[2] != spool.Pending {
		t.Fatalf("states %v, want delivered, failed, pending", states)
	}
	if d := mx.Messages(); len(d) != 1 || strings.Join(d[0].To, ",") != "good@example.com" {
		t.Fatalf("sink got %+v", d)
	}
	n := parseNDR(t, ndrs[0].Data)
	if len(n.perRcpt) != 1 || n.perRcpt[0].Get("Final-Recipient") != "rfc822; bad@example.com" {
		t.Fatalf("NDR covers %v, want only bad@", n.perRcpt)
	}
	// The retry goes to the pending recipient only, and no second NDR.
	mx.SetBehaviour(deliverytest.Behaviour{})
	e.clock.Advance(5 * time.Minute)
	e.eventually("message removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	if d := mx.Messages(); len(d) != 2 || strings.Join(d[1].To, ",") != "later@example.com" {
		t.Fatalf("retry delivered %+v", d)
	}
	time.Sleep(50 * time.Millisecond)
	if len(senderMX.Messages()) != 1 {
		t.Errorf("%d NDRs, want 1", len(senderMX.Messages()))
	}
}

func TestBackoffSchedule(t *testing.T) {
	for _, tc := range []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{1, 0.5, 5 * time.Minute},
		{2, 0.5, 10 * time.Minute},
		{3, 0.5, 20 * time.Minute},
		{4, 0.5, 40 * time.Minute},
		{5, 0.5, time.Hour},
		{50, 0.5, time.Hour},
		{1, 0, 4*time.Minute + 30*time.Second},
		{1, 0.999999, 5*time.Minute + 30*time.Second - 300*time.Microsecond},
		{5, 0, 54 * time.Minute},
	} {
		if got := Backoff(tc.n, 5*time.Minute, time.Hour, tc.u); got.Round(time.Millisecond) != tc.want.Round(time.Millisecond) {
			t.Errorf("Backoff(%d, u=%v) = %v, want %v", tc.n, tc.u, got, tc.want)
		}
	}
}

// TestExpiryNDR runs a message against a server that always defers, with
// the clock jumping to each retry, until the 5-day lifetime ends.
func TestExpiryNDR(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 3, 0}, "try later"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com")
	expiry := m.ReceivedAt.Add(5 * 24 * time.Hour)
	var gaps []time.Duration
	prev := m.ReceivedAt
	for i := 1; ; i++ {
		e.eventually("attempt", func() bool { a := e.attemptsOf(m.ID); return a == i || a == -1 })
		got, err := e.sp.Get(m.ID)
		if err != nil {
			break // expired and removed
		}
		gaps = append(gaps, got.NextAttempt.Sub(prev))
		if got.NextAttempt.After(expiry) {
			t.Fatalf("retry scheduled after expiry: %v", got.NextAttempt)
		}
		prev = got.NextAttempt
		e.clock.Set(got.NextAttempt)
		if i > 200 {
			t.Fatal("never expired")
		}
	}
	want := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}
	for i, w := range want {
		if gaps[i] != w {
			t.Errorf("retry gap %d = %v, want %v (all: %v)", i+1, gaps[i], w, gaps[:8])
		}
	}
	if !e.clock.Now().Equal(expiry) {
		t.Errorf("final attempt at %v, want the expiry time %v", e.clock.Now(), expiry)
	}
	// The delay warning (on by default, after 4 hours), then the NDR.
	reports := senderMX.Wait(t, 2, 5*time.Second)
	if len(reports) != 2 {
		t.Fatalf("%d reports to the sender, want a delay warning and an NDR", len(reports))
	}
	if w := parseNDR(t, reports[0].Data); w.perRcpt[0].Get("Action") != "delayed" {
		t.Errorf("first report %v, want the delay warning", w.perRcpt[0])
	}
	n := parseNDR(t, reports[1].Data)
	r := n.perRcpt[0]
	if r.Get("Action") != "failed" || r.Get("Status") != "4.3.0" || r.Get("Diagnostic-Code") != "smtp; 451 4.3.0 try later" {
		t.Errorf("expiry NDR fields %v", r)
	}
	if !strings.Contains(n.text, "delivery time expired") {
		t.Errorf("expiry NDR text %q", n.text)
	}
	if mx.Sessions() < 100 {
		t.Errorf("only %d attempts in 5 days", mx.Sessions())
	}
}

func TestNDRUndeliverableSuspendsDevice(t *testing.T) {
	e := newEnv(t)
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("scanner", smtpErr(550, [3]int{5, 1, 1}, "No such mailbox"))})
	e.start()
	e.put("a@example.com")
	e.eventually("device suspended", func() bool { d, _ := e.reg.Lookup(device); return !d.Active() })
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	evs := e.events.kinds(event.NDRUndeliverable)
	if len(evs) != 1 || evs[0].Device != device || !strings.Contains(evs[0].Reason, "No such mailbox") || evs[0].Validate() != nil {
		t.Fatalf("undeliverable events %+v", evs)
	}
	if len(e.events.kinds(event.NDR)) != 1 {
		t.Errorf("want exactly one NDR event")
	}
	// Never bounce a bounce: no second NDR was queued or sent.
	time.Sleep(100 * time.Millisecond)
	if len(senderMX.Messages()) != 0 || senderMX.Sessions() != 1 {
		t.Errorf("sender MX saw %d sessions", senderMX.Sessions())
	}
	// The suspension is persisted: a registry reopened on the spool has it.
	reg2, err := devices.New(nil, e.sp.KV("susp/"), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	_ = reg2 // a static-less registry knows no device; the persisted key is what matters
	found := false
	e.sp.KV("susp/").Iterate(func(k string, _ []byte) error {
		found = found || k == device
		return nil
	})
	if !found {
		t.Error("suspension not persisted")
	}
}

// TestNDRExpiryDoesNotSuspend: an NDR that expires because the sender's
// mail system cannot be reached (an outage anyone on the path could
// cause) suspends nobody; it is a warning, logged and reported.
func TestNDRExpiryDoesNotSuspend(t *testing.T) {
	e := newEnv(t)
	e.cfg.MaxQueueLifetime = 30 * time.Minute
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 4, 1}, "later"))})
	e.start()
	e.put("a@example.com")
	e.eventually("NDR queued", func() bool { return len(e.events.kinds(event.NDR)) == 1 })
	for range 20 {
		if len(e.all()) == 0 {
			break
		}
		e.clock.Advance(10 * time.Minute)
		time.Sleep(20 * time.Millisecond)
	}
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	if senderMX.Sessions() < 2 {
		t.Fatalf("the NDR was tried %d times", senderMX.Sessions())
	}
	if d, _ := e.reg.Lookup(device); !d.Active() {
		t.Fatalf("device suspended by an expired NDR: %+v", d)
	}
	if n := len(e.events.kinds(event.NDRUndeliverable)); n != 0 {
		t.Errorf("%d ndr-undeliverable events (central would suspend)", n)
	}
	w := e.events.kinds(event.NDRWarning)
	if len(w) != 1 || w[0].Device != device || w[0].Validate() != nil || !strings.Contains(w[0].Detail["not_suspended"], "expired") {
		t.Errorf("warning events %+v", w)
	}
}

func TestSmarthostMode(t *testing.T) {
	e := newEnv(t)
	relay := deliverytest.Start(t, deliverytest.Options{Addr: "127.0.0.4:0"})
	e.smart = relay.Addr
	e.start()
	m := e.put("a@nowhere.invalid", "b@example.com")
	e.eventually("message removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	if got := relay.Messages(); len(got) != 2 {
		t.Fatalf("smarthost got %d transactions, want one per domain", len(got))
	}
}

// TestShutdownMidDelivery: a graceful stop during a slow delivery records
// the attempt and leaves the message due at once for the next start.
func TestShutdownMidDelivery(t *testing.T) {
	e := newEnv(t)
	e.cfg.CommandTimeout = 5 * time.Second
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Delay: 2 * time.Second})
	e.start()
	m := e.put("a@example.com")
	e.eventually("delivery started", func() bool { return mx.Sessions() == 1 })
	e.stop()
	got, err := e.sp.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Recipients[0].State != spool.Pending || got.NextAttempt.After(e.clock.Now()) {
		t.Fatalf("after shutdown: %+v next %v", got.Recipients[0], got.NextAttempt)
	}
	mx.SetBehaviour(deliverytest.Behaviour{})
	e.start()
	mx.Wait(t, 1, 5*time.Second)
}

func TestConcurrencyLimits(t *testing.T) {
	e := newEnv(t)
	e.cfg.Concurrency, e.cfg.PerDomainConcurrency = 3, 2
	e.cfg.CommandTimeout = 5 * time.Second
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Delay: 100 * time.Millisecond})
	for range 6 {
		e.put("a@example.com")
	}
	e.start()
	// Sample the sink's concurrent sessions while the queue drains.
	peak := 0
	deadline := time.Now().Add(10 * time.Second)
	for len(e.all()) > 0 && time.Now().Before(deadline) {
		e.runner.mu.Lock()
		if e.runner.domains["example.com"] > peak {
			peak = e.runner.domains["example.com"]
		}
		e.runner.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	if len(mx.Messages()) != 6 {
		t.Fatalf("delivered %d of 6", len(mx.Messages()))
	}
	if peak != 2 {
		t.Errorf("peak per-domain concurrency %d, want 2", peak)
	}
}

func TestOperatorActions(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 3, 0}, "later"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com")
	e.eventually("first attempt", func() bool { return e.attemptsOf(m.ID) == 1 })

	list, err := e.runner.List()
	if err != nil || len(list) != 1 || list[0].ID != m.ID || list[0].Recipients[0].State != "pending" || list[0].LastError == "" {
		t.Fatalf("list %+v %v", list, err)
	}
	d, err := e.runner.Show(m.ID)
	if err != nil || !strings.Contains(d.Headers, "Subject: scan") || strings.Contains(d.Headers, "scan attached") || len(d.Envelope.History) != 1 {
		t.Fatalf("show %+v %v", d, err)
	}
	// retry: due now without moving the clock.
	if err := e.runner.Retry(m.ID); err != nil {
		t.Fatal(err)
	}
	e.eventually("retried", func() bool { return e.attemptsOf(m.ID) == 2 })
	// hold (once the retry's attempt is over): retry refused, nothing
	// happens when due.
	e.eventually("held", func() bool { return e.runner.Hold(m.ID) == nil })
	if err := e.runner.Retry(m.ID); err == nil {
		t.Error("retry of a held message accepted")
	}
	sessions := mx.Sessions()
	e.clock.Advance(time.Hour)
	time.Sleep(100 * time.Millisecond)
	if mx.Sessions() != sessions {
		t.Error("held message was tried")
	}
	// release: tried at once.
	if err := e.runner.Release(m.ID); err != nil {
		t.Fatal(err)
	}
	e.eventually("tried after release", func() bool { return e.attemptsOf(m.ID) == 3 })
	// delete with NDR.
	e.eventually("idle", func() bool { return e.runner.Hold(m.ID) == nil })
	if err := e.runner.Delete(m.ID, true); err != nil {
		t.Fatal(err)
	}
	ndr := parseNDR(t, senderMX.Wait(t, 1, 5*time.Second)[0].Data)
	if ndr.perRcpt[0].Get("Status") != "5.0.0" || !strings.Contains(ndr.text, "deleted from the queue") {
		t.Errorf("operator NDR %v %q", ndr.perRcpt, ndr.text)
	}
	// delete silently.
	m2 := e.put("b@example.com")
	e.eventually("first attempt", func() bool { return e.attemptsOf(m2.ID) == 1 })
	e.eventually("deleted", func() bool { return e.runner.Delete(m2.ID, false) == nil })
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	time.Sleep(50 * time.Millisecond)
	if len(senderMX.Messages()) != 1 {
		t.Errorf("silent delete sent an NDR")
	}
	if err := e.runner.Retry("nonexistent"); err == nil {
		t.Error("retry of an unknown id succeeded")
	}
}

// TestSpoolEmptiesAndDiskComesBack delivers enough mail to fill several
// value-log files and checks the spool is empty and its disk use falls.
func TestSpoolEmptiesAndDiskComesBack(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	big := []byte(strings.Repeat(strings.Repeat("0123456789abcdef", 4)+"\r\n", 1000)) // 66 KB
	data := append([]byte(body), big...)
	var peak int64
	for range 60 {
		m := &spool.Envelope{From: "scanner@example.edu", ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
			Recipients: []spool.Recipient{{Addr: "a@example.com"}}}
		if err := e.sp.Put(context.Background(), m, data); err != nil {
			t.Fatal(err)
		}
	}
	peak = e.sp.Stats().VlogBytes
	e.start()
	mx.Wait(t, 60, time.Minute)
	e.eventually("spool empty", func() bool { return e.sp.Stats().Messages == 0 })
	if err := e.sp.GC(); err != nil {
		t.Fatal(err)
	}
	after := e.sp.Stats()
	t.Logf("value log: %d bytes with 60 messages, %d after delivery and GC", peak, after.VlogBytes)
	if after.Messages != 0 || after.Bytes != 0 {
		t.Errorf("spool not empty: %+v", after)
	}
	if after.VlogBytes >= peak/2 {
		t.Errorf("value log %d bytes after GC, was %d: space not reclaimed", after.VlogBytes, peak)
	}
}

func TestDelayWarning(t *testing.T) {
	e := newEnv(t)
	e.cfg.DelayWarning = 30 * time.Minute
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 4, 1}, "not now"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("a@example.com")
	for i := 1; i <= 6; i++ { // attempts at 0, 5, 15, 35, 75, 135 minutes
		e.eventually("attempt", func() bool { return e.attemptsOf(m.ID) == i })
		got, _ := e.sp.Get(m.ID)
		e.clock.Set(got.NextAttempt)
	}
	warn := senderMX.Wait(t, 1, 5*time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := len(senderMX.Messages()); n != 1 {
		t.Fatalf("%d delay warnings, want exactly 1", n)
	}
	n := parseNDR(t, warn[0].Data)
	if n.header.Get("Subject") != "Delayed Mail (still being retried)" || n.perRcpt[0].Get("Action") != "delayed" ||
		n.perRcpt[0].Get("Status") != "4.4.1" || n.perRcpt[0].Get("Will-Retry-Until") != m.ReceivedAt.Add(5*24*time.Hour).Format(time.RFC1123Z) {
		t.Errorf("delay warning %v %v", n.header, n.perRcpt)
	}
	if got, _ := e.sp.Get(m.ID); got == nil || !got.Recipients[0].DelayWarned || got.Recipients[0].State != spool.Pending {
		t.Errorf("after warning: %+v", got)
	}
}

// TestStartingDeliveryWritesNothing: handing a message to delivery costs
// no spool write (the in-flight set, not a durable lease, keeps it from
// being handed out twice), each message is delivered once although it
// stays due on disk during its attempt, and the attempt's outcome is the
// only write (the delete).
func TestStartingDeliveryWritesNothing(t *testing.T) {
	e := newEnv(t)
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Delay: 300 * time.Millisecond})
	var ids []string
	for range 3 {
		ids = append(ids, e.put("a@example.com").ID)
	}
	before := e.sp.Stats().Writes
	e.start()
	e.eventually("deliveries started", func() bool { return mx.Sessions() >= 3 })
	if w := e.sp.Stats().Writes - before; w != 0 {
		t.Errorf("%d spool writes to start 3 deliveries, want 0", w)
	}
	for _, id := range ids {
		if env, err := e.sp.Get(id); err != nil || env.NextAttempt.After(e.clock.Now()) {
			t.Errorf("in flight %s: %v, next attempt %v (want still due)", id, err, env)
		}
	}
	mx.Wait(t, 3, 5*time.Second)
	e.eventually("queue empty", func() bool { return len(e.all()) == 0 })
	if got := len(mx.Messages()); got != 3 {
		t.Errorf("MX got %d messages, want 3 (one each)", got)
	}
	if w := e.sp.Stats().Writes - before; w != 3 {
		t.Errorf("%d spool writes for 3 deliveries, want 3 (the deletes)", w)
	}
}

// heldData is the real spool, counting the message bytes read by Data
// and not yet followed by the message's Record: a lower bound of what
// deliveries hold in memory.
type heldData struct {
	*spool.Spool
	mu         sync.Mutex
	held, peak int64
	sizes      map[string]int64
}

func (h *heldData) Data(id string) ([]byte, error) {
	b, err := h.Spool.Data(id)
	if err == nil {
		h.mu.Lock()
		h.sizes[id] = int64(len(b))
		h.held += int64(len(b))
		h.peak = max(h.peak, h.held)
		h.mu.Unlock()
	}
	return b, err
}

func (h *heldData) Record(env *spool.Envelope, news ...spool.NewMessage) error {
	err := h.Spool.Record(env, news...)
	h.mu.Lock()
	h.held -= h.sizes[env.ID]
	delete(h.sizes, env.ID)
	h.mu.Unlock()
	return err
}

// TestDataInFlightBounded: deliveries hold at most Options.DataInFlight
// message bytes at once, however many slots are free, and every message
// is still delivered; without the bound the same load holds far more.
func TestDataInFlightBounded(t *testing.T) {
	big := []byte(body + strings.Repeat(strings.Repeat("0123456789abcdef", 4)+"\r\n", 900)) // ~60 KB
	run := func(bound int64) int64 {
		e := newEnv(t)
		e.dataInFlight = bound
		h := &heldData{sizes: map[string]int64{}}
		e.wrap = func(sp *spool.Spool) Spool { h.Spool = sp; return h }
		mx := e.sink("127.0.0.2", deliverytest.Behaviour{Delay: 20 * time.Millisecond})
		for range 16 {
			m := &spool.Envelope{From: "scanner@example.edu", ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
				Recipients: []spool.Recipient{{Addr: "a@example.com"}}}
			if err := e.sp.Put(context.Background(), m, big); err != nil {
				t.Fatal(err)
			}
		}
		e.start()
		mx.Wait(t, 16, 20*time.Second)
		e.eventually("spool empty", func() bool { return e.sp.Stats().Messages == 0 })
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.peak
	}
	bound := int64(2*len(big) + 100)
	if peak := run(bound); peak > bound {
		t.Errorf("deliveries held %d message bytes, bound %d", peak, bound)
	}
	if peak := run(0); peak <= bound {
		t.Errorf("without a tight bound deliveries held only %d bytes: the test load does not exercise it", peak)
	}
}
