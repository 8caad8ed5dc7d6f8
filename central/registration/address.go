package registration

import (
	"errors"
	"fmt"
	"strings"

	"github.com/postern/postern/shared/address"
)

// Address is a parsed mailbox local@domain.
type Address struct {
	Local  string
	Domain string // lower case, no trailing dot
}

func (a Address) String() string { return a.Local + "@" + a.Domain }

// ParseAddress parses a bare mailbox local@domain with shared/address (the
// parser the edges use, so an address accepted here is accepted at MAIL
// FROM), and further refuses what a device's functional sender never needs:
// a display name or angle brackets, a quoted local part, an address
// literal, a single-label domain.
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Address{}, errors.New("required")
	}
	if strings.ContainsAny(s, "<> \t\"") {
		return Address{}, errors.New("give only the address, like scanner@dept.example.edu (no name, brackets or quotes)")
	}
	if !strings.Contains(s, "@") || strings.HasPrefix(s, "@") || strings.HasSuffix(s, "@") {
		return Address{}, errors.New("not an e-mail address (local@domain)")
	}
	a, err := address.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("not a valid e-mail address: %w", err)
	}
	if a.IsLiteral {
		return Address{}, errors.New("use a domain name after @, not an IP address")
	}
	if err := ValidName(a.Domain); err != nil {
		return Address{}, fmt.Errorf("domain: %w", err)
	}
	return Address{Local: a.Local, Domain: a.Domain}, nil
}

// NormalizeName lower-cases a DNS name and drops the trailing dot.
func NormalizeName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// ValidName checks a normalised DNS host name: at least two labels of
// letters, digits and hyphens (no leading/trailing hyphen), 1–63
// characters each, 253 in all.
func ValidName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > 253 {
		return errors.New("a DNS name has at most 253 characters")
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return errors.New("give the full DNS name (like scanner.dept.example.edu)")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%q is not a valid DNS name (empty or too long label)", name)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a valid DNS name (label starts or ends with a hyphen)", name)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a valid DNS name (character %q)", name, c)
			}
		}
	}
	return nil
}

// functional are words that mark a mailbox as a device's or a service's,
// not a person's.
var functional = []string{
	"scan", "copier", "copy", "print", "fax", "mfp", "noreply", "no-reply", "donotreply", "do-not-reply", "device",
	"alert", "alarm", "monitor", "lab", "instrument", "postmaster", "admin", "system", "notif", "report", "backup",
	"ups", "hvac", "bms", "camera", "nas", "server", "service", "helpdesk", "office", "reception", "library", "facilit",
	"info", "contact", "dept", "team", "group", "research", "mail", "robot", "bot", "auto", "daemon", "root", "it",
	"support", "sensor", "controller", "building", "room", "door", "access", "log", "status", "queue", "mfd",
}

// commonGivenNames are single-word local parts that look like a person.
var commonGivenNames = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`ada alan alex alice amy andrew anna anne ben bob brian carol chris claire dan daniel
		david emily emma eric eva frank george grace hannah harry helen ian jack james jane jan jason jen jennifer jim
		joe john jon jose julia karen kate laura linda lisa lucy maria mark mary matt michael mike nick olivia paul
		peter rachel richard robert sam sarah scott simon sophie steve susan thomas tom wei yan`) {
		commonGivenNames[n] = true
	}
}

// LooksPersonal reports whether a local part looks like a person's mailbox
// rather than a functional one, so staff can ask for a functional address
// (a person leaves; a device's NDRs must keep arriving somewhere). The
// heuristic, in order:
//
//  1. a functional word anywhere (scanner, copier, noreply, lab, alerts …)
//     or any digit (copier-3, scan01): functional;
//  2. two or three alphabetic parts joined by '.', '_' or '-' (first.last,
//     j.smith, mary-jane.doe): personal;
//  3. a single word that is a common given name (mary, john): personal;
//  4. anything else: functional.
//
// It is a hint for staff, never a refusal.
func LooksPersonal(local string) bool {
	l := strings.ToLower(local)
	if i := strings.IndexByte(l, '+'); i > 0 {
		l = l[:i]
	}
	for _, w := range functional {
		if w == "it" || w == "log" || w == "bot" {
			// Short words: only as a whole part, not inside names.
			for _, p := range strings.FieldsFunc(l, isSep) {
				if p == w {
					return false
				}
			}
			continue
		}
		if strings.Contains(l, w) {
			return false
		}
	}
	if strings.ContainsAny(l, "0123456789") {
		return false
	}
	parts := strings.FieldsFunc(l, isSep)
	for _, p := range parts {
		for _, r := range p {
			if r < 'a' || r > 'z' {
				return false
			}
		}
	}
	switch len(parts) {
	case 2, 3:
		return true
	case 1:
		return commonGivenNames[parts[0]]
	}
	return false
}

func isSep(r rune) bool { return r == '.' || r == '_' || r == '-' }
