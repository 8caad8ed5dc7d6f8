package allowlist

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"
)

// A delta takes an edge from the snapshot of one version (Base) to the
// snapshot of a later one (Version) without sending the whole list: the
// devices added or changed (Upsert) and the names removed (Remove). It
// carries the content hash of the device list it produces, so an edge
// applies it only if it reaches exactly the list central signed, and the
// header (Issued, ValidUntil) the produced snapshot has. A delta whose Base
// equals its Version changes no device and only moves Issued and
// ValidUntil on (a republish).
//
// The wire form mirrors a snapshot's with its own magic and signature
// context, so neither can ever be taken for the other:
//
//	offset 0   4 bytes  magic "PAD1"
//	offset 4   1 byte   compression: 0 none, 1 zstd
//	offset 5  64 bytes  Ed25519 signature over deltaContext || byte 4 || payload
//	offset 69 …         payload: canonical JSON of Delta, compressed when large
type Delta struct {
	Format int `json:"format"`
	// Base is the version the delta applies to; Version the one it
	// produces (Version >= Base).
	Base       int64     `json:"base"`
	Version    int64     `json:"version"`
	Issued     time.Time `json:"issued"`
	ValidUntil time.Time `json:"valid_until"`
	// Count and Hash describe the produced device list: its length and
	// its content hash (ContentHash, hex).
	Count  int      `json:"count"`
	Hash   string   `json:"hash"`
	Upsert []Device `json:"upsert,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

const (
	deltaMagic   = "PAD1"
	deltaContext = "postern allowlist delta v1\x00"
	// compressAbove is the payload size from which a delta is compressed;
	// a single change is smaller than zstd's framing gains.
	compressAbove = 512
)

// Errors of delta handling.
var (
	// ErrDeltaBase: the delta does not apply to the version held.
	ErrDeltaBase = errors.New("allowlist: delta is for another base version")
	// ErrDeltaHash: applying the delta did not produce the list central
	// signed (count or content hash differ).
	ErrDeltaHash = errors.New("allowlist: delta result does not match its content hash")
)

// IsDelta reports whether b is the wire form of a delta (by its magic; it
// says nothing about the signature).
func IsDelta(b []byte) bool { return len(b) >= 4 && string(b[:4]) == deltaMagic }

// ContentHash is the SHA-256 of a device list in canonical order: each
// device as length-prefixed fields (name, status, senders, limits,
// reason, reinstatement epoch). The list must be normalized (as Decode and
// Delta.Apply return it). Two lists hash alike exactly when an edge would
// enforce them alike.
func ContentHash(devs []Device) [32]byte {
	h := NewHasher()
	for i := range devs {
		h.Add(&devs[i])
	}
	return h.Sum()
}

// Hasher computes ContentHash incrementally over devices given in order.
type Hasher struct {
	h   hash.Hash
	buf []byte
	n   int
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: sha256.New(), buf: make([]byte, 0, 256)} }

// Add hashes the next device.
func (h *Hasher) Add(d *Device) {
	b := h.buf[:0]
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(d.Name)
	str(string(d.Status))
	b = binary.AppendUvarint(b, uint64(len(d.Senders)))
	for _, s := range d.Senders {
		str(s)
	}
	b = binary.AppendUvarint(b, uint64(d.MessagesPerHour))
	b = binary.AppendUvarint(b, uint64(d.RecipientsPerHour))
	str(d.Reason)
	b = binary.AppendUvarint(b, uint64(d.Reinstated))
	h.h.Write(b)
	h.buf = b
	h.n++
}

// Sum returns the hash of the devices added so far.
func (h *Hasher) Sum() [32]byte {
	var out [32]byte
	h.h.Sum(out[:0])
	return out
}

// Len is the number of devices added.
func (h *Hasher) Len() int { return h.n }

// HashString is the text form of a content hash used in deltas.
func HashString(h [32]byte) string { return hex.EncodeToString(h[:]) }

// NewDelta returns the delta from the normalized device list base (of
// version baseVersion) to next, which it normalizes (a copy: next is not
// changed).
func NewDelta(baseVersion int64, base []Device, next Snapshot) (Delta, error) {
	next.Devices = cloneDevices(next.Devices)
	if err := next.Normalize(); err != nil {
		return Delta{}, err
	}
	if next.Version < baseVersion {
		return Delta{}, fmt.Errorf("%w: delta from version %d to older %d", ErrFormat, baseVersion, next.Version)
	}
	d := Delta{Format: FormatVersion, Base: baseVersion, Version: next.Version, Issued: next.Issued,
		ValidUntil: next.ValidUntil, Count: len(next.Devices), Hash: HashString(ContentHash(next.Devices))}
	i, j := 0, 0
	for i < len(base) || j < len(next.Devices) {
		switch {
		case j == len(next.Devices) || (i < len(base) && base[i].Name < next.Devices[j].Name):
			d.Remove = append(d.Remove, base[i].Name)
			i++
		case i == len(base) || next.Devices[j].Name < base[i].Name:
			d.Upsert = append(d.Upsert, next.Devices[j])
			j++
		default:
			if !sameDevice(&base[i], &next.Devices[j]) {
				d.Upsert = append(d.Upsert, next.Devices[j])
			}
			i++
			j++
		}
	}
	if d.Base == d.Version && (len(d.Upsert) > 0 || len(d.Remove) > 0) {
		return Delta{}, fmt.Errorf("%w: the list changed but version %d did not", ErrFormat, d.Version)
	}
	return d, nil
}

func sameDevice(a, b *Device) bool {
	return a.Name == b.Name && a.Status == b.Status && slices.Equal(a.Senders, b.Senders) &&
		a.MessagesPerHour == b.MessagesPerHour && a.RecipientsPerHour == b.RecipientsPerHour &&
		a.Reason == b.Reason && a.Reinstated == b.Reinstated
}

// Normalize puts d into canonical form (as Snapshot.Normalize does for
// its devices; removed names sorted) and reports invalid content.
func (d *Delta) Normalize() error {
	if d.Format == 0 {
		d.Format = FormatVersion
	}
	if d.Format != FormatVersion {
		return fmt.Errorf("%w: delta format %d, want %d", ErrFormat, d.Format, FormatVersion)
	}
	if d.Base < 1 || d.Version < d.Base {
		return fmt.Errorf("%w: delta from version %d to %d", ErrFormat, d.Base, d.Version)
	}
	d.Issued = d.Issued.UTC().Truncate(time.Millisecond)
	d.ValidUntil = d.ValidUntil.UTC().Truncate(time.Millisecond)
	if d.Issued.IsZero() || !d.ValidUntil.After(d.Issued) {
		return fmt.Errorf("%w: delta valid_until %s must be after issued %s", ErrFormat, d.ValidUntil, d.Issued)
	}
	if d.Count < 0 || len(d.Hash) != 2*sha256.Size {
		return fmt.Errorf("%w: delta without a valid count and content hash", ErrFormat)
	}
	if d.Base == d.Version && (len(d.Upsert) > 0 || len(d.Remove) > 0) {
		return fmt.Errorf("%w: delta changes devices but not the version", ErrFormat)
	}
	if err := normalizeDevices(d.Upsert, d.Version); err != nil {
		return err
	}
	if len(d.Upsert) == 0 {
		d.Upsert = nil
	}
	for i, n := range d.Remove {
		d.Remove[i] = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if d.Remove[i] == "" {
			return fmt.Errorf("%w: delta removes an empty name", ErrFormat)
		}
	}
	slices.Sort(d.Remove)
	for i := 1; i < len(d.Remove); i++ {
		if d.Remove[i] == d.Remove[i-1] {
			return fmt.Errorf("%w: delta removes %s twice", ErrFormat, d.Remove[i])
		}
	}
	if len(d.Remove) == 0 {
		d.Remove = nil
	}
	for _, u := range d.Upsert {
		if _, found := slices.BinarySearch(d.Remove, u.Name); found {
			return fmt.Errorf("%w: delta both changes and removes %s", ErrFormat, u.Name)
		}
	}
	return nil
}

// Apply returns the device list the delta produces from base, the
// normalized list of version d.Base (base is not changed; the result
// shares its unchanged devices). It fails with ErrDeltaHash unless the
// result has the delta's count and content hash.
func (d *Delta) Apply(base []Device) ([]Device, error) {
	out := make([]Device, 0, max(d.Count, 0))
	i, j := 0, 0
	for i < len(base) || j < len(d.Upsert) {
		switch {
		case j == len(d.Upsert) || (i < len(base) && base[i].Name < d.Upsert[j].Name):
			if _, gone := slices.BinarySearch(d.Remove, base[i].Name); !gone {
				out = append(out, base[i])
			}
			i++
		case i == len(base) || d.Upsert[j].Name < base[i].Name:
			out = append(out, d.Upsert[j])
			j++
		default:
			out = append(out, d.Upsert[j])
			i++
			j++
		}
	}
	if len(out) != d.Count || HashString(ContentHash(out)) != d.Hash {
		return nil, fmt.Errorf("%w: version %d from %d", ErrDeltaHash, d.Version, d.Base)
	}
	return out, nil
}

// Header is the snapshot header (no devices) the delta produces.
func (d *Delta) Header() Snapshot {
	return Snapshot{Format: FormatVersion, Version: d.Version, Issued: d.Issued, ValidUntil: d.ValidUntil}
}

// EncodeDelta normalizes and signs d with priv, returning the wire form.
func EncodeDelta(d Delta, priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("allowlist: bad private key length %d", len(priv))
	}
	d.Upsert = cloneDevices(d.Upsert)
	d.Remove = slices.Clone(d.Remove)
	if err := d.Normalize(); err != nil {
		return nil, err
	}
	canon, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("allowlist: encode delta: %w", err)
	}
	out := make([]byte, headerLen, headerLen+len(canon)+64)
	copy(out, deltaMagic)
	if len(canon) > compressAbove {
		out[4] = compZstd
		out = encoder().EncodeAll(canon, out)
	} else {
		out[4] = compNone
		out = append(out, canon...)
	}
	sig := ed25519.Sign(priv, deltaSigned(out[4], out[headerLen:]))
	copy(out[5:headerLen], sig)
	return out, nil
}

func deltaSigned(comp byte, payload []byte) []byte {
	m := make([]byte, 0, len(deltaContext)+1+len(payload))
	m = append(m, deltaContext...)
	m = append(m, comp)
	return append(m, payload...)
}

// DecodeDelta verifies the wire form b with pub, then decompresses, parses
// and validates it. Any error wraps ErrUnsigned, ErrBadSignature or
// ErrFormat.
func DecodeDelta(b []byte, pub ed25519.PublicKey) (Delta, error) {
	var d Delta
	if len(b) < headerLen || !bytes.Equal(b[:4], []byte(deltaMagic)) {
		return d, ErrUnsigned
	}
	if len(pub) != ed25519.PublicKeySize {
		return d, fmt.Errorf("%w: no valid public key configured", ErrBadSignature)
	}
	if !ed25519.Verify(pub, deltaSigned(b[4], b[headerLen:]), b[5:headerLen]) {
		return d, ErrBadSignature
	}
	payload, err := openPayload(b)
	if err != nil {
		return d, fmt.Errorf("delta: %w", err)
	}
	if err := json.Unmarshal(payload, &d); err != nil {
		return d, fmt.Errorf("%w: delta: %v", ErrFormat, err)
	}
	if d.Format != FormatVersion {
		return d, fmt.Errorf("%w: delta format %d, want %d", ErrFormat, d.Format, FormatVersion)
	}
	if err := d.Normalize(); err != nil {
		return d, err
	}
	return d, nil
}

// AcceptDelta decides whether an edge holding cur (nil: none) may apply d:
// nil if d applies to exactly cur's version and is newer; ErrSame if d
// produces the version held (a redelivery) and is not newer; ErrOlder if
// it is older than cur (a late or replayed delta: nothing to do);
// ErrDeltaBase if d is newer but for another base (changes were missed:
// the edge needs the full snapshot).
func AcceptDelta(cur *Snapshot, d *Delta) error {
	if cur == nil {
		return fmt.Errorf("%w: no snapshot held", ErrDeltaBase)
	}
	switch {
	case d.Version < cur.Version:
		return fmt.Errorf("%w: delta to version %d, have %d", ErrOlder, d.Version, cur.Version)
	case d.Version == cur.Version && (d.Base != cur.Version || !d.Issued.After(cur.Issued)):
		return ErrSame
	case d.Base != cur.Version:
		return fmt.Errorf("%w: delta from %d to %d, have %d", ErrDeltaBase, d.Base, d.Version, cur.Version)
	case d.Issued.Before(cur.Issued):
		// Signed before the snapshot held was: a replay of an old delta.
		return fmt.Errorf("%w: delta issued %s before the snapshot held (%s)", ErrOlder,
			d.Issued.Format(time.RFC3339), cur.Issued.Format(time.RFC3339))
	}
	return nil
}
