package allowlist

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func deltaFixture(t *testing.T) (base, next Snapshot) {
	t.Helper()
	issued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base = Snapshot{Version: 7, Issued: issued, ValidUntil: issued.Add(24 * time.Hour)}
	for i := range 50 {
		base.Devices = append(base.Devices, Device{Name: fmt.Sprintf("dev%03d.example.edu", i), Status: Active,
			Senders: []string{fmt.Sprintf("d%d@example.edu", i)}})
	}
	if err := base.Normalize(); err != nil {
		t.Fatal(err)
	}
	next = Snapshot{Version: 9, Issued: issued.Add(time.Minute), ValidUntil: issued.Add(25 * time.Hour),
		Devices: cloneDevices(base.Devices)}
	next.Devices[3].Status, next.Devices[3].Reason = Suspended, "abuse"                   // changed
	next.Devices = append(next.Devices[:10], next.Devices[11:]...)                        // dev010 removed
	next.Devices = append(next.Devices, Device{Name: "New.Example.EDU.", Status: Active}) // added
	return base, next
}

func TestDeltaRoundTripAndApply(t *testing.T) {
	pub, priv := testKey(t, 1)
	base, next := deltaFixture(t)
	d, err := NewDelta(base.Version, base.Devices, next)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Upsert) != 2 || len(d.Remove) != 1 || d.Remove[0] != "dev010.example.edu" {
		t.Fatalf("delta upsert %v remove %v, want dev003 and new changed, dev010 removed", d.Upsert, d.Remove)
	}
	wire, err := EncodeDelta(d, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDelta(wire, pub)
	if err != nil {
		t.Fatal(err)
	}
	out, err := got.Apply(base.Devices)
	if err != nil {
		t.Fatal(err)
	}
	want := next
	if err := want.Normalize(); err != nil {
		t.Fatal(err)
	}
	if ContentHash(out) != ContentHash(want.Devices) || len(out) != len(want.Devices) {
		t.Fatal("applied delta differs from the snapshot it stands for")
	}
	if h := got.Header(); h.Version != 9 || !h.Issued.Equal(next.Issued) || !h.ValidUntil.Equal(next.ValidUntil) {
		t.Fatalf("header %+v", h)
	}
	// The full snapshot of the same content carries the same hash.
	full, err := Encode(next, priv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(full, pub)
	if err != nil {
		t.Fatal(err)
	}
	if HashString(ContentHash(s.Devices)) != got.Hash {
		t.Fatal("snapshot and delta disagree on the content hash")
	}
}

func TestDeltaApplyWrongBase(t *testing.T) {
	base, next := deltaFixture(t)
	d, err := NewDelta(base.Version, base.Devices, next)
	if err != nil {
		t.Fatal(err)
	}
	// Another list that the delta does not stand on: the hash catches it.
	other := cloneDevices(base.Devices)
	other[20].MessagesPerHour = 5
	if _, err := d.Apply(other); !errors.Is(err, ErrDeltaHash) {
		t.Fatalf("apply on a diverged base: %v, want ErrDeltaHash", err)
	}
	if _, err := d.Apply(base.Devices[:40]); !errors.Is(err, ErrDeltaHash) {
		t.Fatalf("apply on a shorter base: %v, want ErrDeltaHash", err)
	}
}

func TestDeltaSignature(t *testing.T) {
	pub, priv := testKey(t, 1)
	otherPub, otherPriv := testKey(t, 9)
	base, next := deltaFixture(t)
	d, _ := NewDelta(base.Version, base.Devices, next)
	wire, err := EncodeDelta(d, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeDelta(wire, otherPub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("delta checked with another key: %v", err)
	}
	forged, _ := EncodeDelta(d, otherPriv)
	if _, err := DecodeDelta(forged, pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("delta signed by another key: %v", err)
	}
	tampered := bytes.Clone(wire)
	tampered[len(tampered)-3] ^= 1
	if _, err := DecodeDelta(tampered, pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered delta: %v", err)
	}
	// A delta is never a snapshot and a snapshot never a delta, even with
	// the magic swapped: the signed contexts differ.
	if _, err := Decode(wire, pub); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("delta decoded as a snapshot: %v", err)
	}
	swapped := bytes.Clone(wire)
	copy(swapped, magic)
	if _, err := Decode(swapped, pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("delta with a snapshot's magic: %v", err)
	}
	snap, _ := Encode(next, priv)
	if _, err := DecodeDelta(snap, pub); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("snapshot decoded as a delta: %v", err)
	}
	copy(snap, deltaMagic)
	if _, err := DecodeDelta(snap, pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("snapshot with a delta's magic: %v", err)
	}
}

func TestDeltaCompressedWhenLarge(t *testing.T) {
	pub, priv := testKey(t, 1)
	base, next := deltaFixture(t)
	for i := range next.Devices {
		next.Devices[i].MessagesPerHour = 10
	}
	d, _ := NewDelta(base.Version, base.Devices, next)
	wire, err := EncodeDelta(d, priv)
	if err != nil {
		t.Fatal(err)
	}
	if wire[4] != compZstd {
		t.Fatalf("a delta of %d changes is not compressed", len(d.Upsert))
	}
	got, err := DecodeDelta(wire, pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Apply(base.Devices); err != nil {
		t.Fatal(err)
	}
}

func TestDeltaNormalizeRefuses(t *testing.T) {
	issued := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := Delta{Base: 3, Version: 4, Issued: issued, ValidUntil: issued.Add(time.Hour), Hash: HashString([32]byte{})}
	cases := map[string]func(d *Delta){
		"backwards":           func(d *Delta) { d.Version = 2 },
		"no base":             func(d *Delta) { d.Base, d.Version = 0, 0 },
		"no hash":             func(d *Delta) { d.Hash = "" },
		"republish changes":   func(d *Delta) { d.Version = 3; d.Upsert = []Device{{Name: "a", Status: Active}} },
		"upsert and remove":   func(d *Delta) { d.Upsert = []Device{{Name: "a", Status: Active}}; d.Remove = []string{"A."} },
		"removed twice":       func(d *Delta) { d.Remove = []string{"a", "a"} },
		"epoch past version":  func(d *Delta) { d.Upsert = []Device{{Name: "a", Status: Active, Reinstated: 5}} },
		"valid before issued": func(d *Delta) { d.ValidUntil = issued },
	}
	for name, f := range cases {
		d := ok
		f(&d)
		if err := d.Normalize(); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
	if err := ok.Normalize(); err != nil {
		t.Fatal(err)
	}
}

func TestAcceptDelta(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cur := &Snapshot{Version: 5, Issued: t0, ValidUntil: t0.Add(time.Hour)}
	mk := func(base, ver int64, issued time.Time) *Delta {
		return &Delta{Base: base, Version: ver, Issued: issued, ValidUntil: issued.Add(time.Hour)}
	}
	cases := []struct {
		name string
		cur  *Snapshot
		d    *Delta
		want error
	}{
		{"next", cur, mk(5, 6, t0.Add(time.Second)), nil},
		{"coalesced", cur, mk(5, 9, t0.Add(time.Second)), nil},
		{"republish", cur, mk(5, 5, t0.Add(time.Second)), nil},
		{"republish redelivered", cur, mk(5, 5, t0), ErrSame},
		{"delta that produced cur", cur, mk(4, 5, t0), ErrSame},
		{"late", cur, mk(3, 4, t0.Add(time.Hour)), ErrOlder},
		{"gap", cur, mk(6, 7, t0.Add(time.Second)), ErrDeltaBase},
		{"no snapshot", nil, mk(5, 6, t0), ErrDeltaBase},
		{"replayed onto a republished base", cur, mk(5, 6, t0.Add(-time.Minute)), ErrOlder},
	}
	for _, c := range cases {
		err := AcceptDelta(c.cur, c.d)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// BenchmarkDeltaEncode measures central's side of one change (one device
// suspended) at 1,000 / 10,000 / 100,000 devices: diff, content hash,
// sign; it reports the delta's wire size, the MQTT PUBLISH packet an edge
// receives for it, and the full snapshot's wire size for comparison.
func BenchmarkDeltaEncode(b *testing.B) {
	_, priv := testKey(b, 1)
	benchSizes(b, func(b *testing.B, s Snapshot) {
		if err := s.Normalize(); err != nil {
			b.Fatal(err)
		}
		next := s
		next.Version++
		next.Issued = next.Issued.Add(time.Minute)
		next.Devices = cloneDevices(s.Devices)
		next.Devices[len(next.Devices)/2].Status = Suspended
		next.Devices[len(next.Devices)/2].Reason = "suspended by staff: abuse"
		var wire []byte
		for b.Loop() {
			d, err := NewDelta(s.Version, s.Devices, next)
			if err != nil {
				b.Fatal(err)
			}
			if wire, err = EncodeDelta(d, priv); err != nil {
				b.Fatal(err)
			}
		}
		full, _ := Encode(next, priv)
		b.ReportMetric(float64(len(wire)), "delta-bytes")
		b.ReportMetric(float64(mqttPublishSize("postern/v1/allowlist/delta", len(wire))), "publish-bytes")
		b.ReportMetric(float64(len(full)), "full-bytes")
	})
}

// mqttPublishSize is the size of an MQTT 3.1.1 QoS 1 PUBLISH packet:
// fixed header (type byte and remaining length), topic, packet id,
// payload.
func mqttPublishSize(topic string, payload int) int {
	rest := 2 + len(topic) + 2 + payload
	n := 1
	for r := rest; ; r >>= 7 {
		n++
		if r < 128 {
			break
		}
	}
	return n + rest
}
