package spool

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Key layout in the one Badger database:
//
//	e/<id>                  envelope (JSON)
//	b/<id>/<chunk uint32>   message bytes, in chunks of at most 1 MiB
//	q/<nanos uint64><id>    due index: next attempt time, then id; no value
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
