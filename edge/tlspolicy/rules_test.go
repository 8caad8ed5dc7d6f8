package tlspolicy_test

import (
	"testing"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/tlspolicy"
)

func rule(domain, mode string, mx ...string) func(*tlspolicy.Options) {
	return func(o *tlspolicy.Options) {
		o.Rules = append(o.Rules, tlspolicy.Rule{Domain: domain, Mode: mode, MX: mx})
	}
}

// may: a server without STARTTLS gets the message in plaintext.
func TestRuleMayWithoutSTARTTLSDeliversPlain(t *testing.T) {
	w := newWorld(t)
	s := w.mx(10, "mx1.example.com", "127.0.0.2", nil)
	wantDelivered(t, w.deliver(w.policy(rule("example.com", "may"))), delivery.VerifPlain)
	if m := s.Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("sink messages %+v, want one in plaintext", m)
	}
}

// encrypt (and stronger) never falls back to plaintext: a server that
// does not offer STARTTLS (or a man in the middle stripping it) defers.
func TestRuleEncryptStrippedSTARTTLSDefers(t *testing.T) {
	w := newWorld(t)
	s := w.mx(10, "mx1.example.com", "127.0.0.2", nil)
	for _, mode := range []string{"encrypt", "verify"} {
		t.Run(mode, func(t *testing.T) {
			wantDeferred(t, w.deliver(w.policy(rule("example.com", mode))), "does not offer STARTTLS")
			noSessions(t, s, "mail went in plaintext")
		})
	}
}

// encrypt takes any certificate; verify wants a valid one for the MX
// name, and an expired or misnamed one defers.
func TestRuleEncryptAndVerify(t *testing.T) {
	w := newWorld(t)
	s := w.mx(10, "mx1.example.com", "127.0.0.2", w.expired("mx1.example.com"))
	wantDelivered(t, w.deliver(w.policy(rule("example.com", "encrypt"))), delivery.VerifUnverified)
	wantDeferred(t, w.deliver(w.policy(rule("example.com", "verify"))), "expired")
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages, want only the encrypt one", n)
	}

	w2 := newWorld(t)
	w2.ca = w.ca
	w2.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	wantDelivered(t, w2.deliver(w2.policy(rule("example.com", "verify"))), delivery.VerifPKIX)

	w3 := newWorld(t)
	w3.ca = w.ca
	w3.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("other.example.net"))
	wantDeferred(t, w3.deliver(w3.policy(rule("example.com", "verify"))), "certificate")
}

// none never starts TLS, even when offered.
func TestRuleNoneSendsPlain(t *testing.T) {
	w := newWorld(t)
	s := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	wantDelivered(t, w.deliver(w.policy(rule("example.com", "none"))), delivery.VerifPlain)
	if m := s.Messages(); len(m) != 1 || m[0].TLS {
		t.Errorf("sink messages %+v, want one in plaintext", m)
	}
}

// mx pins the hosts: the preferred MX that is not pinned is not used.
func TestRuleMXPin(t *testing.T) {
	w := newWorld(t)
	s1 := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	s2 := w.mx(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
	wantDelivered(t, w.deliver(w.policy(rule("example.com", "verify", "*.example.com", "mx9.example.org"))), delivery.VerifPKIX)
	out := w.deliver(w.policy(rule("example.com", "verify", "mx2.example.com")))
	wantDelivered(t, out, delivery.VerifPKIX)
	if len(s1.Messages()) != 1 || len(s2.Messages()) != 1 {
		t.Errorf("mx1 got %d, mx2 got %d; want the pinned mx2 used the second time", len(s1.Messages()), len(s2.Messages()))
	}
	// Nothing pinned is in the MX set: deferred.
	wantDeferred(t, w.deliver(w.policy(rule("example.com", "may", "mx.elsewhere.example"))), "pins")
}

// A ".domain" rule covers subdomains, not the domain itself; an exact
// rule wins.
func TestRuleSubdomainMatch(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("sub.example.com", 10, "mx1.example.com")
	w.mx(10, "mx1.example.com", "127.0.0.2", nil)
	p := w.policy(func(o *tlspolicy.Options) {
		o.Rules = []tlspolicy.Rule{{Domain: ".example.com", Mode: "encrypt"}, {Domain: "b.example.com", Mode: "may"}}
	})
	for _, tc := range []struct {
		domain string
		mode   delivery.TLSMode
	}{{"sub.example.com", delivery.Required}, {"a.b.example.com", delivery.Required}, {"b.example.com", delivery.Opportunistic}, {"example.com", delivery.Opportunistic}} {
		req, err := p.Requirement(t.Context(), tc.domain, "mx1.example.com")
		if err != nil || req.Mode != tc.mode {
			t.Errorf("%s: %v %v, want %v", tc.domain, req.Mode, err, tc.mode)
		}
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	if _, err := tlspolicy.New(tlspolicy.Options{Rules: []tlspolicy.Rule{{Domain: "example.com", Mode: "dane"}}}); err == nil {
		t.Error("dane without a validating resolver accepted")
	}
	if _, err := tlspolicy.New(tlspolicy.Options{Rules: []tlspolicy.Rule{{Domain: "example.com", Mode: "secure"}}}); err == nil {
		t.Error("unknown mode accepted")
	}
}
