package centralclient

import (
	"testing"
	"time"

	"github.com/postern/postern/shared/event"
)

// TestDeliverySummary: deliveries are reported once per device and
// interval, then the counts start again.
func TestDeliverySummary(t *testing.T) {
	var d DeliverySummary
	d.Add("a.example.edu", 2)
	d.Add("a.example.edu", 1)
	d.Add("b.example.edu", 5)
	d.Add("", 3)
	d.Add("c.example.edu", 0)
	var got []event.Event
	now := time.Now()
	d.Flush(func(e event.Event) { got = append(got, e) }, now.Add(-time.Minute), now)
	by := map[string]event.Event{}
	for _, e := range got {
		by[e.Device] = e
	}
	if len(got) != 2 || by["a.example.edu"].Count != 3 || by["a.example.edu"].Detail["messages"] != "2" || by["b.example.edu"].Count != 5 ||
		by["a.example.edu"].Kind != event.Delivery {
		t.Fatalf("summary: %+v", got)
	}
	got = nil
	d.Flush(func(e event.Event) { got = append(got, e) }, now, now)
	if len(got) != 0 {
		t.Fatalf("second flush: %+v", got)
	}
}
