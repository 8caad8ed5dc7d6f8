package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// Staff editing of a registration: IPs, senders, owner, department,
// contact and purpose (limits and status have their own forms). Every
// change is one audit entry; new senders are sent a confirmation link.

func (s *Server) routeEdit(m *http.ServeMux) {
	m.HandleFunc("GET /staff/devices/{name}/edit", s.staff(s.editForm))
	m.HandleFunc("POST /staff/devices/{name}/edit", s.staff(s.editDevice))
}

// editFields is the edit form's content.
type editFields struct {
	IPs, Owner, Department, ContactEmail, Senders, Purpose string
}

func (s *Server) editForm(w http.ResponseWriter, r *http.Request, user string) {
	d, ok := s.staffDeviceLoad(w, r)
	if !ok {
		return
	}
	var snd []string
	for _, sn := range d.Senders {
		snd = append(snd, sn.Address)
	}
	f := editFields{IPs: strings.Join(d.IPs, ", "), Owner: d.Owner, Department: d.Department, ContactEmail: d.ContactEmail,
		Senders: strings.Join(snd, "\n"), Purpose: d.Purpose}
	s.render(w, r, http.StatusOK, "staff_edit", page{"Title": "Edit " + d.Name, "Staff": user, "D": d, "F": f, "Errs": registration.FieldErrors{}})
}

func (s *Server) editDevice(w http.ResponseWriter, r *http.Request, user string) {
	d, ok := s.staffDeviceLoad(w, r)
	if !ok {
		return
	}
	f := editFields{IPs: r.PostFormValue("ips"), Owner: r.PostFormValue("owner"), Department: r.PostFormValue("department"),
		ContactEmail: r.PostFormValue("contact_email"), Senders: r.PostFormValue("senders"), Purpose: r.PostFormValue("purpose")}
	res, errs, err := s.o.Registry.Edit(r.Context(), d.Name, "staff:"+user, registration.Request{IPs: f.IPs, Owner: f.Owner,
		Department: f.Department, ContactEmail: f.ContactEmail, Senders: f.Senders, Purpose: f.Purpose})
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case err != nil:
		s.internal(w, r, err)
	case len(errs) > 0:
		s.render(w, r, http.StatusUnprocessableEntity, "staff_edit", page{"Title": "Edit " + d.Name, "Staff": user, "D": d, "F": f, "Errs": errs,
			"Error": "Not saved: some fields need attention (see below)."})
	case len(res.Changes) == 0:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(d.Name)+"?done=unchanged", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(d.Name)+"?done=edited", http.StatusSeeOther)
	}
}
