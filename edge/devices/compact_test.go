package devices

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestPacked(t *testing.T) {
	p := pack([]Device{
		{Name: "b.example.edu", Senders: []string{"x@example.edu", "y@example.edu"}, Status: StatusActive, Source: SourceCentral, MessagesPerHour: 7},
		{Name: "a.example.edu", Status: StatusSuspended, Reason: "NDRs bounce", Source: SourceCentral, RecipientsPerHour: 9, Reinstated: 41},
		{Name: "b.example.edu", Senders: []string{"z@example.edu"}, Status: "retired", Source: SourceConfig}, // later wins
	})
	if p.len() != 2 {
		t.Fatalf("%d devices, want 2 (duplicate name folded)", p.len())
	}
	a, ok := p.lookup("a.example.edu")
	if !ok || a.Status != StatusSuspended || a.Reason != "NDRs bounce" || a.RecipientsPerHour != 9 || a.Reinstated != 41 || a.Senders != nil || a.Source != SourceCentral {
		t.Errorf("a: %+v %v", a, ok)
	}
	b, ok := p.lookup("b.example.edu")
	if !ok || b.Status != "retired" || !slices.Equal(b.Senders, []string{"z@example.edu"}) || b.Source != SourceConfig || b.MessagesPerHour != 0 {
		t.Errorf("b (the later entry): %+v %v", b, ok)
	}
	for _, n := range []string{"", "a", "c.example.edu", "a.example.edu.", "0"} {
		if _, ok := p.lookup(n); ok {
			t.Errorf("lookup(%q) found a device", n)
		}
	}
	var empty *packed
	if _, ok := empty.lookup("a"); ok || empty.len() != 0 {
		t.Error("nil list finds something")
	}
}

// A large central list: every device is found with its own data, the
// static and suspended overlay wins, and Devices lists each once, sorted.
func TestCentralListLarge(t *testing.T) {
	r, err := New(nil, newMem(), (&clock{t0}).now)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	devs := make([]Device, n)
	for i := range devs {
		devs[i] = Device{Name: fmt.Sprintf("DEV%05d.Example.EDU.", n-i), Senders: []string{fmt.Sprintf("d%d@example.edu", n-i), "shared@example.edu"},
			MessagesPerHour: i}
	}
	r.SetCentral(1, t0, devs, t0.Add(24*3600e9))
	if err := r.Suspend("dev00007.example.edu", "bounces"); err != nil {
		t.Fatal(err)
	}
	for i := range devs {
		name := fmt.Sprintf("dev%05d.example.edu", n-i)
		d, ok := r.Lookup(name)
		if !ok || d.Name != name || d.MessagesPerHour != i || d.Source != SourceCentral ||
			!slices.Equal(d.Senders, []string{fmt.Sprintf("d%d@example.edu", n-i), "shared@example.edu"}) {
			t.Fatalf("lookup %s: %+v %v", name, d, ok)
		}
		if want := name != "dev00007.example.edu"; d.Active() != want {
			t.Fatalf("%s active=%v, want %v", name, d.Active(), want)
		}
	}
	all := r.Devices()
	if len(all) != n || !slices.IsSortedFunc(all, func(a, b Device) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("Devices: %d, sorted %v", len(all), slices.IsSortedFunc(all, func(a, b Device) int { return strings.Compare(a.Name, b.Name) }))
	}
	if d := all[6]; d.Name != "dev00007.example.edu" || d.Active() || d.Reason != "bounces" {
		t.Errorf("suspended device in Devices: %+v", d)
	}
}
