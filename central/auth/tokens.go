package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/postern/postern/central/store"
)

// Errors of NewAPIToken; the text says what is wrong.
var ErrTokenRequest = errors.New("invalid API token request")

// NewAPIToken makes a staff API token for user: the secret (shown once)
// and the record to store. lifetime must be from 1h to maxLifetime.
func NewAPIToken(user, label string, scope store.Scope, lifetime, maxLifetime time.Duration, now time.Time) (string, store.APIToken, error) {
	label = strings.TrimSpace(label)
	switch {
	case len(label) > 100:
		return "", store.APIToken{}, fmt.Errorf("%w: label: at most 100 characters", ErrTokenRequest)
	case strings.ContainsFunc(label, unicode.IsControl):
		return "", store.APIToken{}, fmt.Errorf("%w: label: contains control characters", ErrTokenRequest)
	case !scope.Valid():
		return "", store.APIToken{}, fmt.Errorf("%w: scope: must be %q or %q", ErrTokenRequest, store.ReadOnly, store.ReadWrite)
	case lifetime < time.Hour || lifetime > maxLifetime:
		return "", store.APIToken{}, fmt.Errorf("%w: expiry: must be from 1 hour to %d days", ErrTokenRequest, int(maxLifetime/(24*time.Hour)))
	}
	tok, hash := NewToken()
	return tok, store.APIToken{ID: hash[:16], Hash: hash, User: user, Label: label, Scope: scope, CreatedAt: now, ExpiresAt: now.Add(lifetime)}, nil
}
