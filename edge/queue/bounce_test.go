package queue

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/event"
)

// metricLine reports whether the edge's /metrics exposition holds line.
func (e *env) metricLine(line string) bool {
	rec := httptest.NewRecorder()
	e.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// TestRelayByBounce is the attack: a client spools MAIL
// FROM:<victim@example.net> RET=FULL to a mailbox of the organisation
// that does not exist, hoping the edge mails the payload to the victim
// inside an NDR. The envelope is written to the spool directly (intake
// refuses such a MAIL by default; this is the second wall). The
// organisation's MX refuses the recipient over real SMTP; the victim's MX
// must see nothing, and the dropped report is logged, counted and
// reported. A registered device using its registered outside sender is
// the control: its NDR does reach example.net.
func TestRelayByBounce(t *testing.T) {
	for _, tc := range []struct {
		name, device, from string
		suspendCopier      bool
		delivered          bool
	}{
		{name: "unregistered client", from: "victim@example.net"},
		{name: "claims an unknown device", device: "ghost.example.edu", from: "victim@example.net"},
		{name: "registered device, sender not in its list", device: device, from: "victim@example.net"},
		{name: "another device's sender", device: device, from: "copier@example.net"},
		{name: "suspended device", device: copier, from: "copier@example.net", suspendCopier: true},
		{name: "control: device with its registered sender", device: device, from: "scans@example.net", delivered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("nosuch", smtpErr(550, [3]int{5, 1, 1}, "No such user"))})
			victim := e.sink("127.0.0.4", deliverytest.Behaviour{})
			if tc.suspendCopier {
				if err := e.reg.Suspend(copier, "test"); err != nil {
					t.Fatal(err)
				}
			}
			payload := "From: " + tc.from + "\r\nTo: someone@example.net\r\nSubject: buy now\r\n\r\nSPAM PAYLOAD\r\n"
			m := &spool.Envelope{From: tc.from, Device: tc.device, ClientIP: "127.0.0.99", DSNRet: "FULL",
				ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
				Recipients: []spool.Recipient{{Addr: "nosuch@example.edu"}}}
			if err := e.sp.Put(context.Background(), m, []byte(payload)); err != nil {
				t.Fatal(err)
			}
			e.start()
			if tc.delivered {
				got := victim.Wait(t, 1, 5*time.Second)[0]
				if got.From != "" || got.To[0] != tc.from || !strings.Contains(string(got.Data), "SPAM PAYLOAD") {
					t.Fatalf("control NDR %+v", got)
				}
				e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
				return
			}
			e.eventually("original done", func() bool { return e.attemptsOf(m.ID) == -1 })
			time.Sleep(200 * time.Millisecond) // give a wrongly queued NDR time to go out
			if n := victim.Sessions(); n != 0 {
				t.Fatalf("the victim's MX saw %d sessions: relay by bounce", n)
			}
			if left := e.all(); len(left) != 0 {
				t.Fatalf("spool still holds %d messages (an NDR?)", len(left))
			}
			evs := e.events.kinds(event.ReportDropped)
			if len(evs) != 1 || evs[0].QueueID != m.ID || evs[0].Sender != tc.from || evs[0].Validate() != nil {
				t.Fatalf("report-dropped events %+v", evs)
			}
			if len(e.events.kinds(event.NDR)) != 0 {
				t.Error("an NDR event although no NDR was sent")
			}
			if !e.metricLine(`postern_edge_dsn_dropped_total{kind="failure"} 1`) {
				t.Error("dropped report not counted")
			}
		})
	}
}

// TestDelayNoticeNotRelayed: a delay notice is a report too; to an
// outside sender that is not a device's registered sender it is dropped.
func TestDelayNoticeNotRelayed(t *testing.T) {
	e := newEnv(t)
	e.cfg.DelayWarning = 30 * time.Minute
	e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(451, [3]int{4, 2, 0}, "try later"))})
	victim := e.sink("127.0.0.4", deliverytest.Behaviour{})
	m := &spool.Envelope{From: "victim@example.net", ClientIP: "127.0.0.99", DSNRet: "FULL",
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(), Recipients: []spool.Recipient{{Addr: "someone@example.edu"}}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	e.start()
	for i := 1; i <= 5; i++ {
		e.eventually("attempt", func() bool { return e.attemptsOf(m.ID) == i })
		got, _ := e.sp.Get(m.ID)
		e.clock.Set(got.NextAttempt)
	}
	e.eventually("drop reported", func() bool { return len(e.events.kinds(event.ReportDropped)) == 1 })
	time.Sleep(100 * time.Millisecond)
	if victim.Sessions() != 0 {
		t.Fatal("delay notice sent to an outside sender of an unregistered client")
	}
	if got, _ := e.sp.Get(m.ID); got == nil || !got.Recipients[0].DelayWarned {
		t.Errorf("recipient not marked as considered for a delay notice: %+v", got)
	}
	if !e.metricLine(`postern_edge_dsn_dropped_total{kind="delay"} 1`) {
		t.Error("dropped delay notice not counted")
	}
}

// TestSuspensionRules: the device's registered sender's MX refuses the
// NDR in one way or another over real SMTP. Only a refusal of the
// address itself suspends the device; size, policy and vague refusals
// leave it active, with a warning event instead.
func TestSuspensionRules(t *testing.T) {
	for _, tc := range []struct {
		name    string
		code    int
		enh     [3]int
		atData  bool
		suspend bool
	}{
		{name: "550 5.1.1 no such user", code: 550, enh: [3]int{5, 1, 1}, suspend: true},
		{name: "550 5.1.2 no such domain", code: 550, enh: [3]int{5, 1, 2}, suspend: true},
		{name: "550 5.2.1 mailbox disabled", code: 550, enh: [3]int{5, 2, 1}, suspend: true},
		{name: "552 5.2.2 mailbox full", code: 552, enh: [3]int{5, 2, 2}},
		{name: "552 5.3.4 message too big", code: 552, enh: [3]int{5, 3, 4}, atData: true},
		{name: "550 5.7.1 policy", code: 550, enh: [3]int{5, 7, 1}},
		{name: "554 5.7.1 content after DATA", code: 554, enh: [3]int{5, 7, 1}, atData: true},
		{name: "550 without enhanced code", code: 550, enh: [3]int{-1, -1, -1}},
		{name: "552 5.1.1 (size code)", code: 552, enh: [3]int{5, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
			refusal := smtpErr(tc.code, tc.enh, "refused by the sender's MX")
			b := deliverytest.Behaviour{Rcpt: refuse("scanner", refusal)}
			if tc.atData {
				b = deliverytest.Behaviour{Data: refusal}
			}
			senderMX := e.sink("127.0.0.3", b)
			e.start()
			e.put("a@example.com")
			e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
			if senderMX.Sessions() == 0 {
				t.Fatal("NDR never tried")
			}
			d, _ := e.reg.Lookup(device)
			susp := e.events.kinds(event.NDRUndeliverable)
			warn := e.events.kinds(event.NDRWarning)
			if tc.suspend {
				if d.Active() || len(susp) != 1 || susp[0].Device != device || len(warn) != 0 {
					t.Fatalf("want suspended: device %+v, undeliverable %+v, warnings %+v", d, susp, warn)
				}
				return
			}
			if !d.Active() || len(susp) != 0 {
				t.Fatalf("suspended on %s: device %+v, events %+v", tc.name, d, susp)
			}
			if len(warn) != 1 || warn[0].Device != device || warn[0].QueueID == "" || warn[0].Validate() != nil {
				t.Fatalf("warning events %+v", warn)
			}
		})
	}
}

// TestSenderOutsideListNeverSuspends: a registered device sending as an
// affiliated address that is not in its sender list gets its NDR (the
// address is inside the organisation), but that NDR failing never
// suspends the device; nor does a report envelope from an earlier
// version that names the device for an address not in its list.
func TestSenderOutsideListNeverSuspends(t *testing.T) {
	e := newEnv(t)
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("nobody", smtpErr(550, [3]int{5, 1, 1}, "No such mailbox"))})
	m := &spool.Envelope{From: "nobody@example.edu", Device: device, ClientIP: "127.0.0.10", ClientName: device,
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(), Recipients: []spool.Recipient{{Addr: "a@example.com"}}}
	if err := e.sp.Put(context.Background(), m, []byte(body)); err != nil {
		t.Fatal(err)
	}
	// What an earlier version spooled: BounceFor set for any sender.
	old := &spool.Envelope{From: "", Bounce: true, BounceFor: device, ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now(),
		Recipients: []spool.Recipient{{Addr: "nobody2@example.edu"}}}
	if err := e.sp.Put(context.Background(), old, []byte(body)); err != nil {
		t.Fatal(err)
	}
	e.start()
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	if senderMX.Sessions() < 2 {
		t.Fatalf("sender MX saw %d sessions, want the NDR and the old report", senderMX.Sessions())
	}
	if d, _ := e.reg.Lookup(device); !d.Active() {
		t.Fatalf("device suspended by a sender outside its list: %+v", d)
	}
	if n := len(e.events.kinds(event.NDRUndeliverable)); n != 0 {
		t.Fatalf("%d ndr-undeliverable events", n)
	}
	if n := len(e.events.kinds(event.NDRWarning)); n != 2 {
		t.Errorf("%d warning events, want 2", n)
	}
}

// TestLongRepliesBoundedInReports: a remote server's long refusal (12
// continuation lines, about 10 KB, within what the connection reads) is
// cut before it is stored in the recipient's state and history, returned
// in the NDR, or put in a suspension reason or an event.
func TestLongRepliesBoundedInReports(t *testing.T) {
	e := newEnv(t)
	// Every line carries the enhanced code, as real servers send it (the
	// test sink adds it to the last line only).
	long := strings.TrimSuffix(strings.Repeat("5.1.1 "+strings.Repeat("blah ", 160)+"\n", 12), "\n")
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("", smtpErr(550, [3]int{5, 1, 1}, long))})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{Rcpt: refuse("scanner", smtpErr(550, [3]int{5, 1, 1}, long))})
	e.start()
	e.put("a@example.com")
	e.eventually("device suspended", func() bool { d, _ := e.reg.Lookup(device); return !d.Active() })
	e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
	d, _ := e.reg.Lookup(device)
	if len(d.Reason) > 1024 || !strings.Contains(d.Reason, "blah") {
		t.Errorf("suspension reason of %d bytes", len(d.Reason))
	}
	for _, ev := range e.events.ev {
		if len(ev.Reason) > 1024 {
			t.Errorf("%s event reason of %d bytes", ev.Kind, len(ev.Reason))
		}
	}
	if senderMX.Sessions() != 1 {
		t.Fatalf("sender MX sessions %d", senderMX.Sessions())
	}
}

// TestLongReplyInHistoryAndNDR checks the stored state and the NDR.
func TestLongReplyInHistoryAndNDR(t *testing.T) {
	e := newEnv(t)
	long := func(enh string) string {
		return strings.TrimSuffix(strings.Repeat(enh+" "+strings.Repeat("blah ", 160)+"\n", 12), "\n")
	}
	e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: func(a string) *smtp.SMTPError {
		if strings.HasPrefix(a, "later") {
			return smtpErr(451, [3]int{4, 2, 0}, long("4.2.0"))
		}
		return smtpErr(550, [3]int{5, 1, 1}, long("5.1.1"))
	}})
	senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
	e.start()
	m := e.put("later@example.com", "nobody@example.com")
	e.eventually("attempt", func() bool { return e.attemptsOf(m.ID) == 1 })
	got, _ := e.sp.Get(m.ID)
	if n := len(got.Recipients[0].Reply); n > 1024 || n < 500 {
		t.Errorf("stored reply of %d bytes", n)
	}
	if n := len(got.History[0].Result); n > 1024 {
		t.Errorf("history entry of %d bytes", n)
	}
	if n := len(got.LastError); n > 1024 {
		t.Errorf("last error of %d bytes", n)
	}
	n := parseNDR(t, senderMX.Wait(t, 1, 5*time.Second)[0].Data)
	if d := n.perRcpt[0].Get("Diagnostic-Code"); len(d) > 1100 || !strings.Contains(d, "5.1.1 blah") {
		t.Errorf("Diagnostic-Code of %d bytes: %.80q", len(d), d)
	}
	if len(n.text) > 2500 {
		t.Errorf("NDR text part of %d bytes", len(n.text))
	}
}
