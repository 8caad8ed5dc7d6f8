package smtpd

import (
	"strings"
	"testing"
)

// With the spool already below its free-space reserve the transaction is
// refused at MAIL with 452 4.3.1, before any upload.
func TestSpoolBelowReserveRefusedAtMail(t *testing.T) {
	e := startEdge(t, edgeOpts{minFree: 1 << 60})
	c := e.dial(20)
	c.hello()
	if r := c.cmd("MAIL FROM:<a@example.edu>"); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("MAIL below the reserve: %q, want 452 4.3.1", r)
	}
	if e.count() != 0 {
		t.Fatal("message spooled below the reserve")
	}
}
