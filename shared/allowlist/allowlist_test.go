package allowlist

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testKey(t testing.TB, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func sample() Snapshot {
	return Snapshot{
		Version:    7,
		Issued:     t0,
		ValidUntil: t0.Add(7 * 24 * time.Hour),
		Devices: []Device{
			{Name: "Scanner2.Example.EDU.", Status: Active, Senders: []string{"scan@example.edu", "b@example.edu", "scan@example.edu"}},
			{Name: "copier1.example.edu", Status: Suspended, Reason: "NDR undeliverable", MessagesPerHour: 10},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	pub, priv := testKey(t, 1)
	wire, err := Encode(sample(), priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(wire, pub)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 7 || !got.Issued.Equal(t0) || len(got.Devices) != 2 {
		t.Fatalf("decoded %+v", got)
	}
	d := got.Devices[1]
	if d.Name != "scanner2.example.edu" || d.Status != Active {
		t.Errorf("device not normalised: %+v", d)
	}
	if want := []string{"b@example.edu", "scan@example.edu"}; fmt.Sprint(d.Senders) != fmt.Sprint(want) {
		t.Errorf("senders = %v, want %v", d.Senders, want)
	}
	if got.Devices[0].Reason != "NDR undeliverable" || got.Devices[0].MessagesPerHour != 10 {
		t.Errorf("suspended device lost fields: %+v", got.Devices[0])
	}
}

func TestCanonicalIsDeterministic(t *testing.T) {
	_, priv := testKey(t, 1)
	a := sample()
	b := sample()
	b.Devices[0], b.Devices[1] = b.Devices[1], b.Devices[0]
	b.Devices[1].Senders = []string{"scan@example.edu", "b@example.edu"}
	b.Issued = t0.In(time.FixedZone("x", 3600)).Add(300 * time.Microsecond) // same instant at ms precision
	wa, err := Encode(a, priv)
	if err != nil {
		t.Fatal(err)
	}
	wb, err := Encode(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wa, wb) {
		t.Fatal("same content encoded to different bytes")
	}
	// The caller's slices are not reordered.
	if b.Devices[0].Name != "copier1.example.edu" || b.Devices[1].Senders[0] != "scan@example.edu" {
		t.Fatal("Encode modified its input")
	}
}

func TestDecodeRejects(t *testing.T) {
	pub, priv := testKey(t, 1)
	otherPub, otherPriv := testKey(t, 2)
	good, err := Encode(sample(), priv)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := Encode(sample(), otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(sample())
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	cases := []struct {
		name string
		wire []byte
		pub  ed25519.PublicKey
		want error
	}{
		{"plain json", plain, pub, ErrUnsigned},
		{"empty", nil, pub, ErrUnsigned},
		{"truncated header", good[:40], pub, ErrUnsigned},
		{"other key", forged, pub, ErrBadSignature},
		{"right bytes wrong key", good, otherPub, ErrBadSignature},
		{"no key", good, nil, ErrBadSignature},
		{"payload bit flipped", flip(len(good) - 3), pub, ErrBadSignature},
		{"signature bit flipped", flip(10), pub, ErrBadSignature},
		{"compression byte changed", flip(4), pub, ErrBadSignature},
		{"truncated payload", good[:len(good)-1], pub, ErrBadSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.wire, c.pub)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode = %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeRejectsSignedGarbage(t *testing.T) {
	// Content signed with the right key but invalid must still be refused.
	pub, priv := testKey(t, 1)
	payloads := map[string]string{
		"not json":       "hello",
		"future format":  `{"format":2,"version":1,"issued":"2025-01-01T00:00:00Z","valid_until":"2025-02-01T00:00:00Z","devices":[]}`,
		"duplicate name": `{"format":1,"version":1,"issued":"2025-01-01T00:00:00Z","valid_until":"2025-02-01T00:00:00Z","devices":[{"name":"a","status":"active"},{"name":"A.","status":"active"}]}`,
		"bad status":     `{"format":1,"version":1,"issued":"2025-01-01T00:00:00Z","valid_until":"2025-02-01T00:00:00Z","devices":[{"name":"a","status":"maybe"}]}`,
		"expired window": `{"format":1,"version":1,"issued":"2025-01-01T00:00:00Z","valid_until":"2024-02-01T00:00:00Z","devices":[]}`,
		"zero version":   `{"format":1,"version":0,"issued":"2025-01-01T00:00:00Z","valid_until":"2025-02-01T00:00:00Z","devices":[]}`,
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			wire := make([]byte, headerLen, headerLen+len(p))
			copy(wire, magic)
			wire[4] = compNone
			wire = append(wire, p...)
			copy(wire[5:], ed25519.Sign(priv, signed(compNone, []byte(p))))
			if _, err := Decode(wire, pub); !errors.Is(err, ErrFormat) {
				t.Fatalf("Decode = %v, want ErrFormat", err)
			}
		})
	}
}

func TestAccept(t *testing.T) {
	cur := &Snapshot{Version: 5, Issued: t0}
	cases := []struct {
		name string
		cur  *Snapshot
		next Snapshot
		want error
	}{
		{"first snapshot", nil, Snapshot{Version: 1, Issued: t0}, nil},
		{"higher version", cur, Snapshot{Version: 6, Issued: t0.Add(-time.Hour)}, nil},
		{"republish of same version", cur, Snapshot{Version: 5, Issued: t0.Add(time.Hour)}, nil},
		{"same", cur, Snapshot{Version: 5, Issued: t0}, ErrSame},
		{"lower version", cur, Snapshot{Version: 4, Issued: t0.Add(time.Hour)}, ErrOlder},
		{"older republish", cur, Snapshot{Version: 5, Issued: t0.Add(-time.Second)}, ErrSame},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Accept(c.cur, &c.next); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Accept = %v, want %v", err, c.want)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	base := func() Snapshot { return sample() }
	cases := map[string]func(*Snapshot){
		"empty name":       func(s *Snapshot) { s.Devices[0].Name = " " },
		"space in name":    func(s *Snapshot) { s.Devices[0].Name = "a b" },
		"negative limit":   func(s *Snapshot) { s.Devices[0].RecipientsPerHour = -1 },
		"no valid window":  func(s *Snapshot) { s.ValidUntil = s.Issued },
		"no version":       func(s *Snapshot) { s.Version = 0 },
		"unknown format":   func(s *Snapshot) { s.Format = 9 },
		"empty status":     func(s *Snapshot) { s.Devices[1].Status = "" },
		"duplicate device": func(s *Snapshot) { s.Devices[1].Name = "SCANNER2.example.edu" },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			s := base()
			mut(&s)
			if err := s.Normalize(); !errors.Is(err, ErrFormat) {
				t.Fatalf("Normalize = %v, want ErrFormat", err)
			}
		})
	}
}

func TestExpiredAndCounts(t *testing.T) {
	s := sample()
	if s.Expired(t0) || !s.Expired(s.ValidUntil) {
		t.Error("Expired boundary wrong")
	}
	if a, su := s.Counts(); a != 1 || su != 1 {
		t.Errorf("Counts = %d, %d", a, su)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "allowlist.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v", fi.Mode().Perm(), err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reloaded key differs (%v)", err)
	}
	pub, err := ParsePublicKey(EncodePublicKey(k1.Public().(ed25519.PublicKey)))
	if err != nil || !pub.Equal(k1.Public()) {
		t.Fatalf("public key round trip: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("world-readable key accepted")
	}
	for _, bad := range []string{"", "!!", "AAAA"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	pub, priv := testKey(f, 1)
	good, err := Encode(sample(), priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("PAL1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b, pub)
		if err != nil {
			return
		}
		// Anything accepted must re-encode and decode to the same content.
		again, err := Encode(s, priv)
		if err != nil {
			t.Fatalf("accepted snapshot does not re-encode: %v", err)
		}
		s2, err := Decode(again, pub)
		if err != nil || Compare(&s, &s2) != 0 || len(s.Devices) != len(s2.Devices) {
			t.Fatalf("re-decode mismatch: %v", err)
		}
	})
}

// fleet builds a snapshot of n devices with realistic names and senders.
func fleet(n int) Snapshot {
	r := rand.New(rand.NewPCG(1, 2))
	s := Snapshot{Version: int64(n), Issued: t0, ValidUntil: t0.Add(7 * 24 * time.Hour), Devices: make([]Device, n)}
	depts := []string{"chem", "phys", "lib", "med", "law", "eng", "bio", "math", "hr", "fin"}
	for i := range s.Devices {
		dept := depts[r.IntN(len(depts))]
		d := Device{
			Name:    fmt.Sprintf("dev%06d-%x.%s.example.edu", i, r.Uint32()&0xffff, dept),
			Status:  Active,
			Senders: []string{fmt.Sprintf("scanner-%d@%s.example.edu", i, dept)},
		}
		if i%50 == 0 {
			d.Status, d.Reason = Suspended, "suspended by edge e1: NDR to x@example.org undeliverable"
		}
		if i%10 == 0 {
			d.Senders = append(d.Senders, fmt.Sprintf("noreply-%d@example.edu", i))
			d.MessagesPerHour = 1000
		}
		s.Devices[i] = d
	}
	return s
}

func benchSizes(b *testing.B, f func(b *testing.B, s Snapshot)) {
	for _, n := range []int{1000, 10000, 100000} {
		s := fleet(n)
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) { f(b, s) })
	}
}

// BenchmarkSnapshotEncode measures build (normalise, JSON), compress and
// sign, and reports the encoded size.
func BenchmarkSnapshotEncode(b *testing.B) {
	_, priv := testKey(b, 1)
	benchSizes(b, func(b *testing.B, s Snapshot) {
		var wire []byte
		for b.Loop() {
			var err error
			if wire, err = Encode(s, priv); err != nil {
				b.Fatal(err)
			}
		}
		canon, _ := Canonical(s)
		b.ReportMetric(float64(len(wire)), "wire-bytes")
		b.ReportMetric(float64(len(canon)), "json-bytes")
	})
}

// BenchmarkSnapshotVerify measures the signature check alone.
func BenchmarkSnapshotVerify(b *testing.B) {
	pub, priv := testKey(b, 1)
	benchSizes(b, func(b *testing.B, s Snapshot) {
		wire, err := Encode(s, priv)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := Verify(wire, pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSnapshotDecode measures what an edge does on receipt: verify,
// decompress, parse and validate.
func BenchmarkSnapshotDecode(b *testing.B) {
	pub, priv := testKey(b, 1)
	benchSizes(b, func(b *testing.B, s Snapshot) {
		wire, err := Encode(s, priv)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := Decode(wire, pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestReinstatedEpoch: the reinstatement epoch round-trips; a snapshot
// written before the field existed (here: hand-made canonical JSON
// without it, signed) still verifies and decodes with epoch 0, and
// re-encodes to the very same payload bytes; an epoch past the version
// is malformed.
func TestReinstatedEpoch(t *testing.T) {
	pub, priv := testKey(t, 3)
	s := sample()
	s.Devices[0].Reinstated = 5
	wire, err := Encode(s, priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(wire, pub)
	if err != nil {
		t.Fatal(err)
	}
	if got.Devices[1].Name != "scanner2.example.edu" || got.Devices[1].Reinstated != 5 || got.Devices[0].Reinstated != 0 {
		t.Fatalf("epochs after round trip: %+v", got.Devices)
	}

	old := []byte(`{"format":1,"version":7,"issued":"2025-03-01T12:00:00Z","valid_until":"2025-03-08T12:00:00Z",` +
		`"devices":[{"name":"copier1.example.edu","status":"suspended","mph":10,"reason":"NDR undeliverable"},` +
		`{"name":"scanner2.example.edu","status":"active","senders":["b@example.edu","scan@example.edu"]}]}`)
	oldWire := append([]byte(magic), compNone)
	oldWire = append(oldWire, ed25519.Sign(priv, signed(compNone, old))...)
	oldWire = append(oldWire, old...)
	dec, err := Decode(oldWire, pub)
	if err != nil {
		t.Fatalf("old snapshot no longer decodes: %v", err)
	}
	for _, d := range dec.Devices {
		if d.Reinstated != 0 {
			t.Errorf("old snapshot device %s has epoch %d", d.Name, d.Reinstated)
		}
	}
	canon, err := Canonical(dec)
	if err != nil || !bytes.Equal(canon, old) {
		t.Errorf("old snapshot re-encodes differently:\n got %s\nwant %s", canon, old)
	}

	s = sample()
	s.Devices[1].Reinstated = s.Version + 1
	if _, err := Encode(s, priv); !errors.Is(err, ErrFormat) {
		t.Errorf("epoch past the version: %v, want ErrFormat", err)
	}
}
