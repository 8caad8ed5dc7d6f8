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
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/topic"
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
	Clock            func() time.Time
	Log              *slog.Logger
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
	for _, p := range []string{"home", "register", "my", "device", "confirm", "login", "console", "edges", "audit", "error", "owner", "tokens", "account", "requests"} {
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
	m.HandleFunc("GET /staff", s.staff(s.console))
	m.HandleFunc("GET /staff/devices/{name}", s.staff(s.staffDevice))
	m.HandleFunc("POST /staff/devices/{name}/act", s.staff(s.staffAct))
	m.HandleFunc("POST /staff/devices/{name}/limits", s.staff(s.staffLimits))
	m.HandleFunc("POST /staff/devices/{name}/check", s.staff(s.staffCheck))
	m.HandleFunc("POST /staff/devices/{name}/resend", s.staff(s.staffResend))
	m.HandleFunc("GET /staff/edges", s.staff(s.edges))
	m.HandleFunc("POST /staff/edges", s.staff(s.createEdge))
	m.HandleFunc("POST /staff/edges/{id}/token", s.staff(s.edgeToken))
	m.HandleFunc("GET /staff/audit", s.staff(s.audit))
	m.HandleFunc("GET /staff/tokens", s.staff(s.tokens))
	m.HandleFunc("POST /staff/tokens", s.staff(s.createToken))
	m.HandleFunc("POST /staff/tokens/{id}/revoke", s.staff(s.revokeToken))
	m.HandleFunc("GET /staff/account", s.staff(s.account))
	m.HandleFunc("POST /staff/account/password", s.staff(s.changePassword))
	s.routeRequests(m)
	m.HandleFunc("POST /staff/edges/{id}/revoke", s.staff(s.revokeEdge))
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

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "home", page{"Title": "Postern", "Affiliated": s.o.Registry.AffiliatedDomains})
}

func (s *Server) registerForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "register", page{"Title": "Register a device", "F": registration.Request{}, "Errs": registration.FieldErrors{}})
}

func formRequest(r *http.Request) registration.Request {
	return registration.Request{
		Name: r.PostFormValue("name"), IPs: r.PostFormValue("ips"), Owner: r.PostFormValue("owner"),
		Department: r.PostFormValue("department"), ContactEmail: r.PostFormValue("contact_email"),
		Senders: r.PostFormValue("senders"), Purpose: r.PostFormValue("purpose"),
		BehindFirewall: r.PostFormValue("behind_firewall") != "", FirewallAccepted: r.PostFormValue("firewall_accepted") != "",
	}
}

const ownerKeyLifetime = 5 * 365 * 24 * time.Hour

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	req := formRequest(r)
	client := s.o.Proxy.ClientIP(r)
	limit := s.o.SubmitLimit
	if r.PostFormValue("op") == "check" {
		limit = s.o.CheckLimit
	}
	if retry, ok := limit.Allow(auth.ClientKey(client)); !ok {
		s.log.Warn("registration form rate limit", "remote", client.String(), "op", r.PostFormValue("op"))
		tooMany(w, retry)
		s.render(w, r, http.StatusTooManyRequests, "register", page{"Title": "Register a device", "F": req, "Errs": registration.FieldErrors{},
			"Error": "Too many requests from your address. Try again in " + fmtWait(retry) + "."})
		return
	}
	if r.PostFormValue("op") == "check" {
		c, errs := s.o.Registry.Validate(r.Context(), req)
		only := registration.FieldErrors{}
		for _, f := range []string{"name", "ips"} {
			if e, ok := errs[f]; ok {
				only[f] = e
			}
		}
		var check *fcrdns.Result
		if len(only) == 0 {
			check = &c.FCrDNS
		}
		s.render(w, r, http.StatusOK, "register", page{"Title": "Register a device", "F": req, "Errs": only, "Check": check})
		return
	}
	// Every registration gets its own key: a key planted in this browser
	// by someone else never comes to own the visitor's new device.
	key, keyHash := auth.NewToken()
	d, errs, err := s.registerCapped(r.Context(), req, keyHash, client)
	capped := errors.Is(err, errCapped)
	if err != nil && !capped {
		s.internal(w, r, err)
		return
	}
	if len(errs) > 0 {
		status := http.StatusUnprocessableEntity
		switch {
		case errs.HasControl():
			status = http.StatusBadRequest
		case capped:
			status = http.StatusTooManyRequests
		}
		var check *fcrdns.Result
		if status == http.StatusUnprocessableEntity {
			c, _ := s.o.Registry.Validate(r.Context(), req)
			if _, bad := errs["name"]; !bad && len(c.FCrDNS.Lines) > 0 {
				check = &c.FCrDNS
			}
		}
		s.render(w, r, status, "register", page{"Title": "Register a device", "F": req, "Errs": errs, "Check": check,
			"Error": "Some fields need attention (see below)."})
		return
	}
	http.SetCookie(w, s.cookie(OwnerCookie, joinKeys(append([]string{key}, ownerKeys(r)...)), ownerKeyLifetime))
	done := "registered"
	if sent, err := s.o.Registry.SendOwnerLink(r.Context(), d, s.ownerLink(key), false); err != nil {
		s.log.Warn("owner link not mailed", "device", d.Name, "err", err)
	} else if sent {
		done = "registered-mailed"
	}
	http.Redirect(w, r, "/my/devices/"+url.PathEscape(d.Name)+"?done="+done, http.StatusSeeOther)
}

func (s *Server) ownerLink(key string) string {
	base := s.o.BaseURL
	if base == "" {
		base = s.o.Registry.BaseURL
	}
	return strings.TrimRight(base, "/") + "/owner?key=" + url.QueryEscape(key)
}

// ownerGroup is the devices of one owner key, with its link.
type ownerGroup struct {
	Link    string
	Devices []store.Device
}

func (s *Server) my(w http.ResponseWriter, r *http.Request) {
	var groups []ownerGroup
	for _, key := range ownerKeys(r) {
		devs, err := s.o.Store.ListDevices(r.Context(), store.DeviceFilter{OwnerKeyHash: auth.HashToken(key)})
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if len(devs) > 0 {
			groups = append(groups, ownerGroup{Link: s.ownerLink(key), Devices: devs})
		}
	}
	s.render(w, r, http.StatusOK, "my", page{"Title": "My devices", "Groups": groups})
}

// ownedDevice returns the device if the request's owner key owns it.
func (s *Server) ownedDevice(w http.ResponseWriter, r *http.Request) (store.Device, bool) {
	name := r.PathValue("name")
	d, err := s.o.Store.Device(r.Context(), name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.internal(w, r, err)
		return d, false
	}
	owns := false
	for _, key := range ownerKeys(r) {
		if err == nil && d.OwnerKeyHash != "" && auth.Equal(d.OwnerKeyHash, auth.HashToken(key)) {
			owns = true
		}
	}
	if !owns {
		// The same answer for "missing" and "not yours": names are not
		// confirmed to strangers.
		s.fail(w, r, http.StatusNotFound, "Not found", "There is no device of yours with this name. Open it from \"My devices\", or use your owner link.")
		return d, false
	}
	return d, true
}

func (s *Server) devicePage(ctx context.Context, d store.Device, staff bool) (page, error) {
	evs, err := s.o.Store.ListEvents(ctx, store.EventFilter{Device: d.Name, Limit: 50})
	if err != nil {
		return nil, err
	}
	hist, err := s.o.Store.ListAudit(ctx, store.AuditFilter{Device: d.Name, Limit: 100})
	if err != nil {
		return nil, err
	}
	p := page{"Title": d.Name, "D": d, "Events": evs, "History": hist}
	if staff {
		p["Actions"] = registration.Actions
		p["Links"] = s.o.Registry.PendingLinks(d.Name)
	} else {
		p["Staff"] = ""
	}
	return p, nil
}

func (s *Server) ownerDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	p, err := s.devicePage(r.Context(), d, false)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "device", p)
}

func (s *Server) ownerCheck(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	if retry, ok := s.o.CheckLimit.Allow(auth.ClientKey(s.o.Proxy.ClientIP(r))); !ok {
		tooMany(w, retry)
		s.fail(w, r, http.StatusTooManyRequests, "Too many checks", "Too many DNS checks from your address. Try again in "+fmtWait(retry)+".")
		return
	}
	res, err := s.o.Registry.CheckDNS(r.Context(), d.Name)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	d, _ = s.o.Store.Device(r.Context(), d.Name)
	p, err := s.devicePage(r.Context(), d, false)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p["Check"] = &res
	s.render(w, r, http.StatusOK, "device", p)
}

func (s *Server) confirmForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "confirm", page{"Title": "Confirm a sender address", "Token": r.URL.Query().Get("token")})
}

func (s *Server) confirm(w http.ResponseWriter, r *http.Request) {
	dev, addr, err := s.o.Registry.Confirm(r.Context(), r.PostFormValue("token"))
	if errors.Is(err, store.ErrNotFound) {
		s.render(w, r, http.StatusNotFound, "confirm", page{"Title": "Confirm a sender address"})
		return
	}
	if errors.Is(err, registration.ErrLinkExpired) {
		s.render(w, r, http.StatusGone, "confirm", page{"Title": "Confirm a sender address", "Expired": true})
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "confirm", page{"Title": "Sender confirmed", "Done": true, "Device": dev, "Address": addr})
}

// ---- staff side ----

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

func (s *Server) console(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	f := store.DeviceFilter{Query: q.Get("q"), Limit: 500}
	st := q.Get("status")
	if st != "" {
		if !store.Status(st).Valid() {
			s.fail(w, r, http.StatusBadRequest, "Bad filter", "Unknown status.")
			return
		}
		f.Status = []store.Status{store.Status(st)}
	}
	devs, err := s.o.Store.ListDevices(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	counts, err := s.o.Store.CountDevices(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "console", page{"Title": "Devices", "Staff": user, "Devices": devs, "Counts": counts, "Statuses": store.Statuses, "Q": f.Query, "Status": st})
}

func (s *Server) staffDeviceLoad(w http.ResponseWriter, r *http.Request) (store.Device, bool) {
	d, err := s.o.Store.Device(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
		return d, false
	}
	if err != nil {
		s.internal(w, r, err)
		return d, false
	}
	return d, true
}

func (s *Server) staffDevice(w http.ResponseWriter, r *http.Request, user string) {
	s.staffDeviceWith(w, r, user, http.StatusOK, nil, "")
}

func (s *Server) staffDeviceWith(w http.ResponseWriter, r *http.Request, user string, status int, check *fcrdns.Result, errMsg string) {
	d, ok := s.staffDeviceLoad(w, r)
	if !ok {
		return
	}
	p, err := s.devicePage(r.Context(), d, true)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p["Staff"] = user
	if check != nil {
		p["Check"] = check
	}
	if errMsg != "" {
		p["Error"] = errMsg
	}
	s.render(w, r, status, "device", p)
}

func (s *Server) staffAct(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	a := registration.Action(r.PostFormValue("action"))
	err := s.o.Registry.Act(r.Context(), name, a, "staff:"+user, r.PostFormValue("reason"), r.PostFormValue("force") != "")
	switch code := registration.HTTPStatus(err); {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done="+url.QueryEscape(string(a)), http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case code == http.StatusInternalServerError:
		s.internal(w, r, err)
	default:
		s.staffDeviceWith(w, r, user, code, nil, "Not done: "+err.Error())
	}
}

func (s *Server) staffLimits(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	mph, err1 := strconv.Atoi(strings.TrimSpace(r.PostFormValue("mph")))
	rph, err2 := strconv.Atoi(strings.TrimSpace(r.PostFormValue("rph")))
	if err1 != nil || err2 != nil {
		s.staffDeviceWith(w, r, user, http.StatusUnprocessableEntity, nil, "Limits must be whole numbers.")
		return
	}
	err := s.o.Registry.SetLimits(r.Context(), name, "staff:"+user, mph, rph)
	switch {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done=limits", http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case errors.Is(err, registration.ErrLimitRange):
		s.staffDeviceWith(w, r, user, http.StatusUnprocessableEntity, nil, err.Error())
	default:
		s.internal(w, r, err)
	}
}

func (s *Server) staffCheck(w http.ResponseWriter, r *http.Request, user string) {
	res, err := s.o.Registry.CheckDNS(r.Context(), r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.staffDeviceWith(w, r, user, http.StatusOK, &res, "")
}

func (s *Server) staffResend(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	err := s.o.Registry.SendConfirmations(r.Context(), name)
	switch {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done=resend", http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	default:
		s.staffDeviceWith(w, r, user, http.StatusBadGateway, nil, "Some links could not be sent: "+err.Error())
	}
}

func (s *Server) edgesPage(w http.ResponseWriter, r *http.Request, user string, status int, extra page) {
	edges, err := s.o.Store.ListEdges(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ver, err := s.o.Store.AllowlistVersion(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	p := page{"Title": "Edges", "Staff": user, "Edges": edges, "Version": ver, "BaseURL": s.o.BaseURL}
	for k, v := range extra {
		p[k] = v
	}
	s.render(w, r, status, "edges", p)
}

func (s *Server) edges(w http.ResponseWriter, r *http.Request, user string) {
	s.edgesPage(w, r, user, http.StatusOK, nil)
}

func (s *Server) createEdge(w http.ResponseWriter, r *http.Request, user string) {
	id := strings.TrimSpace(r.PostFormValue("id"))
	if err := topic.ValidEdgeID(id); err != nil {
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	}
	tok, err := s.o.Registry.CreateEdge(r.Context(), id, r.PostFormValue("name"), r.PostFormValue("site"))
	switch {
	case errors.Is(err, store.ErrExists):
		s.edgesPage(w, r, user, http.StatusConflict, page{"Error": "An edge with this id exists already."})
		return
	case errors.Is(err, registration.ErrReservedEdgeID):
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	case err != nil && strings.Contains(err.Error(), "at most"):
		s.edgesPage(w, r, user, http.StatusUnprocessableEntity, page{"Error": err.Error()})
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	s.log.Info("edge created", "edge", id, "actor", "staff:"+user)
	s.edgesPage(w, r, user, http.StatusOK, page{"Token": tok, "TokenEdge": id, "Flash": "Edge " + id + " created."})
}

func (s *Server) edgeToken(w http.ResponseWriter, r *http.Request, user string) {
	id := r.PathValue("id")
	tok, err := s.o.Registry.NewEnrolment(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No edge with this id.")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.edgesPage(w, r, user, http.StatusOK, page{"Token": tok, "TokenEdge": id})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, user string) {
	entries, err := s.o.Store.ListAudit(r.Context(), store.AuditFilter{Device: r.URL.Query().Get("device"), Edge: r.URL.Query().Get("edge"), Limit: 500})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "audit", page{"Title": "Audit log", "Staff": user, "Entries": entries})
}
