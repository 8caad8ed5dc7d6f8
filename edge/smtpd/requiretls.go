package smtpd

import (
	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/shared/smtpstatus"
)

// requireTLSWithoutTLS refuses MAIL FROM ... REQUIRETLS on a connection
// without TLS (RFC 8689 §4.1: the parameter is only valid over TLS, and
// is advertised only there).
func requireTLSWithoutTLS() *policy.Reply {
	return &policy.Reply{Code: 530, Enhanced: smtpstatus.TLSRequired, Reason: "REQUIRETLS without TLS",
		Text: "REQUIRETLS is only accepted over TLS: issue STARTTLS first (RFC 8689)"}
}
