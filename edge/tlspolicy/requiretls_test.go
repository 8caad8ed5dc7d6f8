package tlspolicy_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/tlspolicy"
	"github.com/postern/postern/shared/smtpstatus"
)

// mxRT is w.mx for a sink that advertises REQUIRETLS.
func (w *world) mxRT(pref uint16, name, ip string, leaf *deliverytest.Leaf) *deliverytest.Sink {
	w.dns.AddMX("example.com", pref, name)
	w.dns.AddA(name, ip)
	o := deliverytest.Options{Addr: fmt.Sprintf("%s:%d", ip, w.port), Name: name, REQUIRETLS: true}
	if leaf != nil {
		o.TLS = leaf.Config
	}
	return deliverytest.Start(w.t, o)
}

func (w *world) deliverJob(p delivery.TLSPolicy, requireTLS bool, data string) delivery.Outcome {
	w.t.Helper()
	c := w.client(p, -1)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), worldDeliverTime)
	defer cancel()
	return c.Deliver(ctx, &delivery.Job{QueueID: "Q1", From: "scanner@example.edu", Domain: "example.com", RequireTLS: requireTLS,
		Rcpts: []delivery.Rcpt{{Addr: "a@example.com"}}, Data: []byte(data)})
}

const plainMsg = "Subject: scan\r\n\r\nhello\r\n"

func wantRequireTLSDeferred(t *testing.T, out delivery.Outcome, why string) {
	t.Helper()
	r := out.Results[0]
	if r.Status != delivery.Temporary || r.Enhanced != smtpstatus.TempRequireTLS {
		t.Fatalf("result %v %d %s %q, want a 4.7.30 deferral (%s)", r.Status, r.Code, r.Enhanced, r.Text, why)
	}
}

// REQUIRETLS outbound (RFC 8689): only authenticated TLS (DANE, enforced
// MTA-STS, verify) to a next hop that offers REQUIRETLS, which gets the
// parameter; anything less defers with 4.7.30 and sends nothing.
func TestREQUIRETLSOutbound(t *testing.T) {
	t.Run("opportunistic is not enough", func(t *testing.T) {
		w := newWorld(t)
		s := w.mxRT(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		wantRequireTLSDeferred(t, w.deliverJob(w.policy(nil), true, plainMsg), "TLS unauthenticated")
		noSessions(t, s, "REQUIRETLS needs an authenticated server")
	})
	t.Run("dane without REQUIRETLS at the next hop", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		leaf := w.leaf("mx1.example.com")
		s := w.mx(10, "mx1.example.com", "127.0.0.2", leaf)
		w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(leaf.Cert))
		out := w.deliverJob(w.policy(nil), true, plainMsg)
		wantRequireTLSDeferred(t, out, "no REQUIRETLS extension")
		noSessions(t, s, "the next hop does not offer REQUIRETLS")
		// The same message without REQUIRETLS goes.
		wantDelivered(t, w.deliverJob(w.policy(nil), false, plainMsg), delivery.VerifDANE)
	})
	t.Run("dane and REQUIRETLS", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		leaf := w.leaf("mx1.example.com")
		s := w.mxRT(10, "mx1.example.com", "127.0.0.2", leaf)
		w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(leaf.Cert))
		wantDelivered(t, w.deliverJob(w.policy(nil), true, plainMsg), delivery.VerifDANE)
		if m := s.Messages(); len(m) != 1 || !m[0].TLS || !m[0].RequireTLS {
			t.Errorf("sink got %+v, want one message over TLS with REQUIRETLS", m)
		}
	})
	t.Run("mta-sts enforce and REQUIRETLS, skipping a host without", func(t *testing.T) {
		w := newWorld(t)
		s1 := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		s2 := w.mxRT(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
		w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
		sts := w.sts(w.stsServer("version: STSv1\r\nmode: enforce\r\nmx: *.example.com\r\nmax_age: 86400\r\n"), nil, nil)
		out := w.deliverJob(w.policy(func(o *tlspolicy.Options) { o.STS = sts }), true, plainMsg)
		wantDelivered(t, out, delivery.VerifMTASTS)
		noSessions(t, s1, "mx1 lacks REQUIRETLS")
		if m := s2.Messages(); len(m) != 1 || !m[0].RequireTLS {
			t.Errorf("mx2 got %+v", m)
		}
	})
	t.Run("verify rule with a bad certificate", func(t *testing.T) {
		w := newWorld(t)
		s := w.mxRT(10, "mx1.example.com", "127.0.0.2", w.expired("mx1.example.com"))
		out := w.deliverJob(w.policy(rule("example.com", "verify")), true, plainMsg)
		if out.Results[0].Status != delivery.Temporary {
			t.Fatalf("expired certificate: %s", out.Summary)
		}
		noSessions(t, s, "an expired certificate does not authenticate")
	})
	t.Run("TLS-Required: No is ignored with REQUIRETLS", func(t *testing.T) {
		w := newWorld(t)
		s := w.mxRT(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		wantRequireTLSDeferred(t, w.deliverJob(w.policy(nil), true, "TLS-Required: No\r\n"+plainMsg), "REQUIRETLS wins")
		noSessions(t, s, "REQUIRETLS wins over TLS-Required: No")
	})
}

// "TLS-Required: No" (RFC 8689 §5) sets the published policies aside:
// an MX the MTA-STS policy does not list, or one whose TLSA records do
// not match, gets the message with opportunistic TLS; a local override
// still applies.
func TestTLSRequiredNo(t *testing.T) {
	w := newWorld(t)
	s := w.mx(10, "mx1.example.com", "127.0.0.2", nil)
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	sts := w.sts(w.stsServer(enforceMX2), nil, nil)
	p := w.policy(func(o *tlspolicy.Options) { o.STS = sts })
	wantDeferred(t, w.deliverJob(p, false, plainMsg), "not listed")
	noSessions(t, s, "mx1 is not in the policy")
	wantDelivered(t, w.deliverJob(p, false, "tls-required:  no\r\n"+plainMsg), delivery.VerifPlain)
	if len(s.Messages()) != 1 {
		t.Errorf("TLS-Required: No did not set the MTA-STS policy aside")
	}
	// A header further down the body is not a header.
	wantDeferred(t, w.deliverJob(p, false, plainMsg+"TLS-Required: No\r\n"), "not listed")

	w2 := newWorld(t)
	w2.dns.Sign("example.com")
	w2.mx(10, "mx1.example.com", "127.0.0.2", w2.leaf("mx1.example.com"))
	w2.tlsa("mx1.example.com", 3, 1, 1, "00"+spkiSHA256(w2.leaf("x").Cert)[2:])
	wantDelivered(t, w2.deliverJob(w2.policy(nil), false, "TLS-Required: No\r\n"+plainMsg), delivery.VerifUnverified)
	wantDeferred(t, w2.deliverJob(w2.policy(rule("example.com", "dane")), false, "TLS-Required: No\r\n"+plainMsg), "matches none")
}
