package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// MaxOwnerKeys is how many owner keys one browser keeps (newest first).
const MaxOwnerKeys = 10

// hashWait is how long a login waits for a free password-hash slot
// before it is answered 503.
const hashWait = 200 * time.Millisecond

// capField is the form field that carries a pending-cap refusal.
const capField = "contact_email"

// errCapped: a pending-request cap refused the request (field error on
// capField).
var errCapped = errors.New("too many pending requests")

func (o *Options) defaults() {
	if o.Throttle == nil {
		o.Throttle = auth.NewThrottle(auth.ThrottleConfig{FreeAttempts: 5, Backoff: time.Second, LockAfter: 10, LockFor: 15 * time.Minute}, o.Clock)
	}
	if o.Hashes == nil {
		o.Hashes = auth.NewHashes(4)
	}
	if o.SubmitLimit == nil {
		o.SubmitLimit = auth.NewRateLimit(10, time.Hour, o.Clock)
	}
	if o.CheckLimit == nil {
		o.CheckLimit = auth.NewRateLimit(60, time.Hour, o.Clock)
	}
	if o.MaxPendingPerContact <= 0 {
		o.MaxPendingPerContact = 5
	}
	if o.MaxPendingPerAddress <= 0 {
		o.MaxPendingPerAddress = 10
	}
	if o.MaxTokenLifetime <= 0 {
		o.MaxTokenLifetime = 365 * 24 * time.Hour
	}
	if o.TokenLifetime <= 0 || o.TokenLifetime > o.MaxTokenLifetime {
		o.TokenLifetime = min(90*24*time.Hour, o.MaxTokenLifetime)
	}
}

// ownerKeys returns the browser's owner keys (well-formed ones only).
func ownerKeys(r *http.Request) []string {
	c, err := r.Cookie(OwnerCookie)
	if err != nil {
		return nil
	}
	var out []string
	for _, k := range strings.Split(c.Value, ".") {
		if validKey(k) && len(out) < MaxOwnerKeys {
			out = append(out, k)
		}
	}
	return out
}

func validKey(k string) bool { return len(k) >= 32 && len(k) <= 128 && !strings.Contains(k, ".") }

// joinKeys is the cookie value of keys: de-duplicated, at most
// MaxOwnerKeys, first ones kept.
func joinKeys(keys []string) string {
	var out []string
	seen := map[string]bool{}
	for _, k := range keys {
		if !seen[k] && len(out) < MaxOwnerKeys {
			seen[k] = true
			out = append(out, k)
		}
	}
	return strings.Join(out, ".")
}

// userKey is the throttling key of a typed user name (bounded in length:
// anything can be typed).
func userKey(name string) string {
	name = strings.ToLower(name)
	if len(name) > 64 {
		name = name[:64]
	}
	return "user:" + name
}

// throttled is the wait a throttled attempt must keep.
type throttled time.Duration

func (t throttled) Error() string { return "throttled for " + time.Duration(t).String() }

var errBadLogin = errors.New("wrong user name or password")

// login1 checks one login attempt under the throttle; the caller holds a
// hash slot. The returned user has a Name only when the name exists.
func (s *Server) login1(ctx context.Context, keys []string, name, pw string) (store.User, error) {
	u, err := s.o.Store.User(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.User{}, err
	}
	known := err == nil
	if !known {
		u = store.User{}
	}
	if retry, ok := s.o.Throttle.Begin(keys...); !ok {
		return u, throttled(retry)
	}
	hash := u.PasswordHash
	if !known {
		hash = dummyHash
	}
	if !auth.CheckPassword(hash, pw) || !known {
		return u, errBadLogin
	}
	s.o.Throttle.Reset(keys...)
	return u, nil
}

// tooMany sets Retry-After (whole seconds, rounded up).
func tooMany(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
}

func fmtWait(d time.Duration) string {
	switch {
	case d <= time.Second:
		return "a second"
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int((d+time.Second-1)/time.Second))
	case d <= time.Minute:
		return "a minute"
	default:
		return fmt.Sprintf("%d minutes", int((d+time.Minute-1)/time.Minute))
	}
}

// registerCapped registers a public request unless its contact or client
// address has too many pending requests already (then errs carries the
// reason and err is errCapped).
func (s *Server) registerCapped(ctx context.Context, req registration.Request, keyHash string, client netip.Addr) (store.Device, registration.FieldErrors, error) {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	ip := ""
	if client.IsValid() {
		ip = client.String()
	}
	n, err := s.o.Store.CountPending(ctx, req.ContactEmail, ip)
	if err != nil {
		return store.Device{}, nil, err
	}
	switch {
	case n.ByContact >= s.o.MaxPendingPerContact:
		s.log.Warn("registration refused: pending requests per contact", "remote", ip, "pending", n.ByContact)
		return store.Device{}, registration.FieldErrors{capField: fmt.Sprintf(
			"this contact address has %d requests waiting for review already; wait until staff have handled them", n.ByContact)}, errCapped
	case ip != "" && n.ByClientIP >= s.o.MaxPendingPerAddress:
		s.log.Warn("registration refused: pending requests per client address", "remote", ip, "pending", n.ByClientIP)
		return store.Device{}, registration.FieldErrors{capField: fmt.Sprintf(
			"%d requests from your network address are waiting for review already; wait until staff have handled them", n.ByClientIP)}, errCapped
	}
	d, errs, err := s.o.Registry.Register(ctx, req, keyHash, "owner")
	if err != nil || len(errs) > 0 || ip == "" {
		return d, errs, err
	}
	if err := s.o.Store.RecordRequester(ctx, d.Name, ip); err != nil {
		s.log.Warn("requester address not recorded", "device", d.Name, "err", err)
	}
	return d, nil, nil
}

// ownsAny reports whether key owns at least one registration.
func (s *Server) ownsAny(ctx context.Context, key string) (bool, error) {
	if !validKey(key) {
		return false, nil
	}
	ds, err := s.o.Store.ListDevices(ctx, store.DeviceFilter{OwnerKeyHash: auth.HashToken(key), Limit: 1})
	return len(ds) > 0, err
}

// ownerLinkForm is the page an owner link opens: it changes nothing, it
// asks (a POST with CSRF does it).
func (s *Server) ownerLinkForm(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if !validKey(key) {
		s.fail(w, r, http.StatusBadRequest, "Owner link not valid", "This owner link is incomplete. Copy the whole link.")
		return
	}
	ok, err := s.ownsAny(r.Context(), key)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !ok {
		s.fail(w, r, http.StatusNotFound, "Owner link not valid", "No registration belongs to this owner link.")
		return
	}
	s.render(w, r, http.StatusOK, "owner", page{"Title": "Open your devices", "Key": key})
}

// ownerLogin adds an owner key to this browser (POST, CSRF checked).
func (s *Server) ownerLogin(w http.ResponseWriter, r *http.Request) {
	key := r.PostFormValue("key")
	ok, err := s.ownsAny(r.Context(), key)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !ok {
		s.fail(w, r, http.StatusNotFound, "Owner link not valid", "No registration belongs to this owner link.")
		return
	}
	http.SetCookie(w, s.cookie(OwnerCookie, joinKeys(append([]string{key}, ownerKeys(r)...)), ownerKeyLifetime))
	http.Redirect(w, r, "/my", http.StatusSeeOther)
}

// ownerResend sends new confirmation links to the device's unconfirmed
// affiliated senders (the others are left to staff).
func (s *Server) ownerResend(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	if retry, ok := s.o.SubmitLimit.Allow(auth.ClientKey(s.o.Proxy.ClientIP(r))); !ok {
		tooMany(w, retry)
		s.fail(w, r, http.StatusTooManyRequests, "Too many requests", "Too many requests from your address. Try again in "+fmtWait(retry)+".")
		return
	}
	left, err := s.o.Registry.ResendConfirmations(r.Context(), d.Name)
	status, extra := http.StatusOK, page{}
	switch {
	case err != nil:
		s.log.Warn("owner re-send of confirmation links failed", "device", d.Name, "err", err)
		status = http.StatusBadGateway
		extra["Error"] = "Some links could not be sent. Try again later."
	case len(left) > 0:
		extra["Flash"] = "Confirmation links sent again. Addresses outside the organisation (" + strings.Join(left, ", ") + ") get theirs from staff."
	default:
		extra["Flash"] = "Confirmation links sent again."
	}
	s.renderOwnerDevice(w, r, status, d, extra)
}

// ---- staff: API tokens and account ----
