package web

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/store"
)

func (s *Server) csrfOK(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	c, err := r.Cookie(CSRFCookie)
	if err != nil || len(c.Value) < 32 {
		return false
	}
	return auth.Equal(c.Value, r.PostFormValue("csrf"))
}

// csrfToken returns the request's CSRF token, setting the cookie when new.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(CSRFCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	tok, _ := auth.NewToken()
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: tok, Path: "/", HttpOnly: true, Secure: s.o.SecureCookies, SameSite: http.SameSiteStrictMode})
	// Make it visible to this request's own form too.
	r.AddCookie(&http.Cookie{Name: CSRFCookie, Value: tok})
	return tok
}

// staffUser returns the logged-in staff user of r.
func (s *Server) staffUser(r *http.Request) (string, bool) {
	return StaffUser(r, s.o.Store, s.o.Proxy, s.o.Clock(), s.log)
}

// StaffUser identifies a staff member by the proxy header (trusted
// proxies only, user must exist) or the session cookie.
func StaffUser(r *http.Request, st store.Store, proxy *auth.Proxy, now time.Time, log *slog.Logger) (string, bool) {
	if u, ok, untrusted := proxy.Identity(r); ok {
		if _, err := st.User(r.Context(), u); err == nil {
			return u, true
		}
		log.Warn("identity header names an unknown staff user", "user", u, "remote", r.RemoteAddr)
		return "", false
	} else if untrusted {
		log.Warn("identity header from an untrusted address ignored", "remote", r.RemoteAddr)
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	se, err := st.Session(r.Context(), auth.HashToken(c.Value), now)
	if err != nil {
		return "", false
	}
	return se.User, true
}

type staffHandler func(w http.ResponseWriter, r *http.Request, user string)

func (s *Server) staff(h staffHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, ok := s.staffUser(r)
		if !ok {
			http.Redirect(w, r, "/staff/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r, u)
	}
}

func safeNext(n string) string {
	if !strings.HasPrefix(n, "/staff") || strings.HasPrefix(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return "/staff"
	}
	return n
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login", page{"Title": "Staff login", "Next": safeNext(r.URL.Query().Get("next"))})
}

// dummyHash keeps the time of a login with an unknown name like a known one.
var dummyHash, _ = auth.HashPassword("postern-no-such-user")

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("username"))
	pw := r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	client := s.o.Proxy.ClientIP(r)
	keys := []string{auth.ClientKey(client), userKey(name)}
	// The hash slot first (a throttled attempt holds it only for a map
	// lookup), then the throttle, which counts the attempt.
	if !s.o.Hashes.Acquire(r.Context(), hashWait) {
		s.log.Warn("staff login refused: too many logins at once", "remote", client.String())
		w.Header().Set("Retry-After", "1")
		s.render(w, r, http.StatusServiceUnavailable, "login", page{"Title": "Staff login", "Next": next, "Username": name,
			"Error": "Central is busy with other logins. Try again in a moment."})
		return
	}
	u, err := s.login1(r.Context(), keys, name, pw)
	s.o.Hashes.Release()
	var wait throttled
	switch {
	case errors.As(err, &wait):
		s.log.Warn("staff login throttled", "remote", client.String(), "known_user", u.Name != "", "retry_after", time.Duration(wait).String())
		tooMany(w, time.Duration(wait))
		s.render(w, r, http.StatusTooManyRequests, "login", page{"Title": "Staff login", "Next": next, "Username": name,
			"Error": "Too many failed logins for this user name or from your address. Try again in " + fmtWait(time.Duration(wait)) + "."})
		return
	case err != nil && !errors.Is(err, errBadLogin):
		s.internal(w, r, err)
		return
	case err != nil:
		// The typed name is logged only when it is a real user: a
		// password typed into the name field must not reach the log.
		s.log.Warn("staff login failed", "user", u.Name, "known_user", u.Name != "", "remote", client.String())
		s.render(w, r, http.StatusUnauthorized, "login", page{"Title": "Staff login", "Next": next, "Username": name,
			"Error": "Wrong user name or password."})
		return
	}
	tok, hashTok := auth.NewToken()
	now := s.o.Clock()
	if err := s.o.Store.CreateSession(r.Context(), store.Session{IDHash: hashTok, User: u.Name, CreatedAt: now, ExpiresAt: now.Add(s.o.SessionLifetime)}); err != nil {
		s.internal(w, r, err)
		return
	}
	_ = s.o.Store.DeleteExpiredSessions(r.Context(), now)
	s.log.Info("staff login", "user", u.Name, "remote", client.String())
	http.SetCookie(w, s.cookie(SessionCookie, tok, s.o.SessionLifetime))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		_ = s.o.Store.DeleteSession(r.Context(), auth.HashToken(c.Value))
	}
	http.SetCookie(w, s.cookie(SessionCookie, "", -time.Hour))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
