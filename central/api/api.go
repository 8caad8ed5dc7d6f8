// Package api serves central's JSON API under /api/v1/ (see README.md in
// this folder): everything the staff console does, for automation.
//
// Every request needs "Authorization: Bearer TOKEN", a staff API token
// made in the console (/staff/tokens), with POST /api/v1/tokens or with
// `postern-central user token NAME` (stored hashed). A token has a scope
// (read-only tokens may only GET; anything else is 403) and an expiry.
// Failed tokens are throttled per client address like logins (429 with
// Retry-After). Answers are JSON; errors are {"error": "...", "fields":
// {...}} with a status code that says what kind (400 bad JSON or control
// characters, 401 no/bad/expired token, 403 read-only token, 404 unknown
// device, edge or token, 409 not allowed in the current status, 422
// invalid fields, 429 throttled). The API is not cookie-authenticated, so
// it needs no CSRF token.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// Options configure the API.
type Options struct {
	Registry *registration.Service
	Store    store.Store
	// Throttle counts failed tokens per client address (the web's login
	// throttle; nil: the defaults).
	Throttle *auth.Throttle
	// Proxy gives the client address behind trusted proxies (may be nil).
	Proxy *auth.Proxy
	// BaseURL is central's external URL (owner links).
	BaseURL string
	// TokenLifetime is a new token's default expiry, MaxTokenLifetime the
	// longest (0: 90 and 365 days).
	TokenLifetime    time.Duration
	MaxTokenLifetime time.Duration
	Clock            func() time.Time
	Log              *slog.Logger
}

// Server is the API handler.
type Server struct {
	o   Options
	log *slog.Logger
	mux *http.ServeMux
}

// New sets up the routes.
func New(o Options) (*Server, error) {
	if o.Registry == nil || o.Store == nil {
		return nil, errors.New("api: Registry and Store are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Throttle == nil {
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 5, Backoff: time.Second, LockAfter: 10, LockFor: 15 * time.Minute}, o.Clock)
	}
	if o.MaxTokenLifetime <= 0 {
		o.MaxTokenLifetime = 365 * 24 * time.Hour
	}
	if o.TokenLifetime <= 0 || o.TokenLifetime > o.MaxTokenLifetime {
		o.TokenLifetime = min(90*24*time.Hour, o.MaxTokenLifetime)
	}
	s := &Server{o: o, log: o.Log.With("component", "api"), mux: http.NewServeMux()}
	m := s.mux
	m.HandleFunc("GET /api/v1/devices", s.auth(s.listDevices))
	m.HandleFunc("POST /api/v1/devices", s.auth(s.register))
	m.HandleFunc("GET /api/v1/devices/{name}", s.auth(s.device))
	m.HandleFunc("POST /api/v1/devices/{name}/fcrdns", s.auth(s.check))
	m.HandleFunc("POST /api/v1/devices/{name}/confirmations", s.auth(s.resend))
	m.HandleFunc("PUT /api/v1/devices/{name}/limits", s.auth(s.limits))
	m.HandleFunc("POST /api/v1/devices/{name}/{action}", s.auth(s.act))
	m.HandleFunc("GET /api/v1/edges", s.auth(s.listEdges))
	m.HandleFunc("POST /api/v1/edges", s.auth(s.createEdge))
	m.HandleFunc("POST /api/v1/edges/{id}/enrolment", s.auth(s.enrolment))
	m.HandleFunc("GET /api/v1/events", s.auth(s.events))
	m.HandleFunc("GET /api/v1/audit", s.auth(s.audit))
	m.HandleFunc("GET /api/v1/allowlist", s.auth(s.allowlist))
	m.HandleFunc("GET /api/v1/tokens", s.auth(s.listTokens))
	m.HandleFunc("POST /api/v1/tokens", s.auth(s.createToken))
	m.HandleFunc("DELETE /api/v1/tokens/{id}", s.auth(s.revokeToken))
	m.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such API endpoint", nil)
	})
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

type handler func(w http.ResponseWriter, r *http.Request, user string)

type tokenKey struct{}

// caller is the API token of the request.
func caller(ctx context.Context) store.APIToken {
	t, _ := ctx.Value(tokenKey{}).(store.APIToken)
	return t
}

func (s *Server) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="postern-central"`)
			writeErr(w, http.StatusUnauthorized, "an API token is required (Authorization: Bearer TOKEN)", nil)
			return
		}
		client := s.o.Proxy.ClientIP(r)
		key := auth.ClientKey(client)
		if retry := s.o.Throttle.Wait(key); retry > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
			writeErr(w, http.StatusTooManyRequests, "too many failed API tokens from this address; retry later", nil)
			return
		}
		t, err := s.o.Store.APIToken(r.Context(), auth.HashToken(strings.TrimSpace(tok)))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("API token lookup failed", "err", err)
			writeErr(w, http.StatusInternalServerError, "internal error", nil)
			return
		}
		expired := err == nil && !t.ExpiresAt.IsZero() && !s.o.Clock().Before(t.ExpiresAt)
		if err != nil || expired {
			s.o.Throttle.Fail(key)
			msg := "invalid API token"
			if expired {
				msg = "API token expired"
				s.log.Warn("expired API token refused", "remote", client.String(), "token_id", t.ID, "user", t.User)
			} else {
				s.log.Warn("API token refused", "remote", client.String())
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="postern-central", error="invalid_token"`)
			writeErr(w, http.StatusUnauthorized, msg, nil)
			return
		}
		if t.Scope != store.ReadWrite && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeErr(w, http.StatusForbidden, "this API token is read-only", nil)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, t)), t.User)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Error is the body of every error answer.
type Error struct {
	Error  string            `json:"error"`
	Fields map[string]string `json:"fields,omitempty"`
}

func writeErr(w http.ResponseWriter, status int, msg string, fields map[string]string) {
	writeJSON(w, status, Error{Error: msg, Fields: fields})
}

func (s *Server) storeErr(w http.ResponseWriter, err error) {
	switch code := registration.HTTPStatus(err); {
	case errors.Is(err, registration.ErrReasonRequired):
		writeErr(w, code, err.Error(), map[string]string{"reason": "required"})
	case code == http.StatusInternalServerError:
		s.log.Error("API request failed", "err", err)
		writeErr(w, http.StatusInternalServerError, "internal error", nil)
	default:
		writeErr(w, code, err.Error(), nil)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, "bad JSON body: "+err.Error(), nil)
		return false
	}
	return true
}

// Device is a device in API answers.
type Device struct {
	Name              string    `json:"name"`
	Status            string    `json:"status"`
	StatusReason      string    `json:"status_reason,omitempty"`
	IPs               []string  `json:"ips"`
	Owner             string    `json:"owner"`
	Department        string    `json:"department"`
	ContactEmail      string    `json:"contact_email"`
	Purpose           string    `json:"purpose"`
	BehindFirewall    bool      `json:"behind_firewall"`
	FirewallAccepted  bool      `json:"firewall_accepted"`
	Senders           []Sender  `json:"senders"`
	MessagesPerHour   int       `json:"messages_per_hour"`
	RecipientsPerHour int       `json:"recipients_per_hour"`
	FCrDNS            string    `json:"fcrdns"`
	FCrDNSOK          bool      `json:"fcrdns_ok"`
	ExpiresAt         time.Time `json:"expires_at,omitzero"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// Sender is a sender address in API answers.
type Sender struct {
	Address     string    `json:"address"`
	Personal    bool      `json:"looks_personal"`
	Confirmed   bool      `json:"confirmed"`
	ConfirmedAt time.Time `json:"confirmed_at,omitzero"`
}

func toDevice(d store.Device) Device {
	out := Device{Name: d.Name, Status: string(d.Status), StatusReason: d.StatusReason, IPs: d.IPs, Owner: d.Owner, Department: d.Department,
		ContactEmail: d.ContactEmail, Purpose: d.Purpose, BehindFirewall: d.BehindFirewall, FirewallAccepted: d.FirewallAccepted,
		MessagesPerHour: d.MessagesPerHour, RecipientsPerHour: d.RecipientsPerHour, FCrDNS: d.FCrDNS, FCrDNSOK: d.FCrDNSOK,
		ExpiresAt: d.ExpiresAt, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, Senders: []Sender{}}
	if out.IPs == nil {
		out.IPs = []string{}
	}
	for _, s := range d.Senders {
		out.Senders = append(out.Senders, Sender{Address: s.Address, Personal: s.Personal, Confirmed: s.Confirmed(), ConfirmedAt: s.ConfirmedAt})
	}
	return out
}

// Audit is an audit entry in API answers.
type Audit struct {
	Time             time.Time `json:"time"`
	Actor            string    `json:"actor"`
	Action           string    `json:"action"`
	Device           string    `json:"device,omitempty"`
	Edge             string    `json:"edge,omitempty"`
	From             string    `json:"from,omitempty"`
	To               string    `json:"to,omitempty"`
	Reason           string    `json:"reason,omitempty"`
	AllowlistVersion int64     `json:"allowlist_version,omitempty"`
}

func toAudit(as []store.AuditEntry) []Audit {
	out := []Audit{}
	for _, a := range as {
		out = append(out, Audit{a.Time, a.Actor, a.Action, a.Device, a.Edge, string(a.FromStatus), string(a.ToStatus), a.Reason, a.AllowlistVersion})
	}
	return out
}

func intParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 10000 {
		return 0, fmt.Errorf("%s must be a number from 0 to 10000", name)
	}
	return n, nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	f := store.DeviceFilter{Query: q.Get("q")}
	for _, st := range q["status"] {
		if !store.Status(st).Valid() {
			writeErr(w, http.StatusBadRequest, "unknown status "+strconv.Quote(st), map[string]string{"status": "unknown"})
			return
		}
		f.Status = append(f.Status, store.Status(st))
	}
	var err error
	if f.Limit, err = intParam(r, "limit", 500); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if f.Offset, err = intParam(r, "offset", 0); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	devs, err := s.o.Store.ListDevices(r.Context(), f)
	if err != nil {
		s.storeErr(w, err)
		return
	}
	out := []Device{}
	for _, d := range devs {
		out = append(out, toDevice(d))
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// RegisterRequest is the body of POST /api/v1/devices.
type RegisterRequest struct {
	Name             string   `json:"name"`
	IPs              []string `json:"ips"`
	Owner            string   `json:"owner"`
	Department       string   `json:"department"`
	ContactEmail     string   `json:"contact_email"`
	Senders          []string `json:"senders"`
	Purpose          string   `json:"purpose"`
	BehindFirewall   bool     `json:"behind_firewall"`
	FirewallAccepted bool     `json:"firewall_accepted"`
}

func (s *Server) register(w http.ResponseWriter, r *http.Request, user string) {
	var req RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	key, keyHash := auth.NewToken()
	d, errs, err := s.o.Registry.Register(r.Context(), registration.Request{
		Name: req.Name, IPs: strings.Join(req.IPs, ","), Owner: req.Owner, Department: req.Department, ContactEmail: req.ContactEmail,
		Senders: strings.Join(req.Senders, ","), Purpose: req.Purpose, BehindFirewall: req.BehindFirewall, FirewallAccepted: req.FirewallAccepted,
	}, keyHash, "api:"+user)
	if err != nil {
		s.storeErr(w, err)
		return
	}
	if errs.HasControl() {
		writeErr(w, http.StatusBadRequest, "control characters (CR, LF, tab or similar) in a field", errs)
		return
	}
	if len(errs) > 0 {
		writeErr(w, http.StatusUnprocessableEntity, "invalid registration", errs)
		return
	}
	link := strings.TrimRight(s.o.BaseURL, "/") + "/owner?key=" + key
	mailed, err := s.o.Registry.SendOwnerLink(r.Context(), d, link, true)
	if err != nil {
		s.log.Warn("owner link not mailed", "device", d.Name, "err", err)
	}
	writeJSON(w, http.StatusCreated, map[string]any{"device": toDevice(d), "owner_link": link, "owner_link_mailed": mailed})
}

func (s *Server) device(w http.ResponseWriter, r *http.Request, _ string) {
	d, err := s.o.Store.Device(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeErr(w, err)
		return
	}
	hist, err := s.o.Store.ListAudit(r.Context(), store.AuditFilter{Device: d.Name})
	if err != nil {
		s.storeErr(w, err)
		return
	}
	evs, err := s.o.Store.ListEvents(r.Context(), store.EventFilter{Device: d.Name, Limit: 100})
	if err != nil {
		s.storeErr(w, err)
		return
	}
	if evs == nil {
		evs = []event.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"device": toDevice(d), "history": toAudit(hist), "events": evs,
		"confirmation_links": s.o.Registry.PendingLinks(d.Name)})
}

// ActRequest is the optional body of POST /api/v1/devices/{name}/{action}.
type ActRequest struct {
	Reason string `json:"reason"`
	Force  bool   `json:"force"`
}

func (s *Server) act(w http.ResponseWriter, r *http.Request, user string) {
	var req ActRequest
	if r.ContentLength != 0 {
		if !decode(w, r, &req) {
			return
		}
	}
	name := r.PathValue("name")
	if err := s.o.Registry.Act(r.Context(), name, registration.Action(r.PathValue("action")), "api:"+user, req.Reason, req.Force); err != nil {
		s.storeErr(w, err)
		return
	}
	d, err := s.o.Store.Device(r.Context(), name)
	if err != nil {
		s.storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"device": toDevice(d)})
}

// LimitsRequest is the body of PUT /api/v1/devices/{name}/limits.
type LimitsRequest struct {
	MessagesPerHour   *int `json:"messages_per_hour"`
	RecipientsPerHour *int `json:"recipients_per_hour"`
}

func (s *Server) limits(w http.ResponseWriter, r *http.Request, user string) {
	var req LimitsRequest
	if !decode(w, r, &req) {
		return
	}
	if req.MessagesPerHour == nil || req.RecipientsPerHour == nil {
		writeErr(w, http.StatusUnprocessableEntity, "both limits are required", map[string]string{"messages_per_hour": "required", "recipients_per_hour": "required"})
		return
	}
	name := r.PathValue("name")
	if err := s.o.Registry.SetLimits(r.Context(), name, "api:"+user, *req.MessagesPerHour, *req.RecipientsPerHour); err != nil {
		if errors.Is(err, registration.ErrLimitRange) {
			writeErr(w, http.StatusUnprocessableEntity, err.Error(), nil)
			return
		}
		s.storeErr(w, err)
		return
	}
	d, err := s.o.Store.Device(r.Context(), name)
	if err != nil {
		s.storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"device": toDevice(d)})
}

func (s *Server) check(w http.ResponseWriter, r *http.Request, _ string) {
	res, err := s.o.Registry.CheckDNS(r.Context(), r.PathValue("name"))
	if err != nil {
		s.storeErr(w, err)
		return
	}
	lines := []map[string]any{}
	for _, l := range res.Lines {
		ip := ""
		if l.IP.IsValid() {
			ip = l.IP.String()
		}
		lines = append(lines, map[string]any{"ip": ip, "ok": l.OK, "text": l.Text})
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": res.Name, "ok": res.OK, "temporary": res.Temporary, "lines": lines})
}

func (s *Server) resend(w http.ResponseWriter, r *http.Request, _ string) {
	if err := s.o.Registry.SendConfirmations(r.Context(), r.PathValue("name")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			s.storeErr(w, err)
			return
		}
		writeErr(w, http.StatusBadGateway, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sent": true, "confirmation_links": s.o.Registry.PendingLinks(r.PathValue("name"))})
}

// Edge is an edge in API answers.
type Edge struct {
	ID               string           `json:"id"`
	Name             string           `json:"name"`
	Site             string           `json:"site"`
	Enrolled         bool             `json:"enrolled"`
	Online           bool             `json:"online"`
	LastSeen         time.Time        `json:"last_seen,omitzero"`
	AllowlistVersion int64            `json:"allowlist_version"`
	QueueDepth       int              `json:"queue_depth"`
	Outbox           int              `json:"outbox"`
	Software         string           `json:"software,omitempty"`
	Counters         map[string]int64 `json:"counters,omitempty"`
}

func (s *Server) listEdges(w http.ResponseWriter, r *http.Request, _ string) {
	edges, err := s.o.Store.ListEdges(r.Context())
	if err != nil {
		s.storeErr(w, err)
		return
	}
	ver, err := s.o.Store.AllowlistVersion(r.Context())
	if err != nil {
		s.storeErr(w, err)
		return
	}
	out := []Edge{}
	for _, e := range edges {
		out = append(out, Edge{e.ID, e.Name, e.Site, e.Enrolled, e.Status.Online, e.Status.LastSeen, e.Status.AllowlistVersion,
			e.Status.QueueDepth, e.Status.Outbox, e.Status.Software, e.Status.Counters})
	}
	writeJSON(w, http.StatusOK, map[string]any{"allowlist_version": ver, "edges": out})
}

// EdgeRequest is the body of POST /api/v1/edges.
type EdgeRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Site string `json:"site"`
}

func (s *Server) createEdge(w http.ResponseWriter, r *http.Request, user string) {
	var req EdgeRequest
	if !decode(w, r, &req) {
		return
	}
	tok, err := s.o.Registry.CreateEdge(r.Context(), req.ID, req.Name, req.Site)
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			s.storeErr(w, err)
			return
		}
		if strings.Contains(err.Error(), "edge id") || strings.Contains(err.Error(), "at most") {
			writeErr(w, http.StatusUnprocessableEntity, err.Error(), map[string]string{"id": err.Error()})
			return
		}
		s.storeErr(w, err)
		return
	}
	s.log.Info("edge created", "edge", req.ID, "actor", "api:"+user)
	writeJSON(w, http.StatusCreated, map[string]any{"id": req.ID, "enrolment_token": tok, "expires_in": registration.EnrolmentTTL.String()})
}

func (s *Server) enrolment(w http.ResponseWriter, r *http.Request, _ string) {
	tok, err := s.o.Registry.NewEnrolment(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "enrolment_token": tok, "expires_in": registration.EnrolmentTTL.String()})
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	limit, err := intParam(r, "limit", 100)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	evs, err := s.o.Store.ListEvents(r.Context(), store.EventFilter{Device: q.Get("device"), Edge: q.Get("edge"), Kind: event.Kind(q.Get("kind")), Limit: limit})
	if err != nil {
		s.storeErr(w, err)
		return
	}
	if evs == nil {
		evs = []event.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, _ string) {
	limit, err := intParam(r, "limit", 200)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	as, err := s.o.Store.ListAudit(r.Context(), store.AuditFilter{Device: r.URL.Query().Get("device"), Edge: r.URL.Query().Get("edge"), Limit: limit})
	if err != nil {
		s.storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"audit": toAudit(as)})
}

func (s *Server) allowlist(w http.ResponseWriter, r *http.Request, _ string) {
	ver, devs, err := s.o.Store.AllowlistSnapshot(r.Context())
	if err != nil {
		s.storeErr(w, err)
		return
	}
	type dev struct {
		Name              string   `json:"name"`
		Status            string   `json:"status"`
		Reason            string   `json:"reason,omitempty"`
		Senders           []string `json:"senders"`
		MessagesPerHour   int      `json:"messages_per_hour"`
		RecipientsPerHour int      `json:"recipients_per_hour"`
	}
	out := []dev{}
	for _, d := range devs {
		out = append(out, dev{d.Name, string(d.Status), d.Reason, d.Senders, d.MessagesPerHour, d.RecipientsPerHour})
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": ver, "devices": out})
}
