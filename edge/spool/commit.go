package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Group commit.
//
// Every write goes to one committer goroutine as a request. The committer
// takes the first request, drains whatever else is already waiting (up to
// maxBatchOps), runs them one after the other against a single Badger
// transaction and commits it once. With SyncWrites, Badger's commit returns
// after one value-log msync and one memtable-WAL msync (db.go
// writeRequests/writeToLSM, value.go valueLog.write), so every request in
// the batch shares those syncs. While a batch is being synced the next one
// accumulates in the channel: the more concurrent writers, the bigger the
// batch. When recent batches show several writers at once, the committer
// also waits briefly for one more (see linger). (Relying on Badger's own
// write-loop batching alone is not enough: it syncs the value log once per
// batch but the WAL once per transaction.)
//
// Requests see the writes of earlier requests in the same batch (the
// transaction reads its own pending writes), so a batch behaves exactly like
// the requests run one by one. A request first reads and checks, then
// returns its writes; a request that fails writes nothing.

const maxBatchOps = 128

// space is how much free-disk headroom a request needs.
type space uint8

const (
	spaceNone    space = iota // deletes, envelope rewrites: always allowed
	spaceSmall                // bucket writes: MinFree/2
	spaceReports              // reports spooled by Record: MinFree/2 plus their bytes
	spaceMinimum              // Puts: MinFree plus their own bytes
)

type mutation struct {
	key []byte
	val []byte
	del bool
}

type request struct {
	// apply reads through txn and returns the writes to make. It may be
	// run twice (if the batch had to be split) and must not have side
	// effects outside its own closure.
	apply func(txn *badger.Txn) ([]mutation, error)
	// exclusive, when set instead of apply, runs between batches while no
	// transaction is open (value-log reclaim).
	exclusive func() error
	need      space
	bytes     int64 // for spaceMinimum and spaceReports
	// lazy marks a write that may wait for company: the removal of
	// delivered mail. A batch of lazy writes only is not committed at
	// once but waits up to lazyWait for a write that is not lazy (a new
	// message, an envelope rewrite) and rides on that write's sync. The
	// caller still gets its answer only after the commit, so a message
	// stays in flight until its removal is durable.
	lazy bool
	done chan error
}

// lazyWait bounds how long a batch of lazy writes waits for company.
// Under load the next Put arrives within a few milliseconds and the
// removals share its commit; when only deliveries are running, removals
// are committed at most about every lazyWait, each commit carrying all of
// them, instead of one commit per delivery.
const lazyWait = 20 * time.Millisecond

// answer gives r its result. It also drops r's closures, and with them the
// data they hold (a Put's whole message): a batch is committed in parts
// when its bodies exceed a value-log file, and the committer keeps the
// batch until its last part is committed, so without this every message
// answered early in a big batch would stay in memory until then, outside
// the intake's budget.
func (r *request) answer(err error) {
	r.apply, r.exclusive = nil, nil
	r.done <- err
}

// submit hands r to the committer and waits for its result.
func (s *Spool) submit(r *request) error {
	r.done = make(chan error, 1)
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	s.reqs <- r
	s.closeMu.RUnlock()
	return <-r.done
}

func (s *Spool) commitLoop() {
	defer close(s.committed)
	batch := make([]*request, 0, maxBatchOps)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	avg := 1.0 // requests per batch, recent average (see linger)
	for r := range s.reqs {
		batch = s.drain(append(batch[:0], r))
		if onlyLazy(batch) && len(batch) < maxBatchOps {
			// Only removals: wait for a write that is synced now anyway,
			// or for lazyWait, then take whatever else is waiting.
			timer.Reset(lazyWait)
		wait:
			for len(batch) < maxBatchOps {
				select {
				case r, ok := <-s.reqs:
					if !ok {
						break wait
					}
					batch = append(batch, r)
					if !r.lazy {
						break wait
					}
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
			batch = s.drain(batch)
		} else if want := lingerTarget(avg); len(batch) < want {
			batch = s.linger(batch, want, timer)
		}
		if !onlyLazy(batch) {
			avg += (float64(len(batch)) - avg) / lingerAverage
		}
		s.commitBatch(batch)
		clear(batch)
	}
}

// Lingering. A batch that is not only lazy removals (it holds a Put, an
// Update, a bucket write) is committed as soon as the committer has
// drained what is waiting, unless
// recent batches show several writers at once: then the committer waits
// up to lingerMax for the batch to reach one more request than their
// average size. Under load the next writers arrive within that time and
// share the sync instead of paying for the next one; a lone writer (an
// average below lingerMin) never waits. The average follows the batches
// as committed, so when writers stop arriving within lingerMax the batches
// and with them the target shrink again.
const (
	lingerMax     = time.Millisecond
	lingerMin     = 2.0 // average batch size from which batches linger
	lingerAverage = 8   // the average weighs the last batches about 1/8 each
)

// lingerTarget is the batch size worth waiting for after batches of avg
// requests on average (0: do not wait).
func lingerTarget(avg float64) int {
	if avg < lingerMin {
		return 0
	}
	return min(int(math.Ceil(avg))+1, maxBatchOps)
}

// linger adds requests to batch until it holds want of them or lingerMax
// has passed, then whatever else is waiting.
func (s *Spool) linger(batch []*request, want int, timer *time.Timer) []*request {
	timer.Reset(lingerMax)
	defer timer.Stop()
	for len(batch) < want {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		case <-timer.C:
			return s.drain(batch)
		}
	}
	return s.drain(batch)
}

// drain adds the requests already waiting to batch, up to maxBatchOps.
func (s *Spool) drain(batch []*request) []*request {
	for len(batch) < maxBatchOps {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func onlyLazy(batch []*request) bool {
	for _, r := range batch {
		if !r.lazy {
			return false
		}
	}
	return true
}

// batchState is one open transaction of the committer.
type batchState struct {
	txn      *badger.Txn
	included []*request
	size     int64
	count    int64
	body     int64 // bytes of Puts (value-log space)
	dueWrite bool  // adds due-index entries (see duePending)
}

func (s *Spool) commitBatch(batch []*request) {
	free, ferr := s.free()
	start := free
	if ferr != nil {
		s.log.Warn("spool: cannot read free disk space", "err", ferr)
	} else if free < s.minFree {
		s.kickGC() // reclaim deleted mail's space now, not at the next GC tick
	}
	// Badger refuses a transaction above 15% of the memtable size
	// (ErrTxnTooBig); stay well below by half.
	maxSize, maxCount := s.db.MaxBatchSize()/2, s.db.MaxBatchCount()/2
	b := &batchState{txn: s.db.NewTransaction(true)}
	for _, r := range batch {
		if r.exclusive != nil {
			s.flushBatch(b)
			r.answer(r.exclusive())
			s.forgetFree()
			b = &batchState{txn: s.db.NewTransaction(true)}
			continue
		}
		if ferr == nil && !s.roomFor(r, free) {
			r.answer(fmt.Errorf("%w: %d bytes free, reserve %d", ErrFull, free, s.minFree))
			continue
		}
		muts, err := r.apply(b.txn)
		if err != nil {
			r.answer(err)
			continue
		}
		size, count := s.estimate(muts)
		// A transaction's values all land in one value-log file, so keep a
		// batch's bodies within about one file (mmap space on 32-bit ARM).
		if b.size+size > maxSize || b.count+count > maxCount || b.body+r.bytes > s.vlogMax {
			if len(b.included) > 0 {
				s.flushBatch(b)
				b = &batchState{txn: s.db.NewTransaction(true)}
				if muts, err = r.apply(b.txn); err != nil {
					r.answer(err)
					continue
				}
				size, count = s.estimate(muts)
			}
			if size > maxSize || count > maxCount {
				r.answer(fmt.Errorf("spool: write of %d bytes in %d entries is too large: %w",
					size, count, badger.ErrTxnTooBig))
				continue
			}
		}
		if err := applyMutations(b.txn, muts); err != nil {
			// The transaction now holds part of r: give up the whole batch.
			err = fmt.Errorf("spool: stage write: %w", classify(err))
			b.txn.Discard()
			if b.dueWrite {
				s.dueCommitted()
			}
			for _, q := range b.included {
				q.answer(err)
			}
			r.answer(err)
			b = &batchState{txn: s.db.NewTransaction(true)}
			continue
		}
		for _, m := range muts {
			if !m.del && len(m.key) >= len(pDue)+8 && string(m.key[:len(pDue)]) == pDue {
				s.dueWriting(binary.BigEndian.Uint64(m.key[len(pDue):]))
				b.dueWrite = true
			}
		}
		b.included = append(b.included, r)
		b.size += size
		b.count += count
		b.body += r.bytes
		if r.need == spaceMinimum || r.need == spaceReports {
			free -= r.bytes
		}
	}
	s.flushBatch(b)
	if ferr == nil {
		s.used(start - free)
	}
}

func (s *Spool) roomFor(r *request, free int64) bool {
	switch r.need {
	case spaceMinimum:
		return free-r.bytes >= s.minFree
	case spaceSmall:
		return free >= s.minFree/2
	case spaceReports:
		return free-r.bytes >= s.minFree/2
	}
	return true
}

// flushBatch commits b (one fsync for all its requests) and answers them.
func (s *Spool) flushBatch(b *batchState) {
	if len(b.included) == 0 {
		b.txn.Discard()
		return
	}
	before := s.syncErrs.Load()
	err := b.txn.Commit()
	if err == nil && s.syncErrs.Load() != before {
		// Badger logged a value-log sync failure but committed anyway: the
		// bodies may not be on disk, so do not claim durability.
		s.syncErrMu.Lock()
		msg := s.syncErr
		s.syncErrMu.Unlock()
		err = errors.New(msg)
	}
	if err != nil {
		err = fmt.Errorf("spool: commit %d writes: %w", len(b.included), classify(err))
		s.log.Error("spool write failed", "err", err)
	}
	if b.dueWrite {
		s.dueCommitted()
	}
	s.commits.Add(1)
	s.writes.Add(int64(len(b.included)))
	for _, r := range b.included {
		r.answer(err)
	}
	s.touched(b.body)
	if s.sinceAdvise += b.size + b.body; s.sinceAdvise >= adviseEvery {
		s.sinceAdvise = 0
		adviseLogs(s.dir)
	}
}

// adviseEvery is how many bytes the committer writes between two
// adviseLogs calls (one read of /proc/self/maps and a madvise per log
// file): a value-log file or memtable WAL that Badger created meanwhile
// gets its advice after at most this much of it was written.
const adviseEvery = 512 << 10

// trimEvery is how many body bytes are written or read between two
// trimMappings calls (each costs a read of /proc/self/maps and a few
// madvise calls).
const trimEvery = 1 << 20

// touched counts n body bytes written or read. Bodies go through Badger's
// shared mapping of the value log, so every page written or read stays
// resident in this process (RSS and PSS) until it is unmapped: a burst of
// mail would make the edge look as big as its queue. Every trimEvery bytes
// the pages go back to the page cache (the data stays in the file and the
// page cache; the next access maps it again).
func (s *Spool) touched(n int64) {
	if s.sinceTrim.Add(n) < trimEvery {
		return
	}
	if s.trimMu.TryLock() {
		s.sinceTrim.Store(0)
		trimMappings(s.dir)
		s.trimMu.Unlock()
	}
}

// estimate mirrors Badger's Entry.estimateSizeAndSetThreshold: values at or
// above the threshold cost only a value pointer in the transaction.
func (s *Spool) estimate(muts []mutation) (size, count int64) {
	for _, m := range muts {
		v := int64(len(m.val))
		if v >= valueThreshold {
			v = 12
		}
		size += int64(len(m.key)) + v + 2 + 8
		count++
	}
	return size, count
}

func applyMutations(txn *badger.Txn, muts []mutation) error {
	for _, m := range muts {
		var err error
		if m.del {
			err = txn.Delete(m.key)
		} else {
			err = txn.Set(m.key, m.val)
		}
		if err != nil {
			return fmt.Errorf("key %q: %w", m.key, err)
		}
	}
	return nil
}
