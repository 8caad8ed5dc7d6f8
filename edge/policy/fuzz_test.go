package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/shared/address"
)

// FuzzRcpt: for any sender and recipient an unregistered client sends, the
// policy never panics, every reply is one printable line, an accepted
// sender and an accepted recipient are always in an affiliated domain (no
// open relay, no relaying by bounce).
func FuzzRcpt(f *testing.F) {
	for _, s := range []string{
		"user@example.edu", "user%evil.com@example.edu", "a!b@example.edu", "a@b@example.edu",
		"user@[192.0.2.1]", "user@example.edu.evil.com", "user@EXAMPLE.EDU.", "user@xn--exmple-cua.edu",
		"\"quoted\"@example.edu", "@a,@b:user@example.edu", "user@", "", "user@ex\x00ample.edu",
		"üser@exämple.edu", "user@dept.example.edu", "user@ｅｘａｍｐｌｅ.edu", "user@example。edu",
		"victim@example.com", "victim@example.com@example.edu",
	} {
		f.Add("scan@example.edu", s)
	}
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, sender, rcpt string) {
		txn := NewTxn(netip.MustParseAddr("10.0.0.9"), Identity{Explain: "no PTR record"})
		r := fx.pol.Mail(txn, sender, domains(nil))
		checkReply(t, r)
		if r != nil {
			return
		}
		// No relaying by bounce: an unregistered client's accepted
		// sender is always affiliated, so its NDRs stay inside.
		if at := strings.LastIndexByte(txn.Sender, '@'); at < 0 || !fx.pol.cfg.Affiliated.Contains(txn.Sender[at+1:]) {
			t.Fatalf("unregistered client's sender %q accepted as %q", sender, txn.Sender)
		}
		canon, _, r := fx.pol.Rcpt(txn, rcpt)
		checkReply(t, r)
		fx.pol.Abort(txn)
		if r != nil {
			return
		}
		at := strings.LastIndexByte(canon, '@')
		if at < 0 {
			t.Fatalf("accepted %q as %q without a domain", rcpt, canon)
		}
		dom := canon[at+1:]
		if !fx.pol.cfg.Affiliated.Contains(dom) {
			t.Fatalf("open relay: unregistered client got %q (canonical %q) accepted", rcpt, canon)
		}
		if d, err := address.CanonicalDomain(dom); err != nil || d != dom {
			t.Fatalf("stored domain %q is not canonical (%q, %v)", dom, d, err)
		}
	})
}

func checkReply(t *testing.T, r *Reply) {
	t.Helper()
	if r == nil {
		return
	}
	for _, c := range r.Text {
		if c < 0x20 || c > 0x7e {
			t.Fatalf("reply text not printable ASCII: %q", r.Text)
		}
	}
	if r.Code < 400 || r.Code > 599 {
		t.Fatalf("refusal with code %d", r.Code)
	}
}

// FuzzCheckHeader: never panics; a message whose header section has no
// "From:" line is never accepted.
func FuzzCheckHeader(f *testing.F) {
	for _, s := range []string{
		"From: a@example.edu\r\n\r\nbody\r\n", "Subject: x\r\n\r\n", "", "\r\n",
		"From: =?utf-8?q?=C3=A4?= <a@example.edu>\r\n\r\n", "From: a@b\r\nFrom: c@d\r\n\r\n",
		"From: undisclosed-recipients:;\r\n\r\n", "From:\r\n\t<a@example.edu>\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := CheckHeader(msg)
		checkReply(t, r)
		if r == nil && !strings.Contains(strings.ToLower(string(msg)), "from:") {
			t.Fatalf("accepted a message without a From header: %q", msg)
		}
	})
}
