package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

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

func (s *Server) ownerDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	s.renderOwnerDevice(w, r, http.StatusOK, d, nil)
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
	s.renderOwnerDevice(w, r, http.StatusOK, d, page{"Check": &res})
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
