package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/event"
)

// ownerTemplates are the pages of this file family and the files each is
// made of (besides layout.html).
var ownerTemplates = map[string][]string{
	"device":   {"device.html", "stats.html"},
	"edit":     {"edit.html", "fields.html"},
	"register": {"register.html", "fields.html"},
	"withdraw": {"withdraw.html"},
	"overview": {"overview.html", "stats.html"},
	"edge":     {"edge.html", "stats.html"},
	// The staff device page shows the same stats as the owner's.
	"staff_device": {"staff_device.html", "stats.html"},
}

// routeOwnerPages parses the owner and overview templates, binds the time
// functions and adds the owner's self-service routes and the staff
// overview pages.
func (s *Server) routeOwnerPages(m *http.ServeMux) error {
	for name, files := range ownerTemplates {
		paths := []string{"templates/layout.html"}
		for _, f := range files {
			paths = append(paths, "templates/"+f)
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, paths...)
		if err != nil {
			return fmt.Errorf("web: template %s: %w", name, err)
		}
		s.pages[name] = t
	}
	s.bindTimeFuncs()
	m.HandleFunc("GET /my/devices/{name}/edit", s.ownerEditForm)
	m.HandleFunc("POST /my/devices/{name}/edit", s.ownerEdit)
	m.HandleFunc("GET /my/devices/{name}/withdraw", s.ownerWithdrawForm)
	m.HandleFunc("POST /my/devices/{name}/withdraw", s.ownerAction(store.ActWithdraw))
	m.HandleFunc("POST /my/devices/{name}/renew", s.ownerAction(store.ActRenew))
	m.HandleFunc("POST /my/devices/{name}/rerequest", s.ownerAction(store.ActRerequest))
	s.routeOverview(m)
	return nil
}

// ownerFlash turns a fixed code from a redirect into a message.
func ownerFlash(code string) string {
	switch code {
	case "edited":
		return "Your changes are saved."
	case "review":
		return "Your changes are saved. They change what the relay enforces, so the registration is back in review: the relay refuses the device's mail until staff approve it again. New sender addresses get a confirmation link."
	case "rerequested", "rerequest":
		return "Your request is back in review. You get a mail when staff have decided."
	case "withdraw":
		return "The registration is withdrawn: the relay no longer accepts the device's mail."
	case "renew":
		return "The registration is renewed."
	}
	return flash(code)
}

// report is one event as an owner reads it.
type report struct {
	Time time.Time
	Kind event.Kind
	Edge string
	Text string
}

// ownerReports are the device's latest refusals and NDRs and, while it is
// not active, the refusals of its registered addresses. Addresses count
// only when the DNS check matched (the PTR of each address names the
// device), so a request naming someone else's address does not reveal
// whom that system mails.
func (s *Server) ownerReports(ctx context.Context, d store.Device) ([]report, error) {
	var ips []string
	if d.FCrDNSOK && !d.Status.Enforced() && d.Status != store.Revoked {
		ips = d.IPs
	}
	evs, err := s.o.Store.DeviceReports(ctx, d.Name, ips, d.CreatedAt.Add(-7*24*time.Hour), 30)
	if err != nil {
		return nil, err
	}
	out := make([]report, 0, len(evs))
	for _, e := range evs {
		out = append(out, report{Time: e.Time, Kind: e.Kind, Edge: e.Edge, Text: reportText(e, d)})
	}
	return out, nil
}

// reportText says in a sentence what an event means for the owner.
func reportText(e event.Event, d store.Device) string {
	who := "Your device"
	if e.ClientIP != "" {
		who += " at " + e.ClientIP
	}
	from, to := "", ""
	if e.Sender != "" {
		from = " from " + e.Sender
	}
	if e.Recipient != "" {
		to = " to " + e.Recipient
	}
	said := ""
	if e.Reason != "" {
		said = " (the relay said: " + e.Reason + ")"
	}
	times := ""
	if e.Count > 1 {
		times = fmt.Sprintf(" %d times", e.Count)
	}
	switch e.Kind {
	case event.Refusal:
		why := ""
		if e.Device == "" {
			switch d.Status {
			case store.Pending:
				why = " because its registration is pending (not yet approved)"
			case store.Denied:
				why = " because its registration was denied"
			case store.Expired:
				why = " because its registration has expired"
			}
		}
		return fmt.Sprintf("%s tried to send%s%s%s and was refused%s%s.", who, from, to, times, why, said)
	case event.RateLimit:
		return fmt.Sprintf("%s reached its hourly limit%s%s; further mail was refused until the hour passed%s.", who, times, from, said)
	case event.ReportDropped:
		return fmt.Sprintf("A bounce for mail%s%s was not sent%s.", from, to, said)
	case event.NDR:
		return fmt.Sprintf("Mail%s%s could not be delivered; a bounce was sent to the sender%s.", from, to, said)
	case event.NDRUndeliverable:
		return fmt.Sprintf("A bounce to %s could not be delivered: this address must receive mail, or the device is suspended%s.", orSender(e.Sender), said)
	case event.NDRWarning:
		return fmt.Sprintf("A bounce to %s could not be delivered; the device stays active%s.", orSender(e.Sender), said)
	}
	return fmt.Sprintf("%s: %s%s.", e.Kind, who, said)
}

func orSender(s string) string {
	if s == "" {
		return "the device's sender"
	}
	return s
}

// ownerActions says which owner actions a device's status allows.
type ownerActions struct {
	Edit, Rerequest, Withdraw, Renew bool
	// RenewFrom is when renewing opens (active devices).
	RenewFrom time.Time
}

func (s *Server) actionsFor(d store.Device) ownerActions {
	a := ownerActions{}
	switch d.Status {
	case store.Pending:
		a.Edit, a.Withdraw = true, true
	case store.Active:
		a.Edit, a.Withdraw = true, true
		a.RenewFrom = d.ExpiresAt.Add(-registration.RenewWindow)
		a.Renew = !s.o.Clock().Before(a.RenewFrom)
	case store.Suspended:
		a.Edit, a.Withdraw = true, true
	case store.Denied, store.Expired:
		a.Edit, a.Rerequest, a.Withdraw = true, true, true
	}
	return a
}

// ownerPage is the data of an owner's device page.
func (s *Server) ownerPage(ctx context.Context, d store.Device) (page, error) {
	reps, err := s.ownerReports(ctx, d)
	if err != nil {
		return nil, err
	}
	hist, err := s.o.Store.ListAudit(ctx, store.AuditFilter{Device: d.Name, Limit: 100})
	if err != nil {
		return nil, err
	}
	st, err := s.deviceStats(ctx, d.Name)
	if err != nil {
		return nil, err
	}
	return page{"Title": d.Name, "D": d, "Reports": reps, "History": hist, "Staff": "", "Can": s.actionsFor(d), "Stats": st,
		"RenewUntil": d.ExpiresAt.Add(s.o.Registry.Period)}, nil
}

func (s *Server) renderOwnerDevice(w http.ResponseWriter, r *http.Request, status int, d store.Device, extra page) {
	p, err := s.ownerPage(r.Context(), d)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if f := ownerFlash(r.URL.Query().Get("done")); f != "" {
		p["Flash"] = f
	}
	for k, v := range extra {
		p[k] = v
	}
	s.render(w, r, status, "device", p)
}

// requestOf is the form's view of a stored registration.
func requestOf(d store.Device) registration.Request {
	var senders []string
	for _, sn := range d.Senders {
		senders = append(senders, sn.Address)
	}
	return registration.Request{Name: d.Name, IPs: strings.Join(d.IPs, ", "), Owner: d.Owner, Department: d.Department,
		ContactEmail: d.ContactEmail, Senders: strings.Join(senders, "\n"), Purpose: d.Purpose,
		BehindFirewall: d.BehindFirewall, FirewallAccepted: d.FirewallAccepted}
}

func (s *Server) editPage(d store.Device, req registration.Request, errs registration.FieldErrors) page {
	return page{"Title": "Change " + d.Name, "D": d, "F": req, "Errs": errs, "Can": s.actionsFor(d), "Edit": true}
}

func (s *Server) ownerEditForm(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	if !s.actionsFor(d).Edit {
		s.renderOwnerDevice(w, r, http.StatusConflict, d, page{"Error": "A " + string(d.Status) + " registration cannot be changed."})
		return
	}
	s.render(w, r, http.StatusOK, "edit", s.editPage(d, requestOf(d), registration.FieldErrors{}))
}

func (s *Server) ownerEdit(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	if retry, ok := s.o.SubmitLimit.Allow(auth.ClientKey(s.o.Proxy.ClientIP(r))); !ok {
		tooMany(w, retry)
		s.fail(w, r, http.StatusTooManyRequests, "Too many requests", "Too many requests from your address. Try again in "+fmtWait(retry)+".")
		return
	}
	req := formRequest(r)
	req.Name = d.Name
	rerequest := r.PostFormValue("op") == "rerequest"
	from, to, errs, err := s.o.Registry.OwnerEdit(r.Context(), d.Name, req, rerequest, "owner")
	switch {
	case err != nil && errors.Is(err, store.ErrTransition):
		s.renderOwnerDevice(w, r, http.StatusConflict, d, page{"Error": "A " + string(d.Status) + " registration cannot be changed."})
		return
	case err != nil:
		s.internal(w, r, err)
		return
	case len(errs) > 0:
		status := http.StatusUnprocessableEntity
		if errs.HasControl() {
			status = http.StatusBadRequest
		}
		p := s.editPage(d, req, errs)
		p["Error"] = "Some fields need attention (see below). Nothing was changed."
		s.render(w, r, status, "edit", p)
		return
	}
	done := "edited"
	switch {
	case rerequest && from != to:
		done = "rerequested"
	case from != to:
		done = "review"
	}
	http.Redirect(w, r, "/my/devices/"+url.PathEscape(d.Name)+"?done="+done, http.StatusSeeOther)
}

func (s *Server) ownerWithdrawForm(w http.ResponseWriter, r *http.Request) {
	d, ok := s.ownedDevice(w, r)
	if !ok {
		return
	}
	if !s.actionsFor(d).Withdraw {
		s.renderOwnerDevice(w, r, http.StatusConflict, d, page{"Error": "This registration has ended already."})
		return
	}
	s.render(w, r, http.StatusOK, "withdraw", page{"Title": "Withdraw " + d.Name, "D": d})
}

// ownerAction applies an owner's withdraw, renew or re-request.
func (s *Server) ownerAction(a store.Action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, ok := s.ownedDevice(w, r)
		if !ok {
			return
		}
		err := s.o.Registry.OwnerAct(r.Context(), d.Name, a, "owner")
		switch code := registration.HTTPStatus(err); {
		case err == nil:
			http.Redirect(w, r, "/my/devices/"+url.PathEscape(d.Name)+"?done="+string(a), http.StatusSeeOther)
		case code == http.StatusInternalServerError:
			s.internal(w, r, err)
		default:
			msg := "Not done: this is not possible while the registration is " + string(d.Status) + "."
			if errors.Is(err, registration.ErrRenewTooEarly) {
				msg = "Not renewed: " + err.Error() + "."
			}
			s.renderOwnerDevice(w, r, code, d, page{"Error": msg})
		}
	}
}
