package web

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

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
