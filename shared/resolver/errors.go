package resolver

import (
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// ErrNotFound means the DNS gave a definite negative answer: the name does
// not exist (NXDOMAIN) or has no record of the asked type (NODATA). It is
// permanent. Both ErrNXDomain and ErrNoData match it with errors.Is.
var ErrNotFound = errors.New("not found in DNS")

// ErrNXDomain means the name does not exist. errors.Is(ErrNXDomain,
// ErrNotFound) is true.
var ErrNXDomain error = &notFound{"no such domain (NXDOMAIN)"}

// ErrNoData means the name exists but has no record of the asked type.
// errors.Is(ErrNoData, ErrNotFound) is true. For MX this is the case where
// the domain's A/AAAA records act as an implicit MX (RFC 5321 §5.1).
var ErrNoData error = &notFound{"no record of that type (NODATA)"}

// ErrNullMX means the domain publishes a null MX (RFC 7505): it accepts no
// mail. Permanent.
var ErrNullMX = errors.New("domain accepts no mail (null MX, RFC 7505)")

// ErrInvalidName means the name is not a syntactically valid domain name,
// so no lookup was made. Permanent.
var ErrInvalidName = errors.New("invalid domain name")

type notFound struct{ s string }

func (e *notFound) Error() string        { return e.s }
func (e *notFound) Is(target error) bool { return target == ErrNotFound }

// TempError is a lookup that failed without a definite answer: every
// server timed out, was unreachable, or answered SERVFAIL, REFUSED or
// another error code. The caller should try again later (SMTP 451 4.4.3).
type TempError struct {
	Name  string // queried name (FQDN)
	Qtype uint16
	Rcode int   // last error rcode received, or -1 when none was received
	Err   error // last network error, if any
	// Stale is the definite negative answer (ErrNXDomain or ErrNoData)
	// the cache held past its TTL; it is not relied on while the servers
	// fail, and errors.Is does not see it.
	Stale error
}

func (e *TempError) Error() string {
	q := fmt.Sprintf("%s %s", e.Name, dns.TypeToString[e.Qtype])
	s := ""
	if e.Rcode >= 0 {
		s = fmt.Sprintf("temporary DNS failure for %s: server answered %s", q, dns.RcodeToString[e.Rcode])
	} else {
		s = fmt.Sprintf("temporary DNS failure for %s: %v", q, e.Err)
	}
	if e.Stale != nil {
		s += fmt.Sprintf(" (last answer, now expired: %v)", e.Stale)
	}
	return s
}

// staleNoData reports whether err is a temporary failure whose expired
// cached answer was NODATA.
func staleNoData(err error) bool {
	var te *TempError
	return errors.As(err, &te) && errors.Is(te.Stale, ErrNoData)
}

func (e *TempError) Unwrap() error { return e.Err }

// Timeout reports whether the failure was a timeout.
func (e *TempError) Timeout() bool {
	var te interface{ Timeout() bool }
	return e.Rcode < 0 && errors.As(e.Err, &te) && te.Timeout()
}

// IsTemporary reports whether err is a DNS failure that may succeed later
// (SERVFAIL, REFUSED, timeout, network error, cancelled context). Definite
// answers — ErrNotFound (NXDOMAIN, NODATA), ErrNullMX, ErrInvalidName — are
// not temporary. Any other non-nil error is treated as temporary, so that a
// DNS problem never turns into a permanent refusal.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNullMX) || errors.Is(err, ErrInvalidName) {
		return false
	}
	return true
}
