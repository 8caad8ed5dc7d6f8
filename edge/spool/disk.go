package spool

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// freeBytes is the space an unprivileged writer may still use in dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
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
