package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
)

// TestSuspensionRequests: an open request shows a banner on staff pages
// (not on public ones), the list page confirms (suspending the device) or
// dismisses with CSRF-checked POSTs, and a decided request cannot be
// decided again.
func TestSuspensionRequests(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, n := range []string{"scanner.dept.example.edu", "printer.dept.example.edu"} {
		if err := e.st.CreateDevice(ctx, store.Device{Name: n, Owner: "Ada", ContactEmail: "ada@dept.example.edu",
			Senders: []store.Sender{{Address: "scan@dept.example.edu"}}}, "owner"); err != nil {
			t.Fatal(err)
		}
		if err := e.st.ApproveDevice(ctx, n, "staff:x", "", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.CreateEdge(ctx, store.Edge{ID: "bldg-12"}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, n := range []string{"scanner.dept.example.edu", "printer.dept.example.edu"} {
		res, err := e.st.SuspendByEdge(ctx, store.EdgeSuspension{Edge: "bldg-12", Device: n, Reason: "suspended by edge bldg-12: NDR undeliverable", Cap: 3})
		if err != nil || res.Outcome != store.EdgeRequested {
			t.Fatalf("SuspendByEdge: %+v %v", res, err)
		}
		ids = append(ids, res.Request.ID)
	}
	staff := e.staff("alice")
	contains(t, staff.get("/staff"), http.StatusOK, `id="requests-banner"`, "2 suspension requests from edges await a decision")
	pub := e.browser()
	if r := pub.get("/register"); r.code != http.StatusOK || strings.Contains(r.body, "requests-banner") {
		t.Fatalf("banner on a public page: %d", r.code)
	}
	if r := pub.get("/staff/requests"); r.code != http.StatusSeeOther {
		t.Fatalf("request list without login: %d", r.code)
	}
	contains(t, staff.get("/staff/requests"), http.StatusOK, "scanner.dept.example.edu", "bldg-12", store.WhyNoTraffic,
		fmt.Sprintf(`action="/staff/requests/%d/confirm"`, ids[0]))

	// Without the CSRF token nothing happens.
	r := staff.post(fmt.Sprintf("/staff/requests/%d/confirm", ids[0]), url.Values{"csrf": {"forged-token-0123456789abcdef0123456789"}})
	must(t, r.code == http.StatusForbidden, "confirm without CSRF: %d", r.code)

	r = staff.post(fmt.Sprintf("/staff/requests/%d/confirm", ids[0]), url.Values{"reason": {"bounces checked"}})
	must(t, r.code == http.StatusSeeOther, "confirm: %d %s", r.code, r.body)
	d, _ := e.st.Device(ctx, "scanner.dept.example.edu")
	must(t, d.Status == store.Suspended, "confirmed device is %s", d.Status)
	r = staff.post(fmt.Sprintf("/staff/requests/%d/dismiss", ids[1]), nil)
	must(t, r.code == http.StatusSeeOther, "dismiss: %d", r.code)
	d, _ = e.st.Device(ctx, "printer.dept.example.edu")
	must(t, d.Status == store.Active, "dismissed device is %s", d.Status)
	contains(t, staff.post(fmt.Sprintf("/staff/requests/%d/confirm", ids[1]), nil), http.StatusConflict, "Not done")
	contains(t, staff.post("/staff/requests/999/confirm", nil), http.StatusNotFound)
	contains(t, staff.post(fmt.Sprintf("/staff/requests/%d/frob", ids[1]), nil), http.StatusNotFound)
	if r := staff.get("/staff"); strings.Contains(r.body, "requests-banner") {
		t.Fatal("banner still shown with no open request")
	}
	audit, err := e.st.ListAudit(ctx, store.AuditFilter{Edge: "bldg-12"})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, a := range audit {
		actions[a.Action]++
	}
	must(t, actions["suspend-request"] == 2 && actions["confirm-suspend-request"] == 1 && actions["dismiss-suspend-request"] == 1 && actions["suspend"] == 1,
		"audit for the edge: %v", actions)
}

// TestRevokeEdgeAndOverLimit: the edges page shows an edge's refused
// events; revoking needs a reason and a CSRF token, removes the edge from
// the page and keeps it in the audit log; central's client id is refused
// as an edge id.
func TestRevokeEdgeAndOverLimit(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.reg.ReservedEdgeIDs = []string{"postern-central"}
	staff := e.staff("alice")
	r := staff.post("/staff/edges", url.Values{"id": {"hall-7"}})
	must(t, r.code == http.StatusSeeOther, "create edge: %d", r.code)
	contains(t, staff.get(r.loc), http.StatusOK, "Enrolment token for <strong>hall-7")
	contains(t, staff.post("/staff/edges", url.Values{"id": {"postern-central"}}), http.StatusUnprocessableEntity, "central&#39;s own MQTT client id")
	if err := e.st.NoteEdgeOverLimit(ctx, "hall-7", 42, "edge over edges.max_events_per_minute"); err != nil {
		t.Fatal(err)
	}
	contains(t, staff.get("/staff/edges"), http.StatusOK, "42 events refused", "edge over edges.max_events_per_minute", `action="/staff/edges/hall-7/revoke"`)
	r = staff.post("/staff/edges/hall-7/revoke", url.Values{"csrf": {"forged-token-0123456789abcdef0123456789"}, "reason": {"x"}})
	must(t, r.code == http.StatusForbidden, "revoke without CSRF: %d", r.code)
	contains(t, staff.post("/staff/edges/hall-7/revoke", nil), http.StatusUnprocessableEntity, "a reason is required")
	r = staff.post("/staff/edges/hall-7/revoke", url.Values{"reason": {"stolen"}})
	must(t, r.code == http.StatusSeeOther, "revoke: %d %s", r.code, r.body)
	if r := staff.get("/staff/edges"); strings.Contains(r.body, "hall-7") {
		t.Fatal("revoked edge still on the edges page")
	}
	contains(t, staff.get("/staff/audit?edge=hall-7"), http.StatusOK, "revoke-edge", "stolen")
	contains(t, staff.post("/staff/edges/hall-7/revoke", url.Values{"reason": {"again"}}), http.StatusNotFound)
}
