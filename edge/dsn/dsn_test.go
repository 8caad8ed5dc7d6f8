package dsn

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	arrival = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	now     = time.Date(2026, 3, 2, 9, 20, 0, 0, time.UTC)
)

const original = "Received: from scanner1.example.edu ([127.0.0.10])\r\n\tby edge.example.edu with ESMTP id Q1; Mon, 2 Mar 2026 09:15:00 +0000\r\n" +
	"From: Scanner <scanner@example.edu>\r\nTo: someone@example.com\r\nSubject: Scan 42\r\n" +
	"Message-ID: <scan42@example.edu>\r\n\r\nbody line 1\r\nbody line 2\r\n"

func failedReport() *Report {
	return &Report{
		ReportingMTA: "edge.example.edu",
		QueueID:      "Q1",
		To:           "scanner@example.edu",
		EnvelopeID:   "scan-42",
		ArrivalDate:  arrival,
		Date:         now,
		ReceivedFrom: "scanner1.example.edu",
		Recipients: []Recipient{
			{Addr: "nobody@example.com", ORCPT: "rfc822;Nobody@Example.com", Action: Failed, Status: "5.1.1",
				RemoteMTA: "mx1.example.com", Code: 550, Reply: "User unknown\nin virtual table", LastAttempt: now},
			{Addr: "x@null.example", Action: Failed, Status: "5.1.10", Reply: "domain null.example does not accept mail (null MX)", LastAttempt: now},
		},
		Original: []byte(original),
	}
}

// parsed is a DSN read back with the standard library only.
type parsed struct {
	header    mail.Header
	text      string
	perMsg    textproto.MIMEHeader
	perRcpt   []textproto.MIMEHeader
	thirdType string
	third     []byte
}

func parse(t *testing.T, msg []byte) parsed {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("report has a bare LF")
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("read report: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("content-type: %v", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content-type %s %v", mt, params)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var p parsed
	p.header = m.Header
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("report has %d parts, want 3", i)
			}
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch i {
		case 0:
			if ct != "text/plain" {
				t.Fatalf("part 1 is %s", ct)
			}
			p.text = string(body)
		case 1:
			if ct != "message/delivery-status" {
				t.Fatalf("part 2 is %s", ct)
			}
			// RFC 3464: groups of header fields separated by blank lines.
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
			p.perMsg, err = tr.ReadMIMEHeader()
			if err != nil && err != io.EOF {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) > 0 {
					p.perRcpt = append(p.perRcpt, h)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("per-recipient fields: %v", err)
				}
			}
		case 2:
			p.thirdType = ct
			p.third = body
		}
	}
	return p
}

func TestFailedReportFields(t *testing.T) {
	msg, err := Build(failedReport())
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	for k, want := range map[string]string{
		"To":             "<scanner@example.edu>",
		"Subject":        "Undelivered Mail Returned to Sender",
		"Auto-Submitted": "auto-replied",
		"From":           "Mail Delivery System <MAILER-DAEMON@edge.example.edu>",
	} {
		if got := p.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if d, err := p.header.Date(); err != nil || !d.Equal(now) {
		t.Errorf("Date = %v, %v", d, err)
	}
	for k, want := range map[string]string{
		"Reporting-Mta":        "dns; edge.example.edu",
		"Original-Envelope-Id": "scan-42",
		"Arrival-Date":         arrival.Format(time.RFC1123Z),
		"Received-From-Mta":    "dns; scanner1.example.edu",
	} {
		if got := p.perMsg.Get(k); got != want {
			t.Errorf("per-message %s = %q, want %q", k, got, want)
		}
	}
	if len(p.perRcpt) != 2 {
		t.Fatalf("%d recipient blocks, want 2", len(p.perRcpt))
	}
	r0, r1 := p.perRcpt[0], p.perRcpt[1]
	for k, want := range map[string]string{
		"Original-Recipient": "rfc822;Nobody@Example.com",
		"Final-Recipient":    "rfc822; nobody@example.com",
		"Action":             "failed",
		"Status":             "5.1.1",
		"Remote-Mta":         "dns; mx1.example.com",
		"Diagnostic-Code":    "smtp; 550 5.1.1 User unknown in virtual table",
		"Last-Attempt-Date":  now.Format(time.RFC1123Z),
	} {
		if got := r0.Get(k); got != want {
			t.Errorf("rcpt 1 %s = %q, want %q", k, got, want)
		}
	}
	for k, want := range map[string]string{
		"Final-Recipient": "rfc822; x@null.example",
		"Status":          "5.1.10",
		"Diagnostic-Code": "X-Postern; domain null.example does not accept mail (null MX)",
		"Remote-Mta":      "",
	} {
		if got := r1.Get(k); got != want {
			t.Errorf("rcpt 2 %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(p.text, "<nobody@example.com>: host mx1.example.com said: 550 User unknown in virtual table") {
		t.Errorf("human-readable part lacks the remote reply:\n%s", p.text)
	}
	if p.thirdType != "text/rfc822-headers" {
		t.Errorf("third part %s, want text/rfc822-headers", p.thirdType)
	}
	if string(p.third) != string(Headers([]byte(original))) {
		t.Errorf("returned headers:\n%q\nwant\n%q", p.third, Headers([]byte(original)))
	}
	if bytes.Contains(p.third, []byte("body line")) {
		t.Error("headers-only return contains the body")
	}
}

func TestReturnFull(t *testing.T) {
	r := failedReport()
	r.Return = "FULL"
	msg, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	if p.thirdType != "message/rfc822" || string(p.third) != original {
		t.Errorf("RET=FULL: part %s %q", p.thirdType, p.third)
	}
	// Too big for a full return: headers only.
	r.Original = append([]byte(original), bytes.Repeat([]byte("x"), MaxFullReturn)...)
	msg, _ = Build(r)
	if p := parse(t, msg); p.thirdType != "text/rfc822-headers" {
		t.Errorf("oversized RET=FULL returned %s", p.thirdType)
	}
}

// TestReturnedHeadersCapped: a header section above MaxReturnedHeaders
// (or a message without a body separator, whose "headers" are all of
// it) is returned cut at a line end within the bound, and the text says
// so; RET=FULL of a message above MaxFullReturn is cut the same way.
func TestReturnedHeadersCapped(t *testing.T) {
	hdr := strings.Repeat("X-Filler: "+strings.Repeat("y", 90)+"\r\n", 1000) // 102 KB
	for name, orig := range map[string]string{
		"huge header section": hdr + "\r\nbody\r\n",
		"no body separator":   hdr,
	} {
		for _, ret := range []string{"HDRS", "FULL"} {
			r := failedReport()
			r.Return = ret
			r.Original = []byte(orig + strings.Repeat("z", MaxFullReturn))
			msg, err := Build(r)
			if err != nil {
				t.Fatal(err)
			}
			p := parse(t, msg)
			if p.thirdType != "text/rfc822-headers" || len(p.third) > MaxReturnedHeaders || len(p.third) < MaxReturnedHeaders-200 ||
				!strings.HasPrefix(hdr, string(p.third)) || !strings.HasSuffix(string(p.third), "\r\n") {
				t.Errorf("%s RET=%s: returned %s of %d bytes", name, ret, p.thirdType, len(p.third))
			}
			if !strings.Contains(p.text, "cut to its first 32 KiB") {
				t.Errorf("%s RET=%s: text does not say the headers were cut: %q", name, ret, p.text)
			}
			if len(msg) > MaxReturnedHeaders+8<<10 {
				t.Errorf("%s RET=%s: report of %d bytes", name, ret, len(msg))
			}
		}
	}
}

func TestDelayReport(t *testing.T) {
	until := arrival.Add(5 * 24 * time.Hour)
	r := &Report{
		ReportingMTA: "edge.example.edu", QueueID: "Q2", To: "scanner@example.edu",
		ArrivalDate: arrival, Date: now,
		Recipients: []Recipient{{Addr: "a@example.com", Action: Delayed, Status: "4.4.1",
			Reply: "connection refused", WillRetryUntil: until}},
		NextAttempt: now.Add(time.Hour),
		Original:    []byte(original),
	}
	msg, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	if got := p.header.Get("Subject"); got != "Delayed Mail (still being retried)" {
		t.Errorf("subject %q", got)
	}
	if got := p.perRcpt[0].Get("Action"); got != "delayed" {
		t.Errorf("action %q", got)
	}
	if got := p.perRcpt[0].Get("Will-Retry-Until"); got != until.Format(time.RFC1123Z) {
		t.Errorf("Will-Retry-Until %q", got)
	}
	if want := "The next attempt is at " + now.Add(time.Hour).Format(time.RFC1123Z) + "."; !strings.Contains(p.text, want) {
		t.Errorf("text %q does not say %q", p.text, want)
	}
}

func TestBuildRejects(t *testing.T) {
	if _, err := Build(&Report{}); err == nil {
		t.Error("report without recipients built")
	}
	r := failedReport()
	r.Recipients[1].Action = Delayed
	if _, err := Build(r); err == nil {
		t.Error("report mixing actions built")
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := Build(failedReport())
	b, _ := Build(failedReport())
	if !bytes.Equal(a, b) {
		t.Error("Build is not deterministic")
	}
	r := failedReport()
	r.QueueID = "Q9"
	c, _ := Build(r)
	pa, pc := parse(t, a), parse(t, c)
	if pa.header.Get("Message-ID") == pc.header.Get("Message-ID") {
		t.Error("different reports share a Message-ID")
	}
}

func TestGolden(t *testing.T) {
	msg, err := Build(failedReport())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "failed.eml")
	if *update {
		if err := os.WriteFile(path, msg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(msg, want) {
		t.Errorf("report differs from %s (go test -update rewrites it):\n%s", path, msg)
	}
}

func TestHeaders(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"A: b\r\n\r\nbody", "A: b\r\n\r\n"},
		{"A: b\r\n", "A: b\r\n"},
		{"A: b\n\nbody", "A: b\n\n"},
		{"", ""},
	} {
		if got := string(Headers([]byte(c.in))); got != c.want {
			t.Errorf("Headers(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzBuild(f *testing.F) {
	f.Add("scanner@example.edu", "x@example.com", "550 no\r\nsuch", "env-id", []byte(original), "FULL")
	f.Fuzz(func(t *testing.T, to, rcpt, reply, envid string, orig []byte, ret string) {
		r := &Report{ReportingMTA: "edge.example.edu", QueueID: "Q", To: to, EnvelopeID: envid, Return: ret,
			ArrivalDate: arrival, Date: now, Original: orig,
			Recipients: []Recipient{{Addr: rcpt, Action: Failed, Status: "5.0.0", Code: 550, Reply: reply}}}
		msg, err := Build(r)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(msg))
		if err != nil {
			return // a hostile To can break the header; the queue only passes parsed addresses
		}
		_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("content-type: %v", err)
		}
		mr := multipart.NewReader(m.Body, params["boundary"])
		if _, err := mr.NextPart(); err != nil {
			t.Fatalf("first part: %v", err)
		}
	})
}
