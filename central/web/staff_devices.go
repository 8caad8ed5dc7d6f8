package web

import (
	"context"
	"encoding/csv"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// The staff device list (/staff, the review queue /staff/queue and its CSV
// export) and the staff device page with one form per action.

func (s *Server) routeStaffDevices(m *http.ServeMux) {
	m.HandleFunc("GET /staff", s.staff(s.console))
	m.HandleFunc("GET /staff/queue", s.staff(s.queue))
	m.HandleFunc("GET /staff/devices.csv", s.staff(s.devicesCSV))
	m.HandleFunc("GET /staff/devices/{name}", s.staff(s.staffDevice))
	m.HandleFunc("GET /staff/devices/{name}/confirm/{action}", s.staff(s.confirmAction))
	m.HandleFunc("POST /staff/devices/{name}/act", s.staff(s.staffAct))
	m.HandleFunc("POST /staff/devices/{name}/approve", s.staff(s.staffApprove))
	m.HandleFunc("POST /staff/devices/{name}/limits", s.staff(s.staffLimits))
	m.HandleFunc("POST /staff/devices/{name}/check", s.staff(s.staffCheck))
	m.HandleFunc("POST /staff/devices/{name}/resend", s.staff(s.staffResend))
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

// deviceListQuery reads the list's filters from the URL; the error says
// which filter is wrong.
func (s *Server) deviceListQuery(q url.Values) (store.DeviceQuery, error) {
	f := store.DeviceQuery{Query: strings.TrimSpace(q.Get("q")), Department: q.Get("department"), Edge: q.Get("edge")}
	if st := q.Get("status"); st != "" {
		if !store.Status(st).Valid() {
			return f, errors.New("unknown status")
		}
		f.Status = []store.Status{store.Status(st)}
	}
	switch v := q.Get("dns"); v {
	case "", store.DNSMatch, store.DNSMismatch:
		f.DNS = v
	default:
		return f, errors.New("unknown DNS result")
	}
	switch v := q.Get("senders"); v {
	case "", store.SendersConfirmed, store.SendersUnconfirmed:
		f.Senders = v
	default:
		return f, errors.New("unknown sender filter")
	}
	if q.Get("expiring") != "" {
		f.ExpiringBefore = s.o.Clock().Add(30 * 24 * time.Hour)
	}
	if v := q.Get("sort"); v != "" {
		if !store.DeviceSort(v).Valid() {
			return f, errors.New("unknown sort order")
		}
		f.Sort = store.DeviceSort(v)
	}
	f.Desc = q.Get("dir") == "desc"
	return f, nil
}

// sortCol is a sortable column header.
type sortCol struct {
	Label string
	Link  string
	// Aria is the column's aria-sort ("ascending", "descending" or "").
	Aria string
}

func sortCols(p pager, f store.DeviceQuery) map[string]sortCol {
	cur := f.Sort
	if cur == "" {
		cur = store.SortName
	}
	out := map[string]sortCol{}
	for _, c := range []struct {
		key   store.DeviceSort
		label string
	}{{store.SortName, "DNS name"}, {store.SortStatus, "Status"}, {store.SortOwner, "Owner"}, {store.SortDepartment, "Department"},
		{store.SortRequested, "Requested"}, {store.SortExpires, "Expires"}} {
		sc := sortCol{Label: c.label}
		q := p.With("sort", string(c.key))
		dir := ""
		if c.key == cur {
			if f.Desc {
				sc.Aria = "descending"
			} else {
				sc.Aria = "ascending"
				dir = "desc"
			}
		}
		u, _ := url.Parse(q)
		v := u.Query()
		v.Del("page")
		if dir != "" {
			v.Set("dir", dir)
		} else {
			v.Del("dir")
		}
		sc.Link = u.Path + "?" + v.Encode()
		out[string(c.key)] = sc
	}
	return out
}

func (s *Server) console(w http.ResponseWriter, r *http.Request, user string) {
	s.deviceList(w, r, user, false)
}

// queue is the review queue: pending requests, oldest first.
func (s *Server) queue(w http.ResponseWriter, r *http.Request, user string) {
	s.deviceList(w, r, user, true)
}

func (s *Server) deviceList(w http.ResponseWriter, r *http.Request, user string, queue bool) {
	q := r.URL.Query()
	path := "/staff"
	if queue {
		path = "/staff/queue"
		q.Del("status")
		if q.Get("sort") == "" {
			q.Set("sort", string(store.SortRequested))
		}
	}
	f, err := s.deviceListQuery(q)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Bad filter", "The device list cannot show this: "+err.Error()+".")
		return
	}
	if queue {
		f.Status = []store.Status{store.Pending}
	}
	pg := parsePager(q, path)
	f.Limit, f.Offset = pg.Size, pg.Offset()
	res, err := s.o.Store.ListDevicePage(r.Context(), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	pg.Total = res.Total
	counts, err := s.o.Store.CountDevices(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	deps, err := s.o.Store.Departments(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	edges, err := s.o.Store.ListEdges(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	title := "Devices"
	if queue {
		title = "Review queue"
	}
	csvQ := url.Values{}
	for k, v := range pg.Query {
		csvQ[k] = v
	}
	if queue {
		csvQ.Set("status", string(store.Pending))
	}
	s.render(w, r, http.StatusOK, "console", page{"Title": title, "Staff": user, "Queue": queue, "Devices": res.Devices, "Counts": counts,
		"Statuses": store.Statuses, "F": q, "Pager": pg, "Cols": sortCols(pg, f), "Departments": deps, "Edges": edges,
		"CSV": "/staff/devices.csv?" + csvQ.Encode(), "BulkActions": registration.Actions})
}

// csvCell keeps a spreadsheet from reading a cell as a formula.
func csvCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// devicesCSV exports every device matching the list's filters.
func (s *Server) devicesCSV(w http.ResponseWriter, r *http.Request, user string) {
	f, err := s.deviceListQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Bad filter", "The device list cannot show this: "+err.Error()+".")
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="devices.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"name", "status", "status_reason", "owner", "department", "contact", "ips", "senders", "unconfirmed_senders", "dns_ok", "dns", "messages_per_hour", "recipients_per_hour", "expires", "requested"})
	f.Limit = store.MaxPage
	for f.Offset = 0; ; f.Offset += store.MaxPage {
		res, err := s.o.Store.ListDevicePage(r.Context(), f)
		if err != nil {
			s.log.Error("CSV export failed", "user", user, "err", err)
			return
		}
		for _, d := range res.Devices {
			var snd, unc []string
			for _, sn := range d.Senders {
				snd = append(snd, sn.Address)
				if !sn.Confirmed() {
					unc = append(unc, sn.Address)
				}
			}
			exp := ""
			if !d.ExpiresAt.IsZero() {
				exp = d.ExpiresAt.UTC().Format(time.RFC3339)
			}
			row := []string{d.Name, string(d.Status), d.StatusReason, d.Owner, d.Department, d.ContactEmail, strings.Join(d.IPs, " "),
				strings.Join(snd, " "), strings.Join(unc, " "), strconv.FormatBool(d.FCrDNSOK), d.FCrDNS,
				strconv.Itoa(d.MessagesPerHour), strconv.Itoa(d.RecipientsPerHour), exp, d.CreatedAt.UTC().Format(time.RFC3339)}
			for i := range row {
				row[i] = csvCell(row[i])
			}
			_ = cw.Write(row)
		}
		if len(res.Devices) < store.MaxPage {
			break
		}
	}
	cw.Flush()
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
	s.staffDeviceWith(w, r, user, http.StatusOK, nil, "", nil)
}

// allowed reports whether action a applies to a device in status st.
func allowed(a store.Action, st store.Status) bool {
	to, noop, err := store.Next(a, "", st)
	return err == nil && !noop && (to != st || a == store.ActRenew)
}

// formErrs are a form's errors by field, with the values typed.
type formErrs struct {
	Errs   map[string]string
	Values map[string]string
}

func (s *Server) staffDeviceWith(w http.ResponseWriter, r *http.Request, user string, status int, check *fcrdns.Result, errMsg string, fe *formErrs) {
	d, ok := s.staffDeviceLoad(w, r)
	if !ok {
		return
	}
	p, err := s.devicePage(r.Context(), d, true)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	arch, err := s.o.Store.ArchivedDevices(r.Context(), d.Name)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	var acts []store.Action
	for _, a := range registration.Actions {
		if allowed(a, d.Status) {
			acts = append(acts, a)
		}
	}
	p["Staff"] = user
	p["Allowed"] = acts
	p["Warnings"] = registration.Warnings(d)
	p["Archive"] = arch
	if p["Stats"], err = s.deviceStats(r.Context(), d.Name); err != nil {
		s.internal(w, r, err)
		return
	}
	if check != nil {
		p["Check"] = check
	}
	if errMsg != "" {
		p["Error"] = errMsg
	}
	if fe == nil {
		fe = &formErrs{}
	}
	p["Errs"], p["Values"] = fe.Errs, fe.Values
	s.render(w, r, status, "staff_device", p)
}

// confirmedActions need a confirmation page with a reason.
func confirmedAction(a store.Action) bool {
	return a == store.ActDeny || a == store.ActSuspend || a == store.ActRevoke
}

var actionText = map[store.Action]string{
	store.ActDeny:    "The request is refused. The owner sees the reason and may ask again.",
	store.ActSuspend: "Edges stop relaying for the device at once (4xx to the device) until staff reinstate it. The owner sees the reason: say what to fix.",
	store.ActRevoke:  "The registration ends for good: edges refuse the device. Its history stays; the name can be requested again as a new registration.",
}

// confirmAction shows the confirmation step of deny, suspend or revoke.
func (s *Server) confirmAction(w http.ResponseWriter, r *http.Request, user string) {
	s.confirmActionWith(w, r, user, http.StatusOK, store.Action(r.PathValue("action")), "", "")
}

func (s *Server) confirmActionWith(w http.ResponseWriter, r *http.Request, user string, status int, a store.Action, reason, errMsg string) {
	if !confirmedAction(a) {
		s.fail(w, r, http.StatusNotFound, "Not found", "No such action.")
		return
	}
	d, ok := s.staffDeviceLoad(w, r)
	if !ok {
		return
	}
	p := page{"Title": strings.ToUpper(string(a[:1])) + string(a[1:]) + " " + d.Name, "Staff": user, "D": d, "Action": a,
		"Effect": actionText[a], "Reason": reason, "Allowed": allowed(a, d.Status), "Errs": map[string]string{}}
	if errMsg != "" {
		p["Errs"] = map[string]string{"reason": errMsg}
	}
	s.render(w, r, status, "confirm_action", p)
}

func (s *Server) staffAct(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	a := registration.Action(r.PostFormValue("action"))
	reason := r.PostFormValue("reason")
	if a == registration.Approve {
		s.staffApprove(w, r, user)
		return
	}
	if confirmedAction(a) && r.PostFormValue("confirm") == "" {
		// The confirmation step, with what was typed.
		s.confirmActionWith(w, r, user, http.StatusOK, a, reason, "")
		return
	}
	err := s.o.Registry.Act(r.Context(), name, a, "staff:"+user, reason, false)
	switch code := registration.HTTPStatus(err); {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done="+url.QueryEscape(string(a)), http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case code == http.StatusInternalServerError:
		s.internal(w, r, err)
	case confirmedAction(a) && (errors.Is(err, registration.ErrReasonRequired) || errors.Is(err, registration.ErrReasonTooLong)):
		s.confirmActionWith(w, r, user, code, a, reason, reasonMsg(err))
	default:
		s.staffDeviceWith(w, r, user, code, nil, "Not done: "+err.Error(), &formErrs{Values: map[string]string{string(a) + "-reason": reason}})
	}
}

func reasonMsg(err error) string {
	if errors.Is(err, registration.ErrReasonTooLong) {
		return "The reason is longer than 1000 characters."
	}
	return "Give a reason: the owner sees it."
}

// staffApprove approves once every warning is ticked off.
func (s *Server) staffApprove(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	reason := r.PostFormValue("reason")
	acks := r.PostForm["ack"]
	err := s.o.Registry.Approve(r.Context(), name, "staff:"+user, reason, acks)
	switch code := registration.HTTPStatus(err); {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done=approve", http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case code == http.StatusInternalServerError:
		s.internal(w, r, err)
	case errors.Is(err, registration.ErrUnacknowledged):
		s.staffDeviceWith(w, r, user, code, nil, "Not approved: tick off every warning below to approve anyway.",
			&formErrs{Errs: map[string]string{"ack": "Tick off each warning you have checked."}, Values: map[string]string{"approve-reason": reason}})
	default:
		s.staffDeviceWith(w, r, user, code, nil, "Not done: "+err.Error(), &formErrs{Values: map[string]string{"approve-reason": reason}})
	}
}

// parseLimit reads a limit field: empty is the edge's default (0); 0
// itself is refused, as it reads like "no mail".
func parseLimit(v string) (int, string) {
	v = strings.TrimSpace(v)
	if v == "" || strings.EqualFold(v, "default") {
		return 0, ""
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, "Give a whole number, or leave the field empty for the edge's default."
	case n == 0:
		return 0, "0 would mean the edge's default: leave the field empty for the default, or give at least 1."
	case n < 0 || n > 1_000_000:
		return 0, "Give a number between 1 and 1000000, or leave the field empty for the edge's default."
	}
	return n, ""
}

func (s *Server) staffLimits(w http.ResponseWriter, r *http.Request, user string) {
	name := r.PathValue("name")
	mphRaw, rphRaw := r.PostFormValue("mph"), r.PostFormValue("rph")
	mph, e1 := parseLimit(mphRaw)
	rph, e2 := parseLimit(rphRaw)
	if e1 != "" || e2 != "" {
		fe := &formErrs{Errs: map[string]string{}, Values: map[string]string{"mph": mphRaw, "rph": rphRaw}}
		if e1 != "" {
			fe.Errs["mph"] = e1
		}
		if e2 != "" {
			fe.Errs["rph"] = e2
		}
		s.staffDeviceWith(w, r, user, http.StatusUnprocessableEntity, nil, "Limits not changed: see the fields below.", fe)
		return
	}
	err := s.o.Registry.SetLimits(r.Context(), name, "staff:"+user, mph, rph)
	switch {
	case err == nil:
		http.Redirect(w, r, "/staff/devices/"+url.PathEscape(name)+"?done=limits", http.StatusSeeOther)
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "Not found", "No device with this name.")
	case errors.Is(err, registration.ErrLimitRange):
		s.staffDeviceWith(w, r, user, http.StatusUnprocessableEntity, nil, err.Error(), nil)
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
	s.staffDeviceWith(w, r, user, http.StatusOK, &res, "", nil)
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
		s.staffDeviceWith(w, r, user, http.StatusBadGateway, nil, "Some links could not be sent: "+err.Error(), nil)
	}
}
