package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// DueEntry is one due-index entry as a DueFeed hands it out.
type DueEntry struct {
	ID string
	// Stamp is the entry's due time in the index's own units (DueStamp of
	// the envelope's NextAttempt): an envelope read later whose stamp
	// differs has been rewritten, and its new entry comes through the
	// feed on its own.
	Stamp uint64
	// Domains are the message's pending domains, sorted (empty: none is
	// pending); nil when the entry does not list them (written by an
	// older version): read the envelope to learn them.
	Domains []string
}

// DueStamp maps t to the due index's sort key (see DueEntry.Stamp).
func DueStamp(t time.Time) uint64 { return dueNanos(t) }

// DueFeed reads the due index incrementally for one reader, the queue
// runner, which keeps what it has read in memory: each Scan visits the
// due entries the previous Scans have not visited, and every entry
// written since the previous Scan began, wherever it sorts. So a reader
// that has taken in a backlog does not walk it again on every look.
//
// An entry may be visited more than once (a rewrite sorting before the
// cursor makes the next Scan walk again from there); deletions are not
// reported: a reader checks the envelope before acting on an entry (its
// stamp and held flag), and a rewritten envelope's new entry is visited
// on its own.
//
// How no entry is missed: the committer lowers the feed's low mark to
// the time of every due entry it is about to commit (dueWriting),
// before the commit. Scan takes the mark and resets it to the lowest
// entry of the batch being committed (duePending), then opens its
// snapshot and walks from min(cursor, mark). An entry committed before
// the snapshot is in it and at or above the mark; one committed after it
// either lowered the mark after the reset or is in duePending, so the
// next Scan walks from it.
type DueFeed struct {
	s *Spool
	// low is guarded by s.dueMu; the rest belongs to the reader (one
	// Scan at a time).
	low    uint64
	seek   []byte // where the next Scan continues; nil: the index's start
	quiet  bool   // the last Scan walked to the end of the index or to a later entry
	next   uint64 // the later entry's stamp (quiet, hasNx)
	hasNx  bool
	closed bool
}

// DueFeed opens a feed on the due index; the first Scan walks the whole
// index. Close it when done (an open feed costs a comparison per due
// write).
func (s *Spool) DueFeed() *DueFeed {
	f := &DueFeed{s: s, low: math.MaxUint64}
	s.dueMu.Lock()
	s.dueFeeds = append(s.dueFeeds, f)
	s.dueMu.Unlock()
	return f
}

// Close detaches the feed from the spool.
func (f *DueFeed) Close() {
	f.s.dueMu.Lock()
	f.s.dueFeeds = slices.DeleteFunc(f.s.dueFeeds, func(g *DueFeed) bool { return g == f })
	f.s.dueMu.Unlock()
	f.closed = true
}

// Rewind makes the next Scan walk the whole index again (after the
// reader lost what it had taken in).
func (f *DueFeed) Rewind() {
	f.seek, f.quiet = nil, false
}

// Scan calls fn, earliest first, for the entries due at or before now
// that it has not visited before (see DueFeed); fn returns false to stop,
// and the entry it stopped at is visited again by the next Scan. It runs
// inside a read snapshot, so fn must not write to the spool.
//
// Scan returns the stamp-time of the first entry due after now, and false
// when the walk ended before such an entry (fn stopped it or the index
// did). When nothing was written since the last Scan and that Scan ended
// at the end of the index or at an entry not yet due at now, Scan opens
// no snapshot.
func (f *DueFeed) Scan(now time.Time, fn func(DueEntry) bool) (time.Time, bool, error) {
	if f.closed {
		return time.Time{}, false, fmt.Errorf("spool: due feed: closed")
	}
	last := dueNanos(now)
	s := f.s
	s.dueMu.Lock()
	low := f.low
	f.low = s.duePending
	s.dueMu.Unlock()
	if low == math.MaxUint64 && f.quiet && (!f.hasNx || f.next > last) {
		if f.hasNx {
			return time.Unix(0, int64(f.next)), true, nil
		}
		return time.Time{}, false, nil
	}
	start := f.seek
	if start == nil {
		start = []byte(pDue)
	}
	if low != math.MaxUint64 {
		if k := binary.BigEndian.AppendUint64([]byte(pDue), low); bytes.Compare(k, start) < 0 {
			start = k
		}
	}
	var (
		seek  []byte
		quiet bool
		next  uint64
		hasNx bool
	)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pDue)})
		defer it.Close()
		var took []byte // the last key fn took
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			key := item.Key()
			ts, id, err := parseDueKey(key)
			if err != nil {
				return err
			}
			if ts > last {
				seek, quiet, next, hasNx = item.KeyCopy(nil), true, ts, true
				return nil
			}
			e := DueEntry{ID: id, Stamp: ts}
			if err := item.Value(func(v []byte) error {
				e.Domains = parseDueValue(v)
				return nil
			}); err != nil {
				return err
			}
			if !fn(e) {
				seek = item.KeyCopy(nil)
				return nil
			}
			took = append(took[:0], key...)
		}
		quiet = true
		if took == nil {
			seek = start
		} else {
			seek = append(took, 0) // the smallest key after it
		}
		return nil
	})
	if err != nil {
		s.dueMu.Lock()
		f.low = min(f.low, low)
		s.dueMu.Unlock()
		return time.Time{}, false, fmt.Errorf("spool: due feed: %w", err)
	}
	f.seek, f.quiet, f.next, f.hasNx = seek, quiet, next, hasNx
	if hasNx {
		return time.Unix(0, int64(next)), true, nil
	}
	return time.Time{}, false, nil
}
