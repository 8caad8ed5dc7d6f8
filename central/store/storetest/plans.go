package storetest

import (
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/internal/sqlstore"
	"github.com/postern/postern/shared/event"
)

// PlanQuery is one list query whose plan must use an index, for each
// dialect's query-plan test.
type PlanQuery struct {
	Name string
	SQL  string
	Args []any
}

// PlanQueries are the page queries of the console's lists: every sort
// order of the device list, the review queue, and each event filter.
func PlanQueries() []PlanQuery {
	var out []PlanQuery
	dev := func(name string, q store.DeviceQuery) {
		s, a := sqlstore.DevicePageSQL(q)
		out = append(out, PlanQuery{"devices: " + name, s, a})
	}
	for _, so := range store.DeviceSorts {
		dev("sort "+string(so), store.DeviceQuery{Sort: so})
		dev("sort "+string(so)+" desc", store.DeviceQuery{Sort: so, Desc: true, Offset: 500})
	}
	dev("status active by name", store.DeviceQuery{Status: []store.Status{store.Active}})
	dev("review queue", store.DeviceQuery{Status: []store.Status{store.Pending}, Sort: store.SortRequested})
	dev("department", store.DeviceQuery{Department: "Physics"})
	dev("dns mismatch", store.DeviceQuery{DNS: store.DNSMismatch})
	dev("expiring", store.DeviceQuery{ExpiringBefore: time.Now(), Sort: store.SortExpires})
	ev := func(name string, q store.EventQuery) {
		s, a := sqlstore.EventPageSQL(q)
		out = append(out, PlanQuery{"events: " + name, s, a})
	}
	ev("all", store.EventQuery{})
	ev("device", store.EventQuery{Device: "scanner.example.edu"})
	ev("client ip", store.EventQuery{ClientIP: "10.1.2.3"})
	ev("sender", store.EventQuery{Sender: "scan@example.edu"})
	ev("recipient", store.EventQuery{Recipient: "x@example.org"})
	ev("kind", store.EventQuery{Kind: event.Refusal})
	ev("edge", store.EventQuery{Edge: "bldg-1"})
	ev("time range", store.EventQuery{Since: time.Now().Add(-time.Hour), Until: time.Now()})
	return out
}
