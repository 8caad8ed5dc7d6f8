package spool

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Value-log GC.
//
// Badger only knows that a value-log file holds deleted bodies after a
// compaction has dropped the keys that pointed there (levels.go updates
// the "discard stats"). With an 8 MiB memtable holding thousands of small
// envelopes, that could wait for thousands of messages, keeping gigabytes of
// delivered mail on an SD card. So when bodies were deleted since the last
// run, GC first forces the memtable to disk (DropPrefix of a sentinel key
// flushes every memtable) and lets the L0 compaction (NumLevelZeroTables=1)
// record the discards; then RunValueLogGC(0.5) rewrites and removes every
// file that is at least half garbage, until Badger finds none.
// The value-log file being written is never collected, so up to one
// ValueLogFileSize of deleted mail may stay on disk.

const gcDiscardRatio = 0.5

// gcKickInterval is the least time between two GC runs started because
// free space is below the reserve (every refused write asks for one).
const gcKickInterval = 2 * time.Second

func (s *Spool) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	if every < 0 {
		<-s.gcStop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastKick time.Time
	var later <-chan time.Time // a kick that came too soon after the last one
	for {
		select {
		case <-s.gcStop:
			return
		case <-s.gcKick:
			if wait := gcKickInterval - time.Since(lastKick); wait > 0 {
				if later == nil {
					later = time.After(wait)
				}
				continue
			}
		case <-later:
		case <-t.C:
			s.runGC()
			continue
		}
		later = nil
		s.log.Debug("spool: free space below the reserve, running value-log GC now", "reserve_bytes", s.minFree)
		s.runGC()
		lastKick = time.Now()
	}
}

// runGC runs GC once from the loop and logs what it reclaimed.
func (s *Spool) runGC() {
	before := s.Stats().VlogBytes
	err := s.GC()
	// Pages of bodies read since the last run (deliveries, GC rewrites)
	// are resident; an idle edge should not keep them.
	trimMappings(s.dir)
	if err != nil {
		s.log.Warn("spool: value-log GC", "err", err)
		return
	}
	if after := s.Stats().VlogBytes; after < before {
		s.log.Info("spool: value-log GC reclaimed space", "bytes", before-after, "vlog_bytes", after)
	}
}

// GC runs one value-log garbage collection now (the background loop calls
// it every GCInterval, and when free space falls below the reserve).
func (s *Spool) GC() error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if deleted := s.deletedSum.Load(); deleted > 0 {
		if err := s.reclaim(); err != nil {
			return err
		}
		s.deletedSum.Add(-deleted)
	}
	for {
		select {
		case <-s.gcStop:
			return nil
		default:
		}
		err := s.db.RunValueLogGC(gcDiscardRatio)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("spool: value-log GC: %w", classify(err))
		}
	}
}

// reclaim flushes the memtables so that compaction can count the deleted
// bodies, and waits (bounded) for level 0 to be compacted.
func (s *Spool) reclaim() error {
	err := s.submit(&request{exclusive: func() error {
		// DropPrefix blocks Badger's writes while it flushes; running it
		// in the committer between batches means none of ours is pending.
		if err := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(pReclam), []byte{})
		}); err != nil {
			return err
		}
		return s.db.DropPrefix([]byte(pReclam))
	}})
	if err != nil {
		return fmt.Errorf("spool: flush memtable for GC: %w", classify(err))
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if lv := s.db.Levels(); len(lv) == 0 || lv[0].NumTables == 0 {
			return nil
		}
		select {
		case <-s.gcStop:
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
