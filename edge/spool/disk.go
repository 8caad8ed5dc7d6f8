package spool

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// Free-space reserve.
//
// Badger writes through mmap into sparse files, so running out of space is
// not an ENOSPC error but a SIGBUS; the spool therefore refuses new mail
// while free space is below a reserve (spool.min_free, Options.MinFree),
// like Postfix's queue_minfree. The reserve must hold what Badger writes
// before space can come back: a memtable flushed to an SSTable while the
// next memtable's WAL fills (2 × memTableSize), and value-log GC copying
// the live half of a file before it deletes it (ValueLogFileSize / 2).
// On a small volume that automatic figure is capped at a quarter of the
// volume (never below one memtable), so a 32 MiB card still takes mail.

// AutoMinFree is the reserve used when Options.MinFree is 0, for a
// volume of total bytes (0 = unknown) and the given value-log file size.
func AutoMinFree(total, valueLogFileSize int64) int64 {
	r := 2*memTableSize + valueLogFileSize/2
	if total > 0 && r > total/4 {
		r = max(total/4, memTableSize)
	}
	return r
}

// statfs returns the space an unprivileged writer may still use in dir
// and the size of its file system.
func statfs(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// freeBytes is the space an unprivileged writer may still use in dir.
func freeBytes(dir string) (int64, error) {
	free, _, err := statfs(dir)
	return free, err
}

// freeEvery is how long a free-space reading is used before the file
// system is asked again, while free space is far above the reserve (by
// more than freeMargin beyond it). Between readings the spool subtracts
// what it writes, so the estimate errs on the side of less free space; a
// reclaim (value-log GC) forgets the reading at once. Near the reserve
// every check reads the file system, so space taken by other writers on
// the volume is seen at once where it matters.
const (
	freeEvery  = time.Second
	freeMargin = 64 << 20
)

// free returns the estimated free space of the spool's volume (a
// statfs at most every freeEvery, less the bytes written since).
func (s *Spool) free() (int64, error) {
	s.freeMu.Lock()
	defer s.freeMu.Unlock()
	now := time.Now()
	if s.freeErr == nil && !s.freeAt.IsZero() && now.Sub(s.freeAt) < freeEvery &&
		s.freeVal >= 2*s.minFree+freeMargin {
		return s.freeVal, nil
	}
	v, err := freeBytes(s.dir)
	s.freeVal, s.freeErr, s.freeAt = v, err, now
	return v, err
}

// used lowers the free-space estimate by n bytes just written.
func (s *Spool) used(n int64) {
	s.freeMu.Lock()
	s.freeVal -= n
	s.freeMu.Unlock()
}

// forgetFree makes the next free() read the file system again.
func (s *Spool) forgetFree() {
	s.freeMu.Lock()
	s.freeAt = time.Time{}
	s.freeMu.Unlock()
}

// MinFree is the free-space reserve in bytes: below it new mail is
// refused (ErrFull, 452 4.3.1).
func (s *Spool) MinFree() int64 { return s.minFree }

// BelowReserve reports whether free space is already below the reserve,
// so that the intake can refuse at MAIL/RCPT instead of after the whole
// upload. When it is, value-log GC is started at once to reclaim the space
// of mail deleted since the last run. An unreadable file system counts as
// not below (the write itself will then tell).
func (s *Spool) BelowReserve() bool {
	free, err := s.free()
	if err != nil || free >= s.minFree {
		return false
	}
	s.kickGC()
	return true
}

// kickGC asks the GC loop to run now (see gcLoop for the rate limit).
func (s *Spool) kickGC() {
	select {
	case s.gcKick <- struct{}{}:
	default:
	}
}

// checkVolume warns at start when the volume is small for the reserve or
// already below it.
func (s *Spool) checkVolume() {
	free, total, err := statfs(s.dir)
	if err != nil {
		s.log.Warn("spool: cannot read the volume's size", "err", err)
		return
	}
	s.log.Info("spool: free-space reserve", "reserve_bytes", s.minFree, "free_bytes", free, "volume_bytes", total)
	// A reserve scaled down to the volume (AutoMinFree) is warned about too.
	if need := max(s.minFree, AutoMinFree(0, s.vlogMax)); total < 4*need {
		s.log.Warn("spool: the volume is small for the free-space reserve; mail is refused (452) while free space is below it",
			"volume_bytes", total, "reserve_bytes", s.minFree, "free_bytes", free,
			"hint", "lower spool.value_log_file_size, or set spool.min_free, or use a larger volume")
	}
	if free < s.minFree {
		s.log.Warn("spool: free space is below the reserve at start; new mail is refused (452) until space is freed",
			"free_bytes", free, "reserve_bytes", s.minFree)
	}
}

// classify marks errors that mean "out of space" with ErrFull, keeping the
// original in the chain. Badger formats some errors with %v (losing the
// errno), so the text is checked too.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrFull) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		containsFold(err.Error(), "no space left on device") ||
		containsFold(err.Error(), "disk quota exceeded") {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}
