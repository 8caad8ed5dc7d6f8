package web

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/store"
)

func (s *Server) tokensPage(w http.ResponseWriter, r *http.Request, user string, status int, extra page) {
	toks, err := s.o.Store.ListAPITokens(r.Context(), "")
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p := page{"Title": "API tokens", "Staff": user, "Tokens": toks, "Now": s.o.Clock(),
		"DefaultDays": int(s.o.TokenLifetime / (24 * time.Hour)), "MaxDays": int(s.o.MaxTokenLifetime / (24 * time.Hour))}
	for k, v := range extra {
		p[k] = v
	}
	s.render(w, r, status, "tokens", p)
}

func (s *Server) tokens(w http.ResponseWriter, r *http.Request, user string) {
	s.tokensPage(w, r, user, http.StatusOK, nil)
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, user string) {
	life := s.o.TokenLifetime
	if v := strings.TrimSpace(r.PostFormValue("days")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			s.tokensPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": "The expiry must be a whole number of days."})
			return
		}
		life = time.Duration(n) * 24 * time.Hour
	}
	tok, t, err := auth.NewAPIToken(user, r.PostFormValue("label"), store.Scope(r.PostFormValue("scope")), life, s.o.MaxTokenLifetime, s.o.Clock())
	if err != nil {
		s.tokensPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	}
	if err := s.o.Store.CreateAPIToken(r.Context(), t); err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("API token created", "user", user, "token_id", t.ID, "scope", string(t.Scope), "expires", t.ExpiresAt)
	s.tokensPage(w, r, user, http.StatusOK, page{"NewToken": tok, "Flash": "Token created. Copy it now: it is not shown again."})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, user string) {
	t, err := s.o.Store.RevokeAPIToken(r.Context(), r.PathValue("id"), "staff:"+user)
	if errors.Is(err, store.ErrNotFound) {
		s.tokensPage(w, r, user, http.StatusNotFound, page{"Error": "No such token (revoked already?)."})
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("API token revoked", "actor", "staff:"+user, "token_id", t.ID, "owner", t.User)
	http.Redirect(w, r, "/staff/tokens?done=token-revoked", http.StatusSeeOther)
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, user string) {
	s.render(w, r, http.StatusOK, "account", page{"Title": "Account", "Staff": user})
}

// MinPasswordLength is the shortest staff password accepted.
const MinPasswordLength = 10

// changePassword sets a new password after checking the current one
// (throttled like a login) and ends every other session of the user.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, user string) {
	fail := func(status int, msg string) {
		s.render(w, r, status, "account", page{"Title": "Account", "Staff": user, "Error": msg})
	}
	cur, pw, again := r.PostFormValue("current"), r.PostFormValue("new"), r.PostFormValue("again")
	switch {
	case len(pw) < MinPasswordLength || len(pw) > 1024:
		fail(http.StatusUnprocessableEntity, fmt.Sprintf("The new password must have %d to 1024 characters.", MinPasswordLength))
		return
	case pw != again:
		fail(http.StatusUnprocessableEntity, "The two new passwords differ.")
		return
	}
	if !s.o.Hashes.Acquire(r.Context(), hashWait) {
		w.Header().Set("Retry-After", "1")
		fail(http.StatusServiceUnavailable, "Central is busy. Try again in a moment.")
		return
	}
	defer s.o.Hashes.Release()
	_, err := s.login1(r.Context(), []string{userKey(user)}, user, cur)
	var wait throttled
	switch {
	case errors.As(err, &wait):
		tooMany(w, time.Duration(wait))
		fail(http.StatusTooManyRequests, "Too many wrong passwords. Try again in "+fmtWait(time.Duration(wait))+".")
		return
	case err != nil && !errors.Is(err, errBadLogin):
		s.internal(w, r, err)
		return
	case err != nil:
		s.log.Warn("password change: wrong current password", "user", user, "remote", s.o.Proxy.ClientIP(r).String())
		fail(http.StatusUnauthorized, "The current password is wrong.")
		return
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	keep := ""
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		keep = auth.HashToken(c.Value)
	}
	if err := s.o.Store.ChangeUserPassword(r.Context(), user, hash, keep, "staff:"+user); err != nil {
		s.internal(w, r, err)
		return
	}
	s.log.Info("staff password changed; other sessions ended", "user", user)
	http.Redirect(w, r, "/staff/account?done=password", http.StatusSeeOther)
}
