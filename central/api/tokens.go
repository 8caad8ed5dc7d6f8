package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/store"
)

// Token is an API token in answers (never its secret or hash).
type Token struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Label     string    `json:"label"`
	Scope     string    `json:"scope"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Expired   bool      `json:"expired"`
}

func (s *Server) toToken(t store.APIToken) Token {
	return Token{ID: t.ID, User: t.User, Label: t.Label, Scope: string(t.Scope), CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		Expired: !t.ExpiresAt.IsZero() && !s.o.Clock().Before(t.ExpiresAt)}
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ string) {
	ts, err := s.o.Store.ListAPITokens(r.Context(), "")
	if err != nil {
		s.storeErr(w, err)
		return
	}
	out := []Token{}
	for _, t := range ts {
		out = append(out, s.toToken(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Label string `json:"label"`
	// Scope is "read-only" or "read-write".
	Scope string `json:"scope"`
	// ExpiresIn is a Go duration ("720h"); empty: api.token_lifetime.
	ExpiresIn string `json:"expires_in"`
}

// createToken makes a token for the calling token's user. It never
// outlives the calling token, so a stolen token cannot mint itself a
// longer life.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request, user string) {
	var req TokenRequest
	if !decode(w, r, &req) {
		return
	}
	life := s.o.TokenLifetime
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil {
			writeErr(w, http.StatusUnprocessableEntity, "expires_in: not a duration like \"720h\"", map[string]string{"expires_in": "not a duration"})
			return
		}
		life = d
	}
	now := s.o.Clock()
	if c := caller(r.Context()); !c.ExpiresAt.IsZero() && now.Add(life).After(c.ExpiresAt) {
		life = c.ExpiresAt.Sub(now)
	}
	tok, t, err := auth.NewAPIToken(user, req.Label, store.Scope(req.Scope), life, s.o.MaxTokenLifetime, now)
	if errors.Is(err, auth.ErrTokenRequest) {
		writeErr(w, http.StatusUnprocessableEntity, err.Error(), nil)
		return
	}
	if err != nil {
		s.storeErr(w, err)
		return
	}
	if err := s.o.Store.CreateAPIToken(r.Context(), t); err != nil {
		s.storeErr(w, err)
		return
	}
	s.log.Info("API token created", "user", user, "token_id", t.ID, "by_token", caller(r.Context()).ID, "scope", string(t.Scope))
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "info": s.toToken(t)})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, user string) {
	t, err := s.o.Store.RevokeAPIToken(r.Context(), r.PathValue("id"), "api:"+user)
	if err != nil {
		s.storeErr(w, err)
		return
	}
	s.log.Info("API token revoked", "actor", "api:"+user, "token_id", t.ID, "owner", t.User)
	writeJSON(w, http.StatusOK, map[string]any{"revoked": s.toToken(t)})
}
