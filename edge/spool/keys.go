package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Key layout in the one Badger database:
//
//	e/<id>                  envelope (JSON)
//	b/<id>/<chunk uint32>   message bytes, in chunks of at most 1 MiB
//	q/<nanos uint64><id>    due index: next attempt time, then id; the
//	                        value lists the pending domains (dueValue)
//	k/<prefix>\x00<key>     Bucket entries of other edge packages
//	z/reclaim               sentinel used by GC to force a memtable flush
const (
	pEnv    = "e/"
	pBody   = "b/"
	pDue    = "q/"
	pKV     = "k/"
	pReclam = "z/reclaim"
)

func envKey(id string) []byte { return []byte(pEnv + id) }

func bodyPrefix(id string) []byte { return []byte(pBody + id + "/") }

func bodyKey(id string, n int) []byte {
	return binary.BigEndian.AppendUint32(bodyPrefix(id), uint32(n))
}

// dueNanos maps a time to the index's sort key; the zero time and times
// before 1970 sort first (due immediately).
func dueNanos(t time.Time) uint64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint64(t.UnixNano())
}

func dueKey(t time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte(pDue), dueNanos(t))
	return append(k, id...)
}

func parseDueKey(k []byte) (uint64, string, error) {
	if len(k) < len(pDue)+8 {
		return 0, "", fmt.Errorf("spool: short due key %q", k)
	}
	return binary.BigEndian.Uint64(k[len(pDue):]), string(k[len(pDue)+8:]), nil
}

// dueValueV1 starts a due-index value that lists pending domains. Entries
// written before the value was used are empty: their domains are unknown
// (nil) and a reader decodes the envelope instead.
const dueValueV1 = 1

// dueValue is the due-index value of env: its pending domains, so that a
// queue runner can tell which connection slots a message needs without
// decoding its envelope. Each domain ends with a NUL, which no address
// the intake accepts contains; a reader that finds different domains in
// the envelope must trust the envelope.
func dueValue(env *Envelope) []byte {
	ds := env.PendingDomains()
	n := 1
	for _, d := range ds {
		n += len(d) + 1
	}
	v := make([]byte, 1, n)
	v[0] = dueValueV1
	for _, d := range ds {
		v = append(v, d...)
		v = append(v, 0)
	}
	return v
}

// parseDueValue returns the pending domains a due-index value lists
// (empty, not nil, for none) and nil when the value does not list them.
func parseDueValue(v []byte) []string {
	if len(v) == 0 || v[0] != dueValueV1 {
		return nil
	}
	v = v[1:]
	ds := make([]string, 0, bytes.Count(v, []byte{0}))
	for len(v) > 0 {
		d, rest, ok := bytes.Cut(v, []byte{0})
		if !ok {
			return nil // not written by dueValue
		}
		ds = append(ds, string(d))
		v = rest
	}
	return ds
}

// PendingDomains lists, sorted, the distinct lower-cased domains of the
// recipients that are not final (the part after the last '@'; "" for an
// address without one).
func (e *Envelope) PendingDomains() []string {
	var ds []string
	for _, rc := range e.Recipients {
		if rc.State.Final() {
			continue
		}
		d := ""
		if i := strings.LastIndexByte(rc.Addr, '@'); i >= 0 {
			d = strings.ToLower(rc.Addr[i+1:])
		}
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	slices.Sort(ds)
	return ds
}
