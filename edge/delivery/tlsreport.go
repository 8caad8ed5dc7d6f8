package delivery

import (
	"crypto/x509"
	"errors"
	"net"
)

// TLSRPT (RFC 8460) policy types and result types, as the RFC names them.
const (
	PolicySTS      = "sts"
	PolicyTLSA     = "tlsa"
	PolicyNotFound = "no-policy-found"

	ResultSTARTTLSNotSupported = "starttls-not-supported"
	ResultHostMismatch         = "certificate-host-mismatch"
	ResultCertExpired          = "certificate-expired"
	ResultCertNotTrusted       = "certificate-not-trusted"
	ResultValidationFailure    = "validation-failure"
	ResultTLSAInvalid          = "tlsa-invalid"
	ResultDNSSECInvalid        = "dnssec-invalid"
	ResultDANERequired         = "dane-required"
	ResultSTSPolicyFetchError  = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid     = "sts-policy-invalid"
	ResultSTSWebPKIInvalid     = "sts-webpki-invalid"
)

// ReportPolicy is the published policy a TLS requirement came from, in
// the terms of a TLSRPT report (RFC 8460 §4.3). A requirement without one
// (a local [[delivery.tls_policy]] override, the smarthost) is not
// reported.
type ReportPolicy struct {
	// Type is PolicySTS, PolicyTLSA or PolicyNotFound.
	Type string
	// Domain is the policy domain (the recipients' domain).
	Domain string
	// String is the policy: the MTA-STS policy's lines, or the TLSA
	// records in presentation form.
	String []string
	// MX are the MTA-STS policy's mx patterns.
	MX []string
}

// TLSResult is the TLS result of one connection for TLSRPT: a session
// whose TLS satisfied the policy (Failure empty), or why not.
type TLSResult struct {
	Policy ReportPolicy
	// MXHost and IP are the receiving MX host name and address.
	MXHost, IP string
	// Failure is the RFC 8460 result type, "" for a successful session.
	Failure string
	// Detail explains the failure (the error text).
	Detail string
}

// ReportError is an error of a TLS policy or certificate check that
// names its TLSRPT result type, and, for a refusal by the policy
// (TLSPolicy.Requirement), the policy that refused.
type ReportError struct {
	Type   string
	Policy *ReportPolicy
	Err    error
}

func (e *ReportError) Error() string { return e.Err.Error() }
func (e *ReportError) Unwrap() error { return e.Err }

// FailureType returns the RFC 8460 result type of a TLS failure: the
// type a ReportError names, the certificate failure crypto/x509
// reports, or validation-failure.
func FailureType(err error) string {
	var re *ReportError
	var host x509.HostnameError
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re) && re.Type != "":
		return re.Type
	case errors.As(err, &host):
		return ResultHostMismatch
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return ResultCertExpired
	case errors.As(err, &inv), errors.As(err, &ua):
		return ResultCertNotTrusted
	}
	return ResultValidationFailure
}

// tlsResult is the TLSRPT result of one connection to addr made under
// req: ts is how it was protected, aerr its connection-level failure
// (nil when the transaction ran). nil: nothing to report (no published
// policy, or no server reached so no TLS was tried).
func tlsResult(req TLSRequirement, hostName, addr string, ts tlsState, aerr *attemptError) *TLSResult {
	if req.Report == nil || ts.reused {
		return nil // a reused connection is not a new TLS session
	}
	ip, _, _ := net.SplitHostPort(addr)
	r := &TLSResult{Policy: *req.Report, MXHost: hostName, IP: ip}
	switch {
	case req.ReportFailure != "" && (aerr == nil || aerr.tlsType != "" || ts.desc != ""):
		r.Failure, r.Detail = req.ReportFailure, req.ReportDetail
	case aerr != nil && aerr.tlsType != "":
		r.Failure, r.Detail = aerr.tlsType, aerr.text
	case ts.noteType != "":
		r.Failure, r.Detail = ts.noteType, ts.note
	case ts.desc != "":
		// TLS as the policy wants it: a successful session.
	case aerr != nil:
		return nil // refused before STARTTLS could be tried
	case req.Mode == NoTLS:
		return nil
	default:
		r.Failure, r.Detail = ResultSTARTTLSNotSupported, hostName+" does not offer STARTTLS"
	}
	return r
}

// refusedResult is the TLSRPT result of a host the TLS policy refused
// before connecting (not in the MTA-STS policy, a failed TLSA lookup), nil
// when the refusal names no published policy.
func refusedResult(err error, hostName, addr, text string) *TLSResult {
	var re *ReportError
	if !errors.As(err, &re) || re.Policy == nil {
		return nil
	}
	ip, _, _ := net.SplitHostPort(addr)
	return &TLSResult{Policy: *re.Policy, MXHost: hostName, IP: ip, Failure: FailureType(err), Detail: text}
}

func asReportError(err error, re **ReportError) bool { return errors.As(err, re) }
