package address

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// profile is IDNA2008 as RFC 5891 defines it for registration, with no
// mapping at all: a U-label must already be in the form IDNA2008 allows
// (NFC, lower case, no full-width or compatibility characters, no
// ignorable characters such as the soft hyphen, only '.' between labels),
// otherwise the name is refused. UTS #46 lookup processing would instead
// map full-width "ｅｘａｍｐｌｅ.edu" or "example。edu" to example.edu: an
// address that names one domain on the wire and another after the
// mapping, which the relay must refuse rather than rewrite. ASCII letters
// are lower-cased before the check (DNS names are case-insensitive; that
// is no rewrite). It is non-transitional ('ß' stays 'ß' and becomes
// xn--zca), validates xn-- labels by decoding them, and applies the bidi
// rule, the CONTEXTJ rules and STD3 ASCII rules (letters, digits and '-').
//
// CheckHyphens is off: it would refuse every label with "--" in positions
// 3-4, and such ASCII host names exist (device names are canonicalised
// here too). Leading and trailing hyphens are refused by checkLDH instead,
// and xn-- labels are still validated as punycode. Lengths are checked by
// checkLDH too, for errors that say which limit (ErrTooLong).
var profile = idna.New(
	idna.ValidateForRegistration(),
	idna.Transitional(false),
	idna.CheckHyphens(false),
	idna.VerifyDNSLength(false),
)

// CanonicalDomain returns the canonical form of a domain name: IDNA
// A-labels (punycode), lower case, with one trailing dot removed. The
// result is a valid DNS host name: labels of letters, digits and inner
// hyphens, 1 to 63 octets each, at most 253 octets in all, and the last
// label not all digits (an IP address is written as a literal, and
// "user@192.0.2.1" is refused rather than mistaken for one). Empty names
// and address literals are refused. U-label and A-label spellings of one
// name give the same result; CanonicalDomain(CanonicalDomain(s)) is the
// same as CanonicalDomain(s).
func CanonicalDomain(s string) (string, error) {
	if s == "" || s == "." {
		return "", errf(ErrDomain, "empty domain")
	}
	if s[0] == '[' {
		return "", errf(ErrDomain, "%s is an address literal, not a domain name", quote(s))
	}
	// A cheap bound before the IDNA work; the real limit is checked on
	// the result (mapping can shrink the text, punycode can grow it).
	if len(s) > 4*MaxDomain {
		return "", errf(ErrTooLong, "domain is %d octets, the limit is %d", len(s), MaxDNSName)
	}
	// x/net/idna turns invalid UTF-8 into U+FFFD and encodes it, yielding
	// an A-label it then refuses to decode: refuse it here.
	if !utf8.ValidString(s) {
		return "", errf(ErrDomain, "%s is not valid UTF-8", quote(s))
	}
	// Punycode encoding is quadratic in the length of a label. Every rune
	// but a few ignorable ones (soft hyphen, zero-width space) gives at
	// least one octet of A-label, so a label of more than twice the limit
	// in runes cannot be valid: refuse it before the IDNA work.
	n := 0
	for _, r := range s {
		if r == '.' {
			n = 0
			continue
		}
		if n++; n > 2*MaxLabel {
			return "", errf(ErrTooLong, "%s has a label of more than %d characters, the limit is %d octets", quote(s), 2*MaxLabel, MaxLabel)
		}
	}
	ascii := isASCII(s)
	a, ierr := profile.ToASCII(lowerASCII(s))
	if ascii {
		// Checking ASCII input ourselves gives clearer messages than the
		// IDNA errors.
		a = strings.ToLower(s)
	}
	if ierr == nil || ascii {
		a = strings.TrimSuffix(a, ".")
		if err := checkLDH(a, s); err != nil {
			return "", err
		}
	}
	if ierr != nil {
		return "", errf(ErrDomain, "%s is not a valid internationalised domain name: %v", quote(s), ierr)
	}
	return a, nil
}

// checkLDH validates an ASCII, lower-case domain name without its
// trailing dot; orig is the input, for the message.
func checkLDH(a, orig string) error {
	if a == "" {
		return errf(ErrDomain, "empty domain")
	}
	if len(a) > MaxDNSName {
		return errf(ErrTooLong, "domain %s is %d octets, the limit is %d", quote(orig), len(a), MaxDNSName)
	}
	var last string
	for rest := a; ; {
		l, tail, more := strings.Cut(rest, ".")
		switch {
		case l == "":
			return errf(ErrDomain, "%s has an empty label (leading dot or two dots in a row)", quote(orig))
		case len(l) > MaxLabel:
			return errf(ErrTooLong, "%s has a label of %d octets, the limit is %d", quote(orig), len(l), MaxLabel)
		case l[0] == '-' || l[len(l)-1] == '-':
			return errf(ErrDomain, "%s has a label starting or ending with '-'", quote(orig))
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return errf(ErrDomain, "%s contains %q (only letters, digits, '-' and '.' are allowed)", quote(orig), rune(c))
			}
		}
		last = l
		if !more {
			break
		}
		rest = tail
	}
	if strings.Trim(last, "0123456789") == "" {
		return errf(ErrDomain, "%s ends in a numeric label; write an IP address as a literal, e.g. [192.0.2.1]", quote(orig))
	}
	return nil
}

// lowerASCII lower-cases the ASCII letters of s and leaves every other
// character as it is.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// unicodeDomain converts a canonical domain to U-labels for display,
// returning it unchanged if that fails.
func unicodeDomain(d string) string {
	u, err := profile.ToUnicode(d)
	if err != nil {
		return d
	}
	return u
}
