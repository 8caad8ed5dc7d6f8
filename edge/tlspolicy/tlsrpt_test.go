package tlspolicy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/tlspolicy"
)

// wantResult checks the one TLSRPT result of an attempt.
func wantResult(t *testing.T, out delivery.Outcome, policyType, failure, mx string) delivery.TLSResult {
	t.Helper()
	if len(out.TLSResults) == 0 {
		t.Fatalf("no TLS result (%s)", out.Summary)
	}
	r := out.TLSResults[0]
	if r.Policy.Type != policyType || r.Failure != failure || r.MXHost != mx || r.Policy.Domain != "example.com" || r.IP == "" {
		t.Fatalf("TLS result %+v, want policy %s, failure %q, mx %s", r, policyType, failure, mx)
	}
	return r
}

// Each way a connection fares under a published policy gives the result
// type RFC 8460 names for it, with the policy it was made under.
func TestTLSResults(t *testing.T) {
	t.Run("dane success", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		leaf := w.leaf("mx1.example.com")
		w.mx(10, "mx1.example.com", "127.0.0.2", leaf)
		w.tlsa("mx1.example.com", 3, 1, 1, spkiSHA256(leaf.Cert))
		r := wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyTLSA, "", "mx1.example.com")
		if len(r.Policy.String) != 1 || r.Policy.String[0] != "3 1 1 "+spkiSHA256(leaf.Cert) {
			t.Errorf("policy string %q", r.Policy.String)
		}
	})
	t.Run("dane mismatch", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		w.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))
		wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyTLSA, delivery.ResultValidationFailure, "mx1.example.com")
	})
	t.Run("tlsa servfail", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		w.dns.SetRcode("_25._tcp.mx1.example.com", dns.TypeTLSA, dns.RcodeServerFailure)
		wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyTLSA, delivery.ResultDNSSECInvalid, "mx1.example.com")
	})
	t.Run("dane stripped starttls", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		w.mx(10, "mx1.example.com", "127.0.0.2", nil)
		w.tlsa("mx1.example.com", 3, 1, 1, strings.Repeat("00", 32))
		wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyTLSA, delivery.ResultSTARTTLSNotSupported, "mx1.example.com")
	})
	t.Run("only unusable tlsa", func(t *testing.T) {
		w := newWorld(t)
		w.dns.Sign("example.com")
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		w.tlsa("mx1.example.com", 1, 1, 1, strings.Repeat("00", 32))
		out := w.deliver(w.policy(nil))
		wantDelivered(t, out, delivery.VerifUnverified)
		wantResult(t, out, delivery.PolicyTLSA, delivery.ResultTLSAInvalid, "mx1.example.com")
	})
	t.Run("sts enforce", func(t *testing.T) {
		w := newWorld(t)
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		w.mx(20, "mx2.example.com", "127.0.0.3", w.leaf("mx2.example.com"))
		w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
		sts := w.sts(w.stsServer(enforceMX2), nil, nil)
		out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
		r := wantResult(t, out, delivery.PolicySTS, delivery.ResultValidationFailure, "mx1.example.com")
		want := []string{"version: STSv1", "mode: enforce", "mx: mx2.example.com", "max_age: 86400"}
		if strings.Join(r.Policy.String, "|") != strings.Join(want, "|") || len(r.Policy.MX) != 1 {
			t.Errorf("policy %+v", r.Policy)
		}
		if len(out.TLSResults) != 2 || out.TLSResults[1].Failure != "" || out.TLSResults[1].MXHost != "mx2.example.com" {
			t.Errorf("second MX: %+v", out.TLSResults)
		}
	})
	t.Run("sts testing expired", func(t *testing.T) {
		w := newWorld(t)
		w.mx(10, "mx1.example.com", "127.0.0.2", w.expired("mx1.example.com"))
		w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
		sts := w.sts(w.stsServer(strings.Replace(enforceMX2, "enforce\r\nmx: mx2", "testing\r\nmx: mx1", 1)), nil, nil)
		out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
		if out.Results[0].Status != delivery.Delivered {
			t.Fatalf("testing mode did not deliver: %s", out.Summary)
		}
		wantResult(t, out, delivery.PolicySTS, delivery.ResultCertExpired, "mx1.example.com")
	})
	t.Run("no policy, no starttls", func(t *testing.T) {
		w := newWorld(t)
		w.mx(10, "mx1.example.com", "127.0.0.2", nil)
		wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyNotFound, delivery.ResultSTARTTLSNotSupported, "mx1.example.com")
	})
	t.Run("no policy, tls", func(t *testing.T) {
		w := newWorld(t)
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
		wantResult(t, w.deliver(w.policy(nil)), delivery.PolicyNotFound, "", "mx1.example.com")
	})
	t.Run("verify rule host mismatch is not reported", func(t *testing.T) {
		w := newWorld(t)
		w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("other.example.com"))
		out := w.deliver(w.policy(rule("example.com", "verify")))
		if len(out.TLSResults) != 0 {
			t.Errorf("a local override was reported: %+v", out.TLSResults)
		}
	})
}

// FailureType reads crypto/x509's certificate errors.
func TestFailureType(t *testing.T) {
	w := newWorld(t)
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("other.example.com"))
	w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	sts := w.sts(w.stsServer(strings.Replace(enforceMX2, "mx2", "mx1", 1)), nil, nil)
	out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
	wantResult(t, out, delivery.PolicySTS, delivery.ResultHostMismatch, "mx1.example.com")

	w2 := newWorld(t)
	other := deliverytest.NewCA(t, "untrusted CA")
	w2.mx(10, "mx1.example.com", "127.0.0.2", other.Issue(t, w2.ca.Cert.NotBefore, w2.ca.Cert.NotAfter, "mx1.example.com"))
	w2.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
	sts2 := w2.sts(w2.stsServer(strings.Replace(enforceMX2, "mx2", "mx1", 1)), nil, nil)
	wantResult(t, w2.deliver(w2.policy(func(o *tlspolicy.Options) { o.STS = sts2 })), delivery.PolicySTS, delivery.ResultCertNotTrusted, "mx1.example.com")
}

// A domain that announces an MTA-STS policy the edge cannot get is
// delivered to as without one, and each connection is reported as an
// STS failure of the kind the fetch had.
func TestTLSResultsPolicyFetchFailures(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		setup      func(w *world) *tlspolicy.STS
	}{
		{"not found", delivery.ResultSTSPolicyFetchError, func(w *world) *tlspolicy.STS {
			s := w.stsServer("")
			s.set(404, "no")
			return w.sts(s, nil, nil)
		}},
		{"not a policy", delivery.ResultSTSPolicyInvalid, func(w *world) *tlspolicy.STS {
			return w.sts(w.stsServer("version: STSv1\r\nmode: sometimes\r\n"), nil, nil)
		}},
		{"untrusted policy host", delivery.ResultSTSWebPKIInvalid, func(w *world) *tlspolicy.STS {
			s := w.stsServer(enforceMX2)
			sts, err := tlspolicy.NewSTS(tlspolicy.STSOptions{TXT: w.res.LookupTXT, HTTPClient: s.client(deliverytest.NewCA(t, "other").Pool),
				FetchTimeout: worldFetchTimeout})
			if err != nil {
				t.Fatal(err)
			}
			return sts
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			s := w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
			w.dns.AddTXT("_mta-sts.example.com", "v=STSv1; id=1;")
			sts := tc.setup(w)
			out := w.deliver(w.policy(func(o *tlspolicy.Options) { o.STS = sts }))
			wantDelivered(t, out, delivery.VerifUnverified)
			wantResult(t, out, delivery.PolicySTS, tc.want, "mx1.example.com")
			if len(s.Messages()) != 1 {
				t.Error("not delivered")
			}
		})
	}
}

// A connection reused for the next message is not another TLS session.
func TestTLSResultsCountSessions(t *testing.T) {
	w := newWorld(t)
	w.mx(10, "mx1.example.com", "127.0.0.2", w.leaf("mx1.example.com"))
	c := w.client(w.policy(nil), time.Minute)
	defer c.Close()
	wantResult(t, w.deliverWith(c), delivery.PolicyNotFound, "", "mx1.example.com")
	if out := w.deliverWith(c); out.Results[0].Status != delivery.Delivered || len(out.TLSResults) != 0 {
		t.Errorf("second message over the same connection: %s, results %+v", out.Summary, out.TLSResults)
	}
}
