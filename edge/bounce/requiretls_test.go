package bounce

import (
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/edge/dsn"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/smtpstatus"
)

// A REQUIRETLS message no next hop could take (4.7.30 at each attempt)
// is reported, when it expires, with 5.7.30 (RFC 8689 §4.2.1); other
// expired recipients keep their last temporary status.
func TestExpiredREQUIRETLSIs5730(t *testing.T) {
	rc := &spool.Recipient{Addr: "a@example.com", Code: 451, EnhancedCode: smtpstatus.TempRequireTLS, Reply: "REQUIRETLS: mx does not offer REQUIRETLS"}
	if got := Recipient(rc, dsn.Failed, true, time.Now()).Status; got != smtpstatus.RequireTLS {
		t.Errorf("expired REQUIRETLS status %s, want 5.7.30", got)
	}
	if got := Recipient(rc, dsn.Delayed, false, time.Now()).Status; got != smtpstatus.TempRequireTLS {
		t.Errorf("delay notice status %s, want 4.7.30", got)
	}
	rc.EnhancedCode = smtpstatus.NoAnswer
	if got := Recipient(rc, dsn.Failed, true, time.Now()).Status; got != smtpstatus.NoAnswer {
		t.Errorf("other expiry status %s, want unchanged 4.4.1", got)
	}
}

// The NDR of a REQUIRETLS message returns its header only, even with
// RET=FULL: the body was to travel only over authenticated TLS.
func TestREQUIRETLSNDRReturnsHeaderOnly(t *testing.T) {
	now := time.Now()
	env := &spool.Envelope{ID: "Q1", From: "scanner@example.edu", DSNRet: "FULL", RequireTLS: true, ReceivedAt: now,
		Recipients: []spool.Recipient{{Addr: "a@example.com", State: spool.Failed, Code: 451, EnhancedCode: smtpstatus.TempRequireTLS}}}
	data := []byte("From: scanner@example.edu\r\nSubject: scan\r\n\r\nSECRET-BODY\r\n")
	rcpts := []dsn.Recipient{Recipient(&env.Recipients[0], dsn.Failed, true, now)}
	msg, err := Compose("edge.example.edu", env, data, rcpts, "", now, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(msg.Data), "SECRET-BODY") || !strings.Contains(string(msg.Data), "Subject: scan") {
		t.Errorf("NDR of a REQUIRETLS message:\n%s", msg.Data)
	}
	env.RequireTLS = false
	if msg, _ = Compose("edge.example.edu", env, data, rcpts, "", now, now); !strings.Contains(string(msg.Data), "SECRET-BODY") {
		t.Error("RET=FULL without REQUIRETLS no longer returns the body")
	}
}
