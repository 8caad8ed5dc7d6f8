package devices

import (
	"math"
	"slices"
	"strings"
)

// Compact in-memory form of a device list.
//
// An edge may hold central's allowlist of 100,000 devices on a Raspberry
// Pi. As map[string]Device that costs several hundred bytes a device (map
// buckets, a Device of seven headers, a string allocation for each name
// and sender), and every pointer is work for the garbage collector. A
// packed list keeps all text in one string and each device as a small
// fixed-size record of offsets into it, sorted by name: 48 bytes plus
// the text per device, and nothing for the GC to scan but one string and
// two slices. Lookup is a binary search; the Device it returns refers into
// the shared text (only Senders is allocated).

// span is a substring of packed.text.
type span struct{ off, n uint32 }

// record is one device. Status and Source are indexes into the list's
// interned strings; Senders are joined by senderSep.
type record struct {
	name, senders, reason span
	reinstated            int64
	mph, rph              int32
	status, source        uint8
}

// senderSep separates senders in the text; addresses cannot contain it.
const senderSep = "\x00"

// packed is an immutable device list sorted by name.
type packed struct {
	text    string
	recs    []record
	interns []string // Status and Source values
}

// pack builds a packed list from devs, whose names must be canonical and
// non-empty. When a name occurs twice the later entry wins (as when
// filling a map).
func pack(devs []Device) *packed {
	return packFunc(len(devs), func(i int) Device { return devs[i] })
}

// packFunc is pack over n devices produced by get, which is called twice
// per device and must return the same device each time; it lets a caller
// normalise devices without building a second list of them.
func packFunc(n int, get func(i int) Device) *packed {
	names := make([]string, n)
	order := make([]int32, n)
	size := 0
	for i := range n {
		d := get(i)
		names[i] = d.Name
		order[i] = int32(i)
		size += len(d.Name) + len(d.Reason) + len(d.Senders)*len(senderSep)
		for _, s := range d.Senders {
			size += len(s)
		}
	}
	slices.SortStableFunc(order, func(a, b int32) int { return strings.Compare(names[a], names[b]) })
	// Keep the last of equal names.
	uniq := order[:0]
	for i, o := range order {
		if i+1 < len(order) && names[order[i+1]] == names[o] {
			continue
		}
		uniq = append(uniq, o)
	}
	p := &packed{recs: make([]record, 0, len(uniq))}
	var b strings.Builder
	b.Grow(size) // an upper bound (duplicates are dropped): no regrowth
	add := func(s string) span {
		sp := span{uint32(b.Len()), uint32(len(s))}
		b.WriteString(s)
		return sp
	}
	for _, o := range uniq {
		d := get(int(o))
		r := record{
			name:       add(d.Name),
			reinstated: d.Reinstated,
			mph:        clamp32(d.MessagesPerHour),
			rph:        clamp32(d.RecipientsPerHour),
			status:     p.intern(d.Status),
			source:     p.intern(d.Source),
		}
		r.senders.off = uint32(b.Len())
		for i, s := range d.Senders {
			if i > 0 {
				b.WriteString(senderSep)
			}
			b.WriteString(s)
		}
		r.senders.n = uint32(b.Len()) - r.senders.off
		r.reason = add(d.Reason)
		p.recs = append(p.recs, r)
	}
	p.text = b.String()
	return p
}

func clamp32(n int) int32 {
	return int32(max(math.MinInt32, min(n, math.MaxInt32)))
}

// intern returns the index of s in p.interns, adding it if needed. The
// values are few (active, suspended; config, central).
func (p *packed) intern(s string) uint8 {
	for i, v := range p.interns {
		if v == s {
			return uint8(i)
		}
	}
	if len(p.interns) == math.MaxUint8 {
		return 0 // cannot happen with the statuses and sources in use
	}
	p.interns = append(p.interns, s)
	return uint8(len(p.interns) - 1)
}

func (p *packed) str(s span) string { return p.text[s.off : s.off+s.n] }

// len is the number of devices.
func (p *packed) len() int {
	if p == nil {
		return 0
	}
	return len(p.recs)
}

// find returns the index of name, or -1.
func (p *packed) find(name string) int {
	if p == nil {
		return -1
	}
	i, ok := slices.BinarySearchFunc(p.recs, name, func(r record, name string) int {
		return strings.Compare(p.str(r.name), name)
	})
	if !ok {
		return -1
	}
	return i
}

// device expands record i.
func (p *packed) device(i int) Device {
	r := &p.recs[i]
	d := Device{
		Name:              p.str(r.name),
		Status:            p.interns[r.status],
		MessagesPerHour:   int(r.mph),
		RecipientsPerHour: int(r.rph),
		Source:            p.interns[r.source],
		Reason:            p.str(r.reason),
		Reinstated:        r.reinstated,
	}
	if r.senders.n > 0 {
		d.Senders = strings.Split(p.str(r.senders), senderSep)
	}
	return d
}

// lookup returns the device called name.
func (p *packed) lookup(name string) (Device, bool) {
	i := p.find(name)
	if i < 0 {
		return Device{}, false
	}
	return p.device(i), true
}
