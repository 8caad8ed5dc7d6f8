package delivery

import (
	"bytes"
	"fmt"
	"net/textproto"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/shared/smtpstatus"
)

// REQUIRETLS (RFC 8689).
//
// A message that came with MAIL FROM ... REQUIRETLS (Job.RequireTLS)
// leaves only over TLS with an authenticated server: DANE, an MTA-STS
// policy in enforce mode, or a "verify" requirement (delivery.tls or a
// per-domain override); and only to a next hop that itself offers
// REQUIRETLS, which receives the parameter in turn. A host that cannot
// meet this is skipped like a host the TLS policy refuses (451 4.7.30,
// the next MX, then a retry); when the message expires, its NDR says
// 5.7.30. Nothing of it is ever sent in plaintext or unauthenticated.
//
// A message with the header "TLS-Required: No" (and without REQUIRETLS)
// asks for the published policies to be set aside (§5): DANE and MTA-STS
// requirements and refusals give way to opportunistic TLS. Local
// [[delivery.tls_policy]] overrides still apply: they are the operator's.

// tlsRequiredNo reports whether the message's header has
// "TLS-Required: No".
func tlsRequiredNo(data []byte) bool {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(data)
	}
	head := data[:end]
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i], head[i+2:]
		} else {
			head = nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && textproto.CanonicalMIMEHeaderKey(string(bytes.TrimSpace(k))) == "Tls-Required" {
			return strings.EqualFold(strings.TrimSpace(string(v)), "no")
		}
	}
	return false
}

// setAside is the requirement for a host when the message says
// "TLS-Required: No": a requirement or refusal that comes from a
// published policy (DANE, MTA-STS) becomes opportunistic TLS.
func setAside(req TLSRequirement, err error, hostName string) (TLSRequirement, error, bool) {
	published := req.Report != nil && req.Report.Type != PolicyNotFound
	if err != nil {
		var re *ReportError
		published = asReportError(err, &re) && re.Policy != nil
	}
	if !published {
		return req, err, false
	}
	return TLSRequirement{Mode: Opportunistic, ServerName: hostName, RootCAs: req.RootCAs, Policy: "TLS-Required: No"}, nil, true
}

// requireTLSAuthenticated checks that req authenticates the server as
// REQUIRETLS needs; the error is the attempt's failure for this host.
func requireTLSAuthenticated(req TLSRequirement, hostName string) *attemptError {
	if req.Mode == Verify && !req.ReportOnly {
		return nil
	}
	return &attemptError{code: 451, enhanced: smtpstatus.TempRequireTLS, tlsPolicy: true,
		text: fmt.Sprintf("REQUIRETLS: %s is not authenticated by DANE, an enforced MTA-STS policy or a \"verify\" TLS policy (%s, %s)", hostName, policyName(req), req.Mode)}
}

// requireTLSNextHop checks, before MAIL, that the next hop offers
// REQUIRETLS, for a message that needs it.
func requireTLSNextHop(sc *smtp.Client, job *Job, h host) *attemptError {
	if !job.RequireTLS {
		return nil
	}
	if ok, _ := sc.Extension("REQUIRETLS"); ok {
		return nil
	}
	sc.Quit()
	return &attemptError{code: 451, enhanced: smtpstatus.TempRequireTLS, host: h.name, tlsPolicy: true,
		text: fmt.Sprintf("REQUIRETLS: %s does not offer REQUIRETLS", h.name)}
}
