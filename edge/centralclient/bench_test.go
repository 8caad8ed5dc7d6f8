package centralclient

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
)

// BenchmarkSnapshotApply measures what an edge does with a received
// snapshot: verify, decode, persist in Badger (fsync) and swap the
// registry, at 1,000 / 10,000 / 100,000 devices.
func BenchmarkSnapshotApply(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		devs := make([]allowlist.Device, n)
		for i := range devs {
			devs[i] = allowlist.Device{Name: fmt.Sprintf("dev%06d.dept%d.example.edu", i, i%40), Status: allowlist.Active,
				Senders: []string{fmt.Sprintf("dev%d@example.edu", i)}}
		}
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			sp, err := spool.Open(spool.Options{Dir: filepath.Join(b.TempDir(), "spool"), GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			reg, _ := devices.New(nil, nil, nil)
			ob, _ := NewOutbox(sp.KV("outbox/"), "e1", 0, nil, nil)
			c, err := New(Options{EdgeID: "e1", PublicKey: centralPub, Allow: sp.KV("allow/"), Outbox: ob, Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			v := int64(0)
			for b.Loop() {
				b.StopTimer()
				v++
				w := snapshot(b, centralPriv, v, t0, devs...)
				b.StartTimer()
				if err := c.HandleSnapshot(w, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(snapshot(b, centralPriv, 1, t0, devs...))), "wire-bytes")
			if _, ok := reg.Lookup(devs[n-1].Name); !ok {
				b.Fatal("last device not applied")
			}
		})
	}
}

// BenchmarkDeltaApply measures what an edge does with a received delta of
// one change (a device suspended or reinstated) on a list of 1,000 /
// 10,000 / 100,000 devices: verify, merge into central's list, content
// hash, persist the chain in Badger (fsync) and swap the registry. A full
// snapshot every 32 deltas keeps the persisted chain at its usual length.
func BenchmarkDeltaApply(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		devs := make([]allowlist.Device, n)
		for i := range devs {
			devs[i] = allowlist.Device{Name: fmt.Sprintf("dev%06d.dept%d.example.edu", i, i%40), Status: allowlist.Active,
				Senders: []string{fmt.Sprintf("dev%d@example.edu", i)}}
		}
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			sp, err := spool.Open(spool.Options{Dir: filepath.Join(b.TempDir(), "spool"), GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			reg, _ := devices.New(nil, nil, nil)
			ob, _ := NewOutbox(sp.KV("outbox/"), "e1", 0, nil, nil)
			c, err := New(Options{EdgeID: "e1", PublicKey: centralPub, Allow: sp.KV("allow/"), Outbox: ob, Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			v := int64(1)
			cur := allowlist.Snapshot{Version: v, Issued: t0, ValidUntil: t0.Add(24 * time.Hour), Devices: devs}
			if err := cur.Normalize(); err != nil {
				b.Fatal(err)
			}
			if err := c.HandleSnapshot(snapshot(b, centralPriv, v, t0, cur.Devices...), "bench"); err != nil {
				b.Fatal(err)
			}
			size := 0
			for b.Loop() {
				b.StopTimer()
				next := cur
				next.Version++
				next.Issued = t0.Add(time.Duration(next.Version) * time.Millisecond)
				next.Devices = append([]allowlist.Device(nil), cur.Devices...)
				k := int(next.Version) % n
				if next.Devices[k].Status == allowlist.Active {
					next.Devices[k].Status, next.Devices[k].Reason = allowlist.Suspended, "abuse"
				} else {
					next.Devices[k].Status, next.Devices[k].Reason = allowlist.Active, ""
				}
				d, err := allowlist.NewDelta(cur.Version, cur.Devices, next)
				if err != nil {
					b.Fatal(err)
				}
				w, err := allowlist.EncodeDelta(d, centralPriv)
				if err != nil {
					b.Fatal(err)
				}
				size = len(w)
				if next.Version%32 == 0 {
					if err := c.HandleSnapshot(snapshot(b, centralPriv, cur.Version, next.Issued, cur.Devices...), "bench"); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if err := c.HandleDelta(w, "bench"); err != nil {
					b.Fatal(err)
				}
				cur = next
			}
			b.ReportMetric(float64(size), "wire-bytes")
			if c.Current().Version != cur.Version {
				b.Fatal("last delta not applied")
			}
		})
	}
}
