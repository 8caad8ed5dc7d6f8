package bounce

import (
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
