// Package auth holds central's authentication primitives: staff password
// hashing (argon2id, PHC string format), random tokens and their stored
// hashes, staff sessions backed by the store, owner keys, CSRF tokens and
// the trusted reverse-proxy identity header.
//
// Guarantees: no secret is stored or logged in the clear — passwords as
// argon2id hashes, session ids, API tokens, owner keys and confirmation
// tokens as SHA-256 hashes (they are 256-bit random values, so a fast hash
// is enough); comparisons are constant time.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultParams follow the OWASP recommendation for argon2id (19 MiB, 2
// passes, 1 thread): about 30 ms per login on a small server.
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

// HashPassword returns the PHC string of password with DefaultParams.
func HashPassword(password string) (string, error) {
	return HashPasswordWith(DefaultParams, password)
}

// HashPasswordWith returns the PHC string of password with p.
func HashPasswordWith(p Params, password string) (string, error) {
	if password == "" {
		return "", errors.New("auth: empty password")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches the PHC string hash. A
// malformed or empty hash never matches.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || password == "" {
		return false
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false
	}
	if p.Memory > 1<<20 || p.Time > 16 || p.Threads == 0 { // refuse absurd costs from a tampered row
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// NewToken returns a new random 256-bit token (URL-safe) and its stored
// hash.
func NewToken() (token, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("auth: crypto/rand: %v", err))
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is the stored form of a token (SHA-256, hex).
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Equal compares two secrets in constant time.
func Equal(a, b string) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Proxy trusts an identity header (SSO at a reverse proxy) from a set of
// proxy addresses only (http.identity_header, http.trusted_proxies).
type Proxy struct {
	Header  string
	Trusted []netip.Prefix
}

// NewProxy parses the trusted proxy list (IPs or CIDRs).
func NewProxy(header string, trusted []string) (*Proxy, error) {
	p := &Proxy{Header: header}
	for _, s := range trusted {
		if pf, err := netip.ParsePrefix(s); err == nil {
			p.Trusted = append(p.Trusted, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("auth: trusted proxy %q: %w", s, err)
		}
		p.Trusted = append(p.Trusted, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return p, nil
}

// Identity returns the user named by the header when the request comes
// from a trusted proxy. A header from anyone else is ignored (ok false,
// fromUntrusted true, so the caller can log it).
func (p *Proxy) Identity(r *http.Request) (user string, ok, fromUntrusted bool) {
	if p == nil || p.Header == "" {
		return "", false, false
	}
	v := strings.TrimSpace(r.Header.Get(p.Header))
	if v == "" {
		return "", false, false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", false, true
	}
	a = a.Unmap()
	for _, pf := range p.Trusted {
		if pf.Contains(a) {
			return v, true, false
		}
	}
	return "", false, true
}
