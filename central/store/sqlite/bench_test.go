package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/event"
)

// BenchmarkListPages times one page of each console list on 100,000
// devices and 1,000,000 events (rows written with plain INSERTs in one
// transaction; the store fills the sort keys when it is reopened).
func BenchmarkListPages(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), sqlite.FileName)
	s, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		b.Fatal(err)
	}
	const devices, events = 100_000, 1_000_000
	now := time.Now().UnixMilli()
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	statuses := []string{"active", "active", "active", "pending", "suspended", "expired", "denied", "revoked"}
	for i := range devices {
		name := fmt.Sprintf("dev%d.dept%d.example.edu", i, i%50)
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (name, ips, owner, department, contact_email, purpose, status, fcrdns_ok, expires_at, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 'scan', $6, $7, $8, $9, $9)`, name, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), fmt.Sprintf("Owner %d", i%977),
			fmt.Sprintf("Dept %d", i%50), "o@example.edu", statuses[i%len(statuses)], i%5 != 0, now+int64(i%400)*86_400_000, now-int64(devices-i)*1000); err != nil {
			b.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO senders (device, address, confirmed_at) VALUES ($1, $2, $3)`, name, fmt.Sprintf("scan%d@example.edu", i), now*int64(i%3&1)); err != nil {
			b.Fatal(err)
		}
	}
	kinds := []string{"refusal", "ndr", "delivery", "rate-limit"}
	for i := range events {
		dev := fmt.Sprintf("dev%d.dept%d.example.edu", i%devices, i%devices%50)
		if i%10 == 0 {
			dev = ""
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (id, edge, at, kind, device, client_ip, sender, recipient, reason, received)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'r', $3)`, fmt.Sprintf("e%d", i), fmt.Sprintf("bldg-%d", i%20), now-int64(events-i)*100, kinds[i%len(kinds)],
			dev, fmt.Sprintf("10.%d.%d.%d", i%devices>>16&255, i%devices>>8&255, i%devices&255), fmt.Sprintf("scan%d@example.edu", i%devices), fmt.Sprintf("user%d@example.org", i%5000)); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	if s, err = sqlite.Open(ctx, path, nil); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.DB().ExecContext(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	devPage := func(name string, q store.DeviceQuery) {
		b.Run("devices/"+name, func(b *testing.B) {
			for b.Loop() {
				p, err := s.ListDevicePage(ctx, q)
				if err != nil || len(p.Devices) == 0 {
					b.Fatalf("%v (%d rows)", err, len(p.Devices))
				}
			}
		})
	}
	devPage("first", store.DeviceQuery{})
	devPage("page-1000", store.DeviceQuery{Offset: 49_950})
	devPage("queue", store.DeviceQuery{Status: []store.Status{store.Pending}, Sort: store.SortRequested})
	devPage("department-desc", store.DeviceQuery{Department: "Dept 7", Desc: true})
	devPage("dns-mismatch", store.DeviceQuery{DNS: store.DNSMismatch})
	devPage("search", store.DeviceQuery{Query: "dev4242"})
	evPage := func(name string, q store.EventQuery) {
		b.Run("events/"+name, func(b *testing.B) {
			for b.Loop() {
				p, err := s.ListEventPage(ctx, q)
				if err != nil || len(p.Events) == 0 {
					b.Fatalf("%v (%d rows)", err, len(p.Events))
				}
			}
		})
	}
	evPage("first", store.EventQuery{})
	evPage("page-100", store.EventQuery{Offset: 4_950})
	evPage("client-ip", store.EventQuery{ClientIP: "10.0.16.1"})
	evPage("recipient", store.EventQuery{Recipient: "user42@example.org"})
	evPage("kind-edge", store.EventQuery{Kind: event.Refusal, Edge: "bldg-4"})
	evPage("device", store.EventQuery{Device: "dev4242.dept42.example.edu"})
	b.Run("audit/first", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ListAuditPage(ctx, store.AuditQuery{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
