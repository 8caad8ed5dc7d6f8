package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Put spools a new message: env and data are written together and fsynced
// before Put returns nil. An empty env.ID is filled with NewID; env.Size is
// set to len(data). Put fails with ErrFull when the disk is below the
// free-space reserve and ErrExists when the id is already spooled.
//
// ctx is checked before the write is queued; once queued Put waits for the
// outcome, so that a nil error always means "durable" and an error means
// "not spooled" (except a failed fsync, after which the message may exist).
func (s *Spool) Put(ctx context.Context, env *Envelope, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: put: %w", err)
	}
	if env.ID == "" {
		env.ID = s.NewID()
	}
	if !validID(env.ID) {
		return fmt.Errorf("spool: put: invalid id %q", env.ID)
	}
	env.Size = int64(len(data))
	ej, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("spool: put %s: encode envelope: %w", env.ID, err)
	}
	id, held, next, dv := env.ID, env.Held, env.NextAttempt, dueValue(env)
	err = s.submit(&request{
		need:  spaceMinimum,
		bytes: int64(len(data) + len(ej)),
		apply: func(txn *badger.Txn) ([]mutation, error) {
			if _, err := txn.Get(envKey(id)); err == nil {
				return nil, fmt.Errorf("spool: put %s: %w", id, ErrExists)
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return nil, fmt.Errorf("spool: put %s: %w", id, err)
			}
			return s.insertion(id, ej, data, held, next, dv), nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: put %s: %w", id, err)
	}
	s.messages.Add(1)
	s.bytes.Add(int64(len(data)))
	if !held {
		s.signal()
	}
	return nil
}

// Get returns the envelope of id, or ErrNotFound.
func (s *Spool) Get(id string) (*Envelope, error) {
	var env *Envelope
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		env, err = readEnv(txn, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return env, nil
}

// Data returns the message bytes of id, or ErrNotFound.
func (s *Spool) Data(id string) ([]byte, error) {
	var buf bytes.Buffer
	err := s.db.View(func(txn *badger.Txn) error {
		env, err := readEnv(txn, id)
		if err != nil {
			return err
		}
		buf.Grow(int(env.Size))
		it := txn.NewIterator(badger.IteratorOptions{Prefix: bodyPrefix(id)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := it.Item().Value(func(v []byte) error {
				buf.Write(v)
				return nil
			}); err != nil {
				return fmt.Errorf("spool: read data %s: %w", id, err)
			}
		}
		if int64(buf.Len()) != env.Size {
			return fmt.Errorf("spool: data %s: have %d bytes, envelope says %d", id, buf.Len(), env.Size)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.touched(int64(buf.Len()))
	return buf.Bytes(), nil
}

// Update durably rewrites the stored envelope of env.ID (recipient states,
// NextAttempt, History, Held, ...) and moves its due-index entry. The
// message bytes are untouched; env.Size keeps the stored value.
//
// Update is never refused for the free-space reserve: it rewrites a small
// envelope of mail already accepted (an attempt's outcome, an operator's
// hold), and refusing it would leave the message due as if the attempt
// had not happened. The reserve exists so that such writes have room.
func (s *Spool) Update(env *Envelope) error {
	id := env.ID
	if !validID(id) {
		return fmt.Errorf("spool: update: invalid id %q", id)
	}
	stored := *env
	var old *Envelope
	err := s.submit(&request{
		need: spaceNone,
		apply: func(txn *badger.Txn) ([]mutation, error) {
			var err error
			if old, err = readEnv(txn, id); err != nil {
				return nil, err
			}
			stored.Size = old.Size
			ej, err := json.Marshal(&stored)
			if err != nil {
				return nil, fmt.Errorf("spool: update %s: encode envelope: %w", id, err)
			}
			return reindex(old, &stored, ej), nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: update %s: %w", id, err)
	}
	env.Size = stored.Size
	if !stored.Held && (old.Held || dueNanos(stored.NextAttempt) < dueNanos(old.NextAttempt)) {
		s.signal()
	}
	return nil
}

// reindex returns the writes that replace old by new (same id).
func reindex(old, new *Envelope, ej []byte) []mutation {
	var muts []mutation
	if !old.Held {
		muts = append(muts, mutation{key: dueKey(old.NextAttempt, old.ID), del: true})
	}
	muts = append(muts, mutation{key: envKey(new.ID), val: ej})
	if !new.Held {
		muts = append(muts, mutation{key: dueKey(new.NextAttempt, new.ID), val: dueValue(new)})
	}
	return muts
}

// NewMessage is a message a delivery outcome generates (an NDR or a
// delay notice), spooled by Record together with the outcome.
type NewMessage struct {
	Env  *Envelope
	Data []byte
}

// Record durably writes the outcome of a delivery attempt in one
// transaction: env's rewritten envelope (as Update does) or, when every
// recipient of env is final, the removal of env's message (as Delete
// does), together with the new messages the outcome generated (as Put
// does; an empty Env.ID is filled in). After a crash either all of it is
// on disk or none of it.
//
// The outcome itself never waits for the free-space reserve (see Update
// and Delete). New messages need room: they may use half of the reserve
// (they report on mail already accepted), and Record fails with ErrFull,
// writing nothing, when they do not fit; the caller can then record the
// outcome alone and report later.
func (s *Spool) Record(env *Envelope, news ...NewMessage) error {
	id := env.ID
	if !validID(id) {
		return fmt.Errorf("spool: record: invalid id %q", id)
	}
	remove := env.Done()
	type staged struct {
		id   string
		ej   []byte
		data []byte
		held bool
		next time.Time
		dv   []byte
	}
	var (
		adds  []staged
		bytes int64
	)
	for _, n := range news {
		if n.Env.ID == "" {
			n.Env.ID = s.NewID()
		}
		if !validID(n.Env.ID) || n.Env.ID == id {
			return fmt.Errorf("spool: record %s: invalid id %q for a new message", id, n.Env.ID)
		}
		n.Env.Size = int64(len(n.Data))
		ej, err := json.Marshal(n.Env)
		if err != nil {
			return fmt.Errorf("spool: record %s: encode envelope: %w", id, err)
		}
		adds = append(adds, staged{id: n.Env.ID, ej: ej, data: n.Data, held: n.Env.Held, next: n.Env.NextAttempt, dv: dueValue(n.Env)})
		bytes += int64(len(n.Data) + len(ej))
	}
	stored := *env
	var old *Envelope
	need := spaceNone
	if len(adds) > 0 {
		need = spaceReports
	}
	err := s.submit(&request{
		need:  need,
		bytes: bytes,
		// Removing finished mail may wait briefly to share another
		// write's sync (see request.lazy); it is still durable on return.
		lazy: remove && len(adds) == 0,
		apply: func(txn *badger.Txn) ([]mutation, error) {
			var err error
			if old, err = readEnv(txn, id); err != nil {
				return nil, err
			}
			var muts []mutation
			if remove {
				muts = append(muts, s.removal(txn, old)...)
			} else {
				stored.Size = old.Size
				ej, err := json.Marshal(&stored)
				if err != nil {
					return nil, fmt.Errorf("spool: record %s: encode envelope: %w", id, err)
				}
				muts = reindex(old, &stored, ej)
			}
			for _, a := range adds {
				if _, err := txn.Get(envKey(a.id)); err == nil {
					return nil, fmt.Errorf("spool: record %s: new message %s: %w", id, a.id, ErrExists)
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return nil, fmt.Errorf("spool: record %s: %w", id, err)
				}
				muts = append(muts, s.insertion(a.id, a.ej, a.data, a.held, a.next, a.dv)...)
			}
			return muts, nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: record %s: %w", id, err)
	}
	if remove {
		s.messages.Add(-1)
		s.bytes.Add(-old.Size)
		s.deletedSum.Add(old.Size)
	} else {
		env.Size = stored.Size
	}
	wake := !remove && !stored.Held && (old.Held || dueNanos(stored.NextAttempt) < dueNanos(old.NextAttempt))
	for _, a := range adds {
		s.messages.Add(1)
		s.bytes.Add(int64(len(a.data)))
		wake = wake || !a.held
	}
	if wake {
		s.signal()
	}
	return nil
}

// insertion returns the writes that spool a new message; dv is its
// due-index value.
func (s *Spool) insertion(id string, ej, data []byte, held bool, next time.Time, dv []byte) []mutation {
	muts := []mutation{{key: envKey(id), val: ej}}
	for n, off := 0, 0; off < len(data); n, off = n+1, off+s.chunk {
		end := min(off+s.chunk, len(data))
		muts = append(muts, mutation{key: bodyKey(id, n), val: data[off:end]})
	}
	if !held {
		muts = append(muts, mutation{key: dueKey(next, id), val: dv})
	}
	return muts
}

// removal returns the writes that remove env's message: envelope, index
// entry and bytes.
func (s *Spool) removal(txn *badger.Txn, env *Envelope) []mutation {
	muts := []mutation{{key: envKey(env.ID), del: true}}
	if !env.Held {
		muts = append(muts, mutation{key: dueKey(env.NextAttempt, env.ID), del: true})
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: bodyPrefix(env.ID)})
	for it.Rewind(); it.Valid(); it.Next() {
		muts = append(muts, mutation{key: it.Item().KeyCopy(nil), del: true})
	}
	it.Close()
	return muts
}

// Delete durably removes the envelope, the message bytes and the index
// entry of id (ErrNotFound if absent). Deletes are never refused for lack
// of space: they are how space comes back.
func (s *Spool) Delete(id string) error {
	var size int64
	err := s.submit(&request{
		need: spaceNone,
		lazy: true, // see Record
		apply: func(txn *badger.Txn) ([]mutation, error) {
			env, err := readEnv(txn, id)
			if err != nil {
				return nil, err
			}
			size = env.Size
			return s.removal(txn, env), nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: delete %s: %w", id, err)
	}
	s.messages.Add(-1)
	s.bytes.Add(-size)
	s.deletedSum.Add(size)
	return nil
}

// Due returns up to limit (all if limit <= 0) envelopes whose NextAttempt
// is at or before now and that are not held, the earliest due first. It
// walks the due index and reads only envelopes.
func (s *Spool) Due(now time.Time, limit int) ([]*Envelope, error) {
	var out []*Envelope
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pDue)})
		defer it.Close()
		last := dueNanos(now)
		for it.Rewind(); it.Valid(); it.Next() {
			ts, id, err := parseDueKey(it.Item().Key())
			if err != nil {
				return err
			}
			if ts > last {
				break
			}
			env, err := readEnv(txn, id)
			if errors.Is(err, ErrNotFound) {
				s.log.Warn("spool: due index entry without envelope", "queue_id", id)
				continue
			}
			if err != nil {
				return err
			}
			if env.Held {
				continue
			}
			out = append(out, env)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: due scan: %w", err)
	}
	return out, nil
}

// dueWriting notes a due-index entry at ts about to be committed.
func (s *Spool) dueWriting(ts uint64) {
	s.dueMu.Lock()
	s.duePending = min(s.duePending, ts)
	for _, f := range s.dueFeeds {
		f.low = min(f.low, ts)
	}
	s.dueMu.Unlock()
}

// dueCommitted notes that the due-index entries of the batch in progress
// were committed (or discarded).
func (s *Spool) dueCommitted() {
	s.dueMu.Lock()
	s.duePending = math.MaxUint64
	s.dueMu.Unlock()
}

// NextDue returns the earliest NextAttempt among messages that are not
// held, and false when there is none.
func (s *Spool) NextDue() (time.Time, bool) {
	var (
		t  time.Time
		ok bool
	)
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pDue)})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		ts, _, err := parseDueKey(it.Item().Key())
		if err != nil {
			return err
		}
		t, ok = time.Unix(0, int64(ts)), true
		return nil
	})
	if err != nil {
		s.log.Error("spool: next due", "err", err)
		return time.Time{}, false
	}
	return t, ok
}

// Wake receives (coalesced, never blocking the spool) after a Put or
// Update that may make a message due sooner than before. The queue runner
// selects on it next to its timer for NextDue.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

func (s *Spool) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Iterate calls fn with every envelope in id order (oldest first). fn must
// not keep the spool busy for long: it runs inside a read snapshot.
// An error from fn stops the walk and is returned.
func (s *Spool) Iterate(fn func(*Envelope) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pEnv), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			env, err := decodeEnv(it.Item())
			if err != nil {
				return err
			}
			if err := fn(env); err != nil {
				return err
			}
		}
		return nil
	})
}

// Stats describe the spool for metrics and queue tools.
type Stats struct {
	Messages int       // messages spooled
	Bytes    int64     // their message bytes
	Oldest   time.Time // ReceivedAt of the oldest message (zero if none)

	LSMBytes   int64 // disk used by SSTables (allocated blocks)
	VlogBytes  int64 // disk used by value-log files (allocated blocks)
	VlogFiles  int
	OtherBytes int64 // WAL (memtables), manifest, discard stats
	DiskFree   int64 // bytes free for the spool's file system

	// Group commit: Writes requests were made durable by Commits commits.
	Commits int64
	Writes  int64
}

// Stats returns current figures; they are cheap (no body is read).
func (s *Spool) Stats() Stats {
	st := Stats{
		Messages: int(s.messages.Load()),
		Bytes:    s.bytes.Load(),
		Commits:  s.commits.Load(),
		Writes:   s.writes.Load(),
	}
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pEnv)})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			if env, err := decodeEnv(it.Item()); err == nil {
				st.Oldest = env.ReceivedAt
			}
		}
		return nil
	})
	_ = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		n := fi.Size()
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			n = sys.Blocks * 512
		}
		switch {
		case strings.HasSuffix(p, ".sst"):
			st.LSMBytes += n
		case strings.HasSuffix(p, ".vlog"):
			st.VlogBytes += n
			st.VlogFiles++
		default:
			st.OtherBytes += n
		}
		return nil
	})
	st.DiskFree, _ = freeBytes(s.dir)
	return st
}

// loadCounters counts spooled messages and bytes at Open.
func (s *Spool) loadCounters() error {
	var n, b int64
	err := s.Iterate(func(env *Envelope) error {
		n++
		b += env.Size
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: count messages: %w", err)
	}
	s.messages.Store(n)
	s.bytes.Store(b)
	return nil
}

func readEnv(txn *badger.Txn, id string) (*Envelope, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%w: invalid id %q", ErrNotFound, id)
	}
	item, err := txn.Get(envKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: read envelope %s: %w", id, err)
	}
	return decodeEnv(item)
}

func decodeEnv(item *badger.Item) (*Envelope, error) {
	env := new(Envelope)
	err := item.Value(func(v []byte) error { return json.Unmarshal(v, env) })
	if err != nil {
		return nil, fmt.Errorf("spool: decode envelope %q: %w", item.Key(), err)
	}
	return env, nil
}
