package dnstest

import "strings"

// DNSSEC simulation. The server does not sign anything: it stands for a
// validating recursive resolver and says what one would say, the AD bit
// on answers from signed zones, SERVFAIL (SetRcode) for records that fail
// validation. Resolvers that are configured to trust this server's AD bit
// then see authenticated answers.

// dnssecState is the set of signed zones.
type dnssecState struct {
	zones map[string]bool // lower-case FQDN of zone apexes
}

// Sign marks zone and every name below it as signed: answers (and
// denials) for them carry the AD bit.
func (s *Server) Sign(zones ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dnssec.zones == nil {
		s.dnssec.zones = map[string]bool{}
	}
	for _, z := range zones {
		s.dnssec.zones[fqdn(z)] = true
	}
}

// Unsign removes zone from the signed zones.
func (s *Server) Unsign(zone string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.dnssec.zones, fqdn(zone))
}

// signed reports whether qname is in a signed zone. The caller holds s.mu.
func (s *Server) signed(qname string) bool {
	for name := qname; name != ""; {
		if s.dnssec.zones[name] {
			return true
		}
		_, rest, ok := strings.Cut(name, ".")
		if !ok {
			break
		}
		name = rest
	}
	return s.dnssec.zones["."]
}
