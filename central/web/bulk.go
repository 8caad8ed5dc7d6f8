package web

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// Bulk actions: staff pick devices on the list (or take everything the
// filter matches), see a confirmation page listing each device the action
// will change and each it will skip (with the count), and confirm with a
// POST that names exactly those devices. Each device then goes through the
// same rules as a single action (reason, warnings), one audit entry each.

// bulkMax is the most devices one bulk action takes.
const bulkMax = 500

var bulkActions = []store.Action{store.ActApprove, store.ActSuspend, store.ActReinstate, store.ActRenew, store.ActRevoke}

func (s *Server) routeBulk(m *http.ServeMux) {
	m.HandleFunc("GET /staff/bulk", s.staff(s.bulkConfirm))
	m.HandleFunc("POST /staff/bulk", s.staff(s.bulkApply))
}

type bulkItem struct {
	D        store.Device
	Warnings []registration.Warning
}

func (s *Server) bulkConfirm(w http.ResponseWriter, r *http.Request, user string) {
	q := r.URL.Query()
	a := store.Action(q.Get("action"))
	if !slices.Contains(bulkActions, a) {
		s.fail(w, r, http.StatusBadRequest, "No action chosen", "Choose the action to apply (approve, suspend, reinstate, renew or revoke), then review the devices.")
		return
	}
	var f store.DeviceQuery
	all := q.Get("all") != ""
	if all {
		var err error
		if f, err = s.deviceListQuery(q); err != nil {
			s.fail(w, r, http.StatusBadRequest, "Bad filter", "The device list cannot show this: "+err.Error()+".")
			return
		}
	} else {
		f.Names = q["sel"]
		if len(f.Names) == 0 {
			s.fail(w, r, http.StatusBadRequest, "No devices chosen", "Tick the devices to act on, or use \"all matching\".")
			return
		}
		if len(f.Names) > bulkMax {
			f.Names = f.Names[:bulkMax]
		}
	}
	f.Limit = bulkMax
	res, err := s.o.Store.ListDevicePage(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	var change, skip []bulkItem
	codes := map[string]registration.Warning{}
	for _, d := range res.Devices {
		it := bulkItem{D: d}
		if !allowed(a, d.Status) {
			skip = append(skip, it)
			continue
		}
		if a == store.ActApprove {
			it.Warnings = registration.Warnings(d)
			for _, wn := range it.Warnings {
				codes[wn.Code] = wn
			}
		}
		change = append(change, it)
	}
	var warnCodes []string
	for c := range codes {
		warnCodes = append(warnCodes, c)
	}
	slices.Sort(warnCodes)
	s.render(w, r, http.StatusOK, "bulk", page{"Title": "Confirm: " + string(a) + " " + strconv.Itoa(len(change)) + " devices", "Staff": user,
		"Action": a, "Change": change, "Skip": skip, "Count": len(change), "Total": res.Total, "Capped": res.Total > bulkMax,
		"WarnCodes": warnCodes, "NeedsReason": store.Lifecycle[a].NeedsReason, "Back": "/staff?" + strings.TrimPrefix(r.URL.RawQuery, "?")})
}

type bulkResult struct {
	Name string
	OK   bool
	Msg  string
}

func (s *Server) bulkApply(w http.ResponseWriter, r *http.Request, user string) {
	a := store.Action(r.PostFormValue("action"))
	names := r.PostForm["name"]
	count, err := strconv.Atoi(r.PostFormValue("count"))
	switch {
	case !slices.Contains(bulkActions, a):
		s.fail(w, r, http.StatusBadRequest, "No action chosen", "Unknown bulk action.")
		return
	case err != nil || count != len(names) || len(names) == 0 || len(names) > bulkMax:
		s.fail(w, r, http.StatusBadRequest, "Confirmation does not match", "The number of devices confirmed does not match the list. Go back to the device list and review again.")
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if store.Lifecycle[a].NeedsReason && reason == "" {
		s.fail(w, r, http.StatusUnprocessableEntity, "Reason required", "Give a reason for "+string(a)+": the owners see it. Go back and fill in the reason.")
		return
	}
	acks := r.PostForm["ack"]
	var out []bulkResult
	done := 0
	for _, n := range names {
		var err error
		if a == store.ActApprove {
			err = s.o.Registry.Approve(r.Context(), n, "staff:"+user, reason, acks)
		} else {
			err = s.o.Registry.Act(r.Context(), n, a, "staff:"+user, reason, false)
		}
		res := bulkResult{Name: n, OK: err == nil, Msg: "done"}
		if err != nil {
			if registration.HTTPStatus(err) == http.StatusInternalServerError && !errors.Is(err, store.ErrNotFound) {
				s.log.Error("bulk action failed", "device", n, "action", a, "err", err)
				res.Msg = "failed: central could not complete it; try again"
			} else {
				res.Msg = "not done: " + err.Error()
			}
		} else {
			done++
		}
		out = append(out, res)
	}
	s.log.Info("bulk action", "user", user, "action", a, "devices", len(names), "done", done)
	s.render(w, r, http.StatusOK, "bulk", page{"Title": "Bulk " + string(a) + ": " + strconv.Itoa(done) + " of " + strconv.Itoa(len(names)) + " done",
		"Staff": user, "Action": a, "Results": out, "Done": done})
}
