package queuecli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/admin"
	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/address"
)

// daemon is a real spool + queue runner + admin endpoint, delivering to a
// smarthost sink that defers everything.
type daemon struct {
	sp    *spool.Spool
	addr  string
	sink  *deliverytest.Sink
	queue *queue.Runner
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), ValueLogFileSize: 1 << 20, GCInterval: -1, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	sink := deliverytest.Start(t, deliverytest.Options{Behaviour: deliverytest.Behaviour{
		Rcpt: func(string) *smtp.SMTPError {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
		}}})
	// The timeouts only bound a hang: the sink answers at once, and every
	// attempt must get to its 451 reply, which the test then looks for.
	dc, err := delivery.New(delivery.Options{Hostname: "edge.test", Smarthost: sink.Addr, ConnectTimeout: 10 * time.Second, CommandTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default(false).Delivery
	affiliated, err := address.NewDomainList([]string{"example.edu"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := queue.New(queue.Options{Spool: sp, Deliverer: dc, Hostname: "edge.test", Delivery: cfg, Rules: bounce.Rules{Affiliated: affiliated}})
	if err != nil {
		t.Fatal(err)
	}
	adm := admin.New("127.0.0.1:0", "", nil)
	r.Mount(adm)
	if err := adm.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { r.Run(ctx); done <- struct{}{} }()
	go func() { adm.Serve(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		sp.Close()
	})
	return &daemon{sp: sp, addr: adm.Addr().String(), sink: sink, queue: r}
}

func (d *daemon) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(append([]string{"-admin", d.addr}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// waitTimeout bounds the waits for the queue: an attempt to the sink
// takes milliseconds, but far longer under -race on a loaded machine.
const waitTimeout = 30 * time.Second

// runUntilOK repeats a command that fails while an attempt is running
// (409, the message is busy) until it succeeds or waitTimeout passes,
// and returns the last result.
func (d *daemon) runUntilOK(t *testing.T, args ...string) (code int, out, errs string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		if code, out, errs = d.run(t, args...); code == 0 || time.Now().After(deadline) {
			return code, out, errs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestQueueCommands(t *testing.T) {
	d := startDaemon(t)
	env := &spool.Envelope{From: "scanner@example.edu", ReceivedAt: time.Now(), NextAttempt: time.Now(),
		Recipients: []spool.Recipient{{Addr: "a@example.com"}}}
	msg := "From: scanner@example.edu\r\nSubject: the scan\r\n\r\nsecret body\r\n"
	if err := d.sp.Put(context.Background(), env, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	id := env.ID
	// Wait for the first (deferred) attempt.
	deadline := time.Now().Add(waitTimeout)
	for {
		e, _ := d.sp.Get(id)
		if e != nil && e.Attempts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no first attempt")
		}
		time.Sleep(10 * time.Millisecond)
	}

	code, out, errs := d.run(t, "list")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "a@example.com") || !strings.Contains(out, "pending") ||
		!strings.Contains(out, "451 4.3.0 not now") || !strings.Contains(out, "scanner@example.edu") {
		t.Errorf("list: %d\n%s%s", code, out, errs)
	}
	code, out, _ = d.run(t, "list", "-json")
	var list []queue.Summary
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != id {
		t.Errorf("list -json: %d %s", code, out)
	}
	code, out, _ = d.run(t, "show", id)
	if code != 0 || !strings.Contains(out, "Subject: the scan") || strings.Contains(out, "secret body") || !strings.Contains(out, "History:") {
		t.Errorf("show: %d\n%s", code, out)
	}
	if code, _, errs := d.run(t, "show", "nosuchid"); code != 1 || !strings.Contains(errs, "no such message") {
		t.Errorf("show unknown: %d %s", code, errs)
	}
	// Hold: the flag may follow the command too.
	if code, out, errs := d.run(t, "hold", id); code != 0 || !strings.Contains(out, "on hold") {
		t.Errorf("hold: %d %s %s", code, out, errs)
	}
	if e, _ := d.sp.Get(id); !e.Held {
		t.Error("not held in the spool")
	}
	if code, _, errs := d.run(t, "retry", id); code != 1 || !strings.Contains(errs, "hold") {
		t.Errorf("retry of held: %d %s", code, errs)
	}
	if code, _, _ := d.run(t, "release", id); code != 0 {
		t.Error("release failed")
	}
	sessions := d.sink.Sessions()
	deadline = time.Now().Add(waitTimeout)
	for d.sink.Sessions() == sessions && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d.sink.Sessions() == sessions {
		t.Error("release did not trigger an attempt")
	}
	code, out, _ = d.runUntilOK(t, "retry", "-all")
	if code != 0 || !strings.Contains(out, "scheduled") {
		t.Errorf("retry -all: %d %s", code, out)
	}
	// Delete with an NDR: the message goes, an NDR from <> comes.
	code, _, errOut := d.runUntilOK(t, "delete", id, "-ndr")
	if code != 0 {
		t.Fatalf("delete: %s", errOut)
	}
	list, _ = NewClient(d.addr, "").List(context.Background())
	if len(list) != 1 || list[0].From != "" || list[0].Recipients[0].Addr != "scanner@example.edu" {
		t.Errorf("after delete -ndr the queue holds %+v, want only the NDR", list)
	}
	if code, _, _ := d.run(t, "bogus"); code != 2 {
		t.Error("unknown command accepted")
	}
	if code, _, _ := d.run(t, "show"); code != 2 {
		t.Error("show without id accepted")
	}
}
