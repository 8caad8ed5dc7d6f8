package tlspolicy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/tlspolicy"
)

// DANE-EE 3 1 1: the key matches, so the certificate is accepted although
// it has expired and names another host (RFC 7672 §3.1.1).
func TestDANEEEIgnoresNameAndExpiry(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	leaf := w.expired("unrelated.example.net")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", leaf)
	w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(leaf.Cert))
	wantDelivered(t, w.deliver(w.policy(nil)), delivery.VerifDANE)
	if m := s.Messages(); len(m) != 1 || !m[0].TLS {
		t.Errorf("sink messages %+v, want one over TLS", m)
	}
	// 3 0 1 (the whole certificate) works the same.
	w.dns.Remove("_25._tcp.mx1.example.com")
	w.tlsa("mx1.example.com", 3, 0, 1, certSHA256(leaf.Cert))
	wantDelivered(t, w.deliver(w.policy(nil)), delivery.VerifDANE)
}

// A TLSA set the certificate does not match defers: no fallback to
// unauthenticated TLS or plaintext.
func TestDANEWrongTLSADefers(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(w.leaf("mx1.example.com").Cert)) // another key
	wantDeferred(t, w.deliver(w.policy(nil)), "matches none")
	noSessions(t, s, "a DANE mismatch must defer")
}

// DANE-TA 2 0 1: the chain must lead to the published CA and the leaf
// must be valid for the MX host name.
func TestDANETA(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.tlsa("mx1.example.com", 2, 0, 1, certSHA256(w.ca.Cert))
	// Delivered although the policy's WebPKI roots do not know the CA.
	wantDelivered(t, w.deliver(w.policy(func(o *tlspolicy.Options) { o.RootCAs = nil })), delivery.VerifDANE)

	w2 := newWorld(t)
	w2.ca = w.ca
	w2.dns.Sign("example.com")
	s := w2.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("other.example.com"))
	w2.tlsa("mx1.example.com", 2, 0, 1, certSHA256(w.ca.Cert))
	wantDeferred(t, w2.deliver(w2.policy(nil)), "DANE-TA")
	noSessions(t, s, "DANE-TA needs the MX name in the certificate")
}

// PKIX-TA/EE (usages 0 and 1) are not usable for SMTP: with only those,
// TLS is still mandatory but unauthenticated.
func TestDANEIgnoresPKIXUsages(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.tlsa("mx1.example.com", 1, 1, 1, strings.Repeat("00", 32)) // would never match
	wantDelivered(t, w.deliver(w.policy(nil)), delivery.VerifUnverified)

	w2 := newWorld(t)
	w2.dns.Sign("example.com")
	w2.mx(10, "mx1.example.com", "127.0.0.2", nil)
	w2.tlsa("mx1.example.com", 0, 0, 1, strings.Repeat("00", 32))
	wantDeferred(t, w2.deliver(w2.policy(nil)), "does not offer STARTTLS")

	// A "dane" rule wants usable records: defers.
	w3 := newWorld(t)
	w3.dns.Sign("example.com")
	w3.mx(10, "mx1.example.com", "127.0.0.2", w3.leaf("mx1.example.com"))
	w3.tlsa("mx1.example.com", 1, 1, 1, strings.Repeat("00", 32))
	wantDeferred(t, w3.deliver(w3.policy(rule("example.com", "dane"))), "usable")
}

// A server that does not offer STARTTLS (stripped by an attacker) while
// its TLSA records say it must: deferred.
func TestDANEStrippedSTARTTLSDefers(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", nil)
	w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(w.leaf("mx1.example.com").Cert))
	wantDeferred(t, w.deliver(w.policy(nil)), "does not offer STARTTLS")
	noSessions(t, s, "DANE requires TLS")
}

// A TLSA lookup that fails (SERVFAIL, what a validator answers for a
// bogus signature) in a signed zone refuses the host instead of taking it
// for "no TLSA"; the next MX is tried.
func TestDANETLSAServfailDefers(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.dns.SetRcode("_25._tcp.mx1.example.com", dns.TypeTLSA, dns.RcodeServerFailure)
	wantDeferred(t, w.deliver(w.policy(nil)), "TLSA lookup")
	noSessions(t, s, "a failed TLSA lookup must not downgrade")

	s2 := w.mx(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
	wantDelivered(t, w.deliver(w.policy(nil)), delivery.VerifUnverified)
	if len(s2.Messages()) != 1 {
		t.Error("the MX without TLSA trouble was not used")
	}
}

// Without authentication there is no DANE: TLSA records in an unsigned
// zone, or no validating resolver at all, are ignored (opportunistic TLS,
// plaintext fallback).
func TestDANEOnlyWithAuthenticatedAnswers(t *testing.T) {
	w := newWorld(t)
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))
	wantDelivered(t, w.deliver(w.policy(nil)), delivery.VerifUnverified) // zone not signed

	w.dns.Sign("example.com")
	wantDeferred(t, w.deliver(w.policy(nil)), "matches none") // signed: enforced
	wantDelivered(t, w.deliver(w.policy(func(o *tlspolicy.Options) { o.DNSSEC = nil })), delivery.VerifUnverified)

	// The MX answer must be authenticated too: an unsigned domain whose
	// MX host sits in a signed zone does not get DANE.
	w2 := newWorld(t)
	w2.dns.Sign("mail.example.net")
	w2.mx(10, "mx1.mail.example.net", "127.0.0.2", w2.leaf("mx1.mail.example.net"))
	w2.tlsa("mx1.mail.example.net", 3, 1, 1, strings.Repeat("00", 32))
	wantDelivered(t, w2.deliver(w2.policy(nil)), delivery.VerifUnverified)
}

func TestUsable(t *testing.T) {
	h := strings.Repeat("ab", 32)
	mk := func(u, s, m uint8, data string) *dns.TLSA {
		return &dns.TLSA{Usage: u, Selector: s, MatchingType: m, Certificate: data}
	}
	recs := []*dns.TLSA{
		mk(3, 1, 1, h), mk(2, 0, 1, h), mk(3, 0, 0, "3082"), mk(3, 1, 2, strings.Repeat("ab", 64)),
		mk(0, 0, 1, h), mk(1, 1, 1, h), // PKIX usages
		mk(3, 2, 1, h), mk(3, 1, 3, h), // unknown selector / matching type
		mk(3, 1, 1, "abcd"), mk(3, 1, 1, "zz"), // wrong length, not hex
	}
	if got := len(tlspolicy.Usable(recs)); got != 4 {
		t.Errorf("%d usable records, want 4", got)
	}
}

// The AD bit counts only from the resolvers marked as validating: the
// delivery resolver's server signs (sets AD), the validating one does not
// know the zone as signed, and the wrong TLSA record is not enforced.
func TestDANETrustsOnlyValidatingResolvers(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	w.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))

	other := newWorld(t) // stands for the validating resolver: same data, unsigned
	other.dns.AddMX("example.com", 10, "mx1.example.com")
	other.dns.AddA("mx1.example.com", "127.0.0.2")
	other.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))
	wantDelivered(t, w.deliver(w.policy(func(o *tlspolicy.Options) { o.DNSSEC = other.val })), delivery.VerifUnverified)
	wantDeferred(t, w.deliver(w.policy(nil)), "matches none")
}

// A connection authenticated by one TLSA set is reused for the next
// message while the set is unchanged, and never once it changed: the new
// records are checked on a new connection.
func TestDANEConnectionReuseFollowsTLSA(t *testing.T) {
	w := newWorld(t)
	w.dns.Sign("example.com")
	leaf := w.leaf("mx1.example.com")
	s := w.mx(10, "mx1.example.com", "127.0.0.2", leaf)
	w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(leaf.Cert))
	c := w.client(w.policy(nil), time.Minute)
	defer c.Close()
	wantDelivered(t, w.deliverWith(c), delivery.VerifDANE)
	first := s.Sessions() // go-smtp starts a session again after STARTTLS
	wantDelivered(t, w.deliverWith(c), delivery.VerifDANE)
	if n := s.Sessions(); n != first {
		t.Errorf("%d sessions after the second message, %d after the first: the connection was not reused", n, first)
	}
	w.dns.Remove("_25._tcp.mx1.example.com")
	w.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))
	wantDeferred(t, w.deliverWith(c), "matches none")
	if n := len(s.Messages()); n != 2 {
		t.Errorf("%d messages, want the third refused", n)
	}
}
