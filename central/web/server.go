// Package web serves central's HTML pages: the registration form with its
// live DNS check, the owner's device pages, the sender confirmation page
// and the staff console (devices, edges, audit log). Pages are rendered on
// the server with html/template from embedded files and work without
// JavaScript (there is none).
//
// Who sees what:
//   - Owners are identified by owner keys: every registration gets a fresh
//     256-bit random key, mailed as an owner link (/owner?key=…) to the
//     contact address (affiliated contacts only, see registration) and
//     kept in an HttpOnly cookie (postern_owner, up to MaxOwnerKeys keys).
//     The store holds only the hash, with the device. /my lists the devices
//     of the browser's keys; a device page of another key answers 404. An
//     owner link adds its key to a browser only after a POST with CSRF
//     (the GET shows a confirmation button), and only if the key owns a
//     registration, so a link planted by someone else cannot silently
//     switch a browser to the planter's key.
//   - Staff log in with a name and password (argon2id) and get a session
//     cookie (postern_session, stored hashed, expiring after
//     http.session_lifetime), or are identified by a reverse proxy's
//     identity header (http.identity_header) from http.trusted_proxies
//     only; the named user must exist in the staff table.
//
// Abuse limits (Options): staff logins are throttled per client address
// and per user name (auth.Throttle) and the password hashes computed at
// once are bounded (auth.Hashes; beyond it, 503 at once). The public form
// is rate-limited per client address (submissions, DNS checks) and capped
// in pending requests per contact and per client address.
//
// Every POST carries a CSRF token that must equal the postern_csrf cookie
// (double-submit; the cookie is SameSite=Strict and HttpOnly), and a
// cross-origin Origin header is refused. Cookies are Secure when central
// is served over HTTPS (or http.base_url is https).
package web

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names.
const (
	SessionCookie = "postern_session"
	OwnerCookie   = "postern_owner"
	CSRFCookie    = "postern_csrf"
)

// Options configure the pages.
type Options struct {
	Registry *registration.Service
	Store    store.Store
	// BaseURL is central's external URL (owner links, enrolment hints).
	BaseURL string
	// SessionLifetime bounds a staff session (http.session_lifetime).
	SessionLifetime time.Duration
	// SecureCookies marks every cookie Secure (HTTPS deployments).
	SecureCookies bool
	// Proxy trusts an SSO identity header (nil: off); its trusted proxies
	// also give the client address (X-Forwarded-For).
	Proxy *auth.Proxy
	// Throttle limits failed logins per client address and user name
	// (login.*); shared with the API's failed tokens. nil: the defaults.
	Throttle *auth.Throttle
	// Hashes bounds concurrent password hashes (nil: 4).
	Hashes *auth.Hashes
	// SubmitLimit and CheckLimit limit registrations (and owner re-sends)
	// and live DNS checks per client address (nil: 10 and 60 per hour).
	SubmitLimit *auth.RateLimit
	CheckLimit  *auth.RateLimit
	// MaxPendingPerContact and MaxPendingPerAddress cap pending requests
	// (0: 5 and 10).
	MaxPendingPerContact int
	MaxPendingPerAddress int
	// TokenLifetime is a new API token's default expiry, MaxTokenLifetime
	// the longest (0: 90 and 365 days).
	TokenLifetime    time.Duration
	MaxTokenLifetime time.Duration
	// DisplayTimeZone is the zone pages show times in (nil: UTC).
	DisplayTimeZone *time.Location
	Clock           func() time.Time
	Log             *slog.Logger
}

// Server is the web UI handler.
type Server struct {
	o     Options
	log   *slog.Logger
	mux   *http.ServeMux
	pages map[string]*template.Template
	// regMu makes the pending caps' count and the creation one step for
	// public requests in this process.
	regMu sync.Mutex
}

var funcs = template.FuncMap{
	"list": func(v ...string) []string { return v },
	"dict": func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := kv[i].(string)
			m[k] = kv[i+1]
		}
		return m
	},
	"past": func(a any) string {
		switch v := fmt.Sprint(a); v {
		case "deny":
			return "denied"
		case "approve", "revoke", "reinstate":
			return v + "d"
		default:
			return v + "ed"
		}
	},
	// limit shows a per-device limit, 0 being the edge's default.
	"limit": func(n int, unit string) string {
		if n == 0 {
			return "edge default"
		}
		return strconv.Itoa(n) + " " + unit
	},
	"fmtTime": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}

// New parses the templates and sets up the routes.
func New(o Options) (*Server, error) {
	if o.Registry == nil || o.Store == nil {
		return nil, errors.New("web: Registry and Store are required")
	}
	if o.SessionLifetime <= 0 {
		o.SessionLifetime = 8 * time.Hour
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.defaults()
	s := &Server{o: o, log: o.Log.With("component", "web"), mux: http.NewServeMux(), pages: map[string]*template.Template{}}
	for _, p := range []string{"home", "register", "my", "device", "confirm", "login", "console", "edges", "audit", "error", "owner", "tokens", "account", "requests", "staff_device", "confirm_action", "events", "bulk", "staff_edit"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", p, err)
		}
		s.pages[p] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	m := s.mux
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", s.home)
	m.HandleFunc("GET /register", s.registerForm)
	m.HandleFunc("POST /register", s.register)
	m.HandleFunc("GET /my", s.my)
	m.HandleFunc("GET /my/devices/{name}", s.ownerDevice)
	m.HandleFunc("POST /my/devices/{name}/check", s.ownerCheck)
	m.HandleFunc("GET /owner", s.ownerLinkForm)
	m.HandleFunc("POST /owner", s.ownerLogin)
	m.HandleFunc("POST /my/devices/{name}/resend", s.ownerResend)
	m.HandleFunc("GET /confirm", s.confirmForm)
	m.HandleFunc("POST /confirm", s.confirm)
	m.HandleFunc("GET /staff/login", s.loginForm)
	m.HandleFunc("POST /staff/login", s.login)
	m.HandleFunc("POST /staff/logout", s.logout)
	m.HandleFunc("GET /staff/edges", s.staff(s.edges))
	m.HandleFunc("POST /staff/edges", s.staff(s.createEdge))
	m.HandleFunc("POST /staff/edges/{id}/token", s.staff(s.edgeToken))
	m.HandleFunc("GET /staff/tokens", s.staff(s.tokens))
	m.HandleFunc("POST /staff/tokens", s.staff(s.createToken))
	m.HandleFunc("POST /staff/tokens/{id}/revoke", s.staff(s.revokeToken))
	m.HandleFunc("GET /staff/account", s.staff(s.account))
	m.HandleFunc("POST /staff/account/password", s.staff(s.changePassword))
	s.routeRequests(m)
	s.routeStaffDevices(m)
	s.routeEvents(m)
	s.routeAudit(m)
	s.routeBulk(m)
	s.routeEdit(m)
	m.HandleFunc("POST /staff/edges/{id}/revoke", s.staff(s.revokeEdge))
	if err := s.routeOwnerPages(m); err != nil {
		return nil, err
	}
	return s, nil
}

// ServeHTTP sets the security headers and checks CSRF on every POST.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.fail(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
			return
		}
		if !s.csrfOK(r) {
			s.log.Warn("CSRF check failed", "path", r.URL.Path, "remote", r.RemoteAddr)
			s.fail(w, r, http.StatusForbidden, "Form expired", "The form could not be verified (CSRF check failed). Go back, reload the page and try again.")
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

type page map[string]any

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data page) {
	if data == nil {
		data = page{}
	}
	data["CSRF"] = s.csrfToken(w, r)
	if _, ok := data["Staff"]; !ok {
		if u, ok := s.staffUser(r); ok {
			data["Staff"] = u
		} else {
			data["Staff"] = ""
		}
	}
	if _, ok := data["Title"]; !ok {
		data["Title"] = "Device registration"
	}
	if u, _ := data["Staff"].(string); u != "" {
		data["OpenRequests"] = s.openRequests(r)
	}
	if f := flash(r.URL.Query().Get("done")); f != "" && data["Flash"] == nil {
		data["Flash"] = f
	}
	var b strings.Builder
	if err := s.pages[name].ExecuteTemplate(&b, "layout", data); err != nil {
		s.log.Error("template failed", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// flash turns a fixed code from a redirect into a message (never echoing
// arbitrary text from the URL).
func flash(code string) string {
	switch code {
	case "registered":
		return "Your request is registered. Staff will review it; each sender address gets a confirmation link. Keep its owner link (shown under \"My devices\"): it is how you get back to this registration from another browser."
	case "registered-mailed":
		return "Your request is registered. Staff will review it; each sender address gets a confirmation link. The owner link of this registration was mailed to the contact address."
	case "token-revoked":
		return "Token revoked."
	case "password":
		return "Password changed. Every other session of this account has been logged out."
	case "approve":
		return "Device approved."
	case "deny":
		return "Request denied."
	case "suspend":
		return "Device suspended."
	case "reinstate":
		return "Device reinstated."
	case "revoke":
		return "Registration revoked."
	case "renew":
		return "Registration renewed."
	case "limits":
		return "Limits changed."
	case "edited":
		return "Registration changed. New sender addresses were sent a confirmation link; the change is in the history below."
	case "unchanged":
		return "Nothing was changed."
	case "resend":
		return "Confirmation links sent again."
	case "request-confirm":
		return "Request confirmed: the device is suspended."
	case "request-dismiss":
		return "Request dismissed."
	case "edge-revoked":
		return "Edge revoked: its credentials no longer work and its events are refused."
	}
	return ""
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	s.render(w, r, status, "error", page{"Title": title, "Message": msg})
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request failed", "path", r.URL.Path, "err", err)
	s.fail(w, r, http.StatusInternalServerError, "Something went wrong", "Central could not complete this request. Try again; if it persists, tell the staff.")
}

func (s *Server) cookie(name, value string, maxAge time.Duration) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: s.o.SecureCookies, SameSite: http.SameSiteLaxMode,
		MaxAge: int(maxAge.Seconds()), Expires: s.o.Clock().Add(maxAge)}
}

// ---- owner side ----
