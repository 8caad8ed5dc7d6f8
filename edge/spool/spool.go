// Package spool is the edge's durable mail queue, kept in one Badger
// database under the data folder.
//
// A spooled message is an Envelope (sender, recipients and their states,
// client identity, schedule) plus the message bytes. The package guarantees:
//
//   - Put, Update, Delete, Record and Bucket.Set/Delete return only after
//     their write is fsynced. Concurrent writers share fsyncs: one committer
//     goroutine gathers every write that is waiting into one Badger
//     transaction and syncs it once (group commit), so N concurrent Puts cost
//     one value-log sync and one WAL sync, not N. Removals of finished
//     mail wait up to a few milliseconds for a write that needs a sync
//     anyway and share it, instead of costing syncs of their own.
//   - Due, NextDue and DueFeed walk a separate index ordered by next
//     attempt time and never read message bodies. Index entries list the
//     message's pending domains, and a DueFeed hands a reader that keeps
//     them in memory (the queue runner) only the entries it has not seen,
//     without decoding envelopes, so it need not walk a backlog again on
//     every look.
//   - Record writes a delivery attempt's outcome and the reports it
//     generated (NDRs, delay notices) in one transaction: after a crash
//     either both are on disk or neither, so a report is never spooled
//     twice for one failure.
//   - When the disk is (nearly) full a write fails with ErrFull instead of
//     crashing: Badger writes through mmap, where a real ENOSPC would be a
//     SIGBUS, so the spool refuses new mail while free space is below a
//     reserve (Options.MinFree), like Postfix's queue_minfree. Writes
//     about mail already accepted (Update, Delete, the outcome part of
//     Record) never wait for the reserve: it is kept for them.
//   - Deleted mail's space comes back: a value-log GC runs every GCInterval,
//     and at once when free space falls below the reserve.
//
// One process owns the Badger lock; other edge packages that need durable
// state (suspensions, the persisted allowlist, the event outbox) get a
// namespaced Bucket in the same database through KV.
package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Errors returned by the spool. Test them with errors.Is.
var (
	// ErrNotFound: no message (or bucket key) with that id.
	ErrNotFound = errors.New("spool: not found")
	// ErrFull: the disk is full or below the free-space reserve; the
	// intake answers 452 4.3.1.
	ErrFull = errors.New("spool: insufficient storage")
	// ErrExists: Put of an id that is already spooled.
	ErrExists = errors.New("spool: id already spooled")
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool: closed")
)

// Options configure Open. Zero values take the defaults noted per field.
type Options struct {
	// Dir holds the Badger files (normally <data_dir>/spool).
	Dir string
	// ValueLogFileSize caps one value-log file (spool.value_log_file_size,
	// default 64 MiB). Space is reclaimed a whole file at a time, so
	// smaller files give space back sooner; the file being written is never
	// collected.
	ValueLogFileSize int64
	// GCInterval is how often value-log GC runs (spool.gc_interval,
	// default 5m). Negative disables the background GC (tests call GC).
	GCInterval time.Duration
	// Log receives the spool's and Badger's warnings (default
	// slog.Default()).
	Log *slog.Logger
	// Clock is used for queue ids (default time.Now).
	Clock func() time.Time
	// MinFree is the free disk space (bytes) a Put must leave behind
	// (spool.min_free; 0 = AutoMinFree of the volume: room for Badger to
	// flush memtables and for value-log GC, see disk.go). Below it Put
	// fails with ErrFull. Bucket writes and the reports Record spools need
	// MinFree/2; Updates, Deletes and the outcome part of Record always
	// run. The reserve is not optional: Badger writes through mmap into
	// sparse files, so a truly full disk is not an ENOSPC error but a
	// SIGBUS that kills the process (seen on a full tmpfs while Badger
	// flushed a memtable into an SSTable). When free space falls below it,
	// value-log GC runs at once instead of waiting for GCInterval.
	MinFree int64
}

// Tuning that is not configurable: chosen for a Raspberry Pi edge whose
// LSM tree holds only small envelopes, index keys and value pointers.
const (
	// memTableSize: 2 MiB still holds a few thousand messages' envelopes
	// and index keys. Each memtable is an arena of 1.3 times this size,
	// allocated on the Go heap, plus a WAL file of twice it. The arena
	// counts as live heap however little of it is used, and the collector
	// lets garbage grow to as much as is live, so every MiB here costs
	// about two resident MiB of heap (with 8 MiB an idle edge held 10 MiB
	// of garbage more). Smaller memtables flush more often, but an
	// SSTable flush is one sync per few thousand messages. Commit batches
	// stay below 7.5% of this (ErrTxnTooBig), which is 150 KiB of
	// envelopes and value pointers (default 64 MiB).
	memTableSize = 2 << 20
	// numMemtables: one active and one being flushed (default 5).
	numMemtables = 2
	// numLevelZeroTables: compact every flushed memtable straight away; the
	// tree is small, and compaction is what tells value-log GC which files
	// hold deleted bodies (default 5).
	numLevelZeroTables = 1
	// numLevelZeroTablesStall: writes stall only if compaction falls far
	// behind (default 15).
	numLevelZeroTablesStall = 8
	// baseTableSize / baseLevelSize: small SSTables, small first level
	// (defaults 2 MiB / 10 MiB).
	baseTableSize = 1 << 20
	baseLevelSize = 4 << 20
	// valueThreshold: values of 1 KiB and more (message bodies) go to the
	// value log, so the LSM tree stays small and GC can reclaim bodies; most
	// envelopes stay inline and a due-scan reads no value-log pages
	// (default 1 MiB would put whole messages into the LSM tree).
	valueThreshold = 1 << 10
	// numCompactors: Badger's minimum is 2 (one for L0); default 4.
	numCompactors = 2
	// chunkMax: bodies are stored in chunks so that no value exceeds the
	// value-log file size and GC moves bounded pieces.
	chunkMax = 1 << 20
)

// Spool is an open spool. Its methods are safe for concurrent use.
type Spool struct {
	db      *badger.DB
	dir     string
	log     *slog.Logger
	clock   func() time.Time
	minFree int64
	vlogMax int64
	chunk   int

	reqs      chan *request
	closeMu   sync.RWMutex
	closed    bool
	committed chan struct{} // closed when the committer exits
	gcStop    chan struct{}
	gcDone    chan struct{}
	gcKick    chan struct{} // free space fell below the reserve: GC now
	gcMu      sync.Mutex

	wake chan struct{}

	// duePending is the lowest due-index key (its time part) of the
	// batch the committer is writing, MaxUint64 between batches, and
	// dueFeeds the open DueFeeds, whose low marks the committer lowers
	// before each commit (see DueFeed.Scan). dueMu guards both and the
	// feeds' marks.
	dueMu      sync.Mutex
	duePending uint64
	dueFeeds   []*DueFeed

	idMu   sync.Mutex
	lastID uint64 // low 64 bits of the last id; see NewID
	lastHi uint64

	messages   atomic.Int64
	bytes      atomic.Int64
	deletedSum atomic.Int64 // body bytes deleted since the last reclaim

	sinceTrim   atomic.Int64 // body bytes written or read since the last trimMappings
	sinceAdvise int64        // bytes committed since the last adviseLogs (committer only)
	trimMu      sync.Mutex   // one trim at a time

	freeMu  sync.Mutex // the free-space estimate (see free)
	freeVal int64
	freeErr error
	freeAt  time.Time

	commits   atomic.Int64 // Badger transactions committed by the committer
	writes    atomic.Int64 // requests those transactions carried
	syncErrs  atomic.Int64 // value-log sync failures Badger only logged
	syncErrMu sync.Mutex
	syncErr   string
}

// Open opens (creating if needed) the spool in opts.Dir and starts the
// committer and the value-log GC.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: Options.Dir is empty")
	}
	if opts.ValueLogFileSize == 0 {
		opts.ValueLogFileSize = 64 << 20
	}
	if opts.ValueLogFileSize < 1<<20 {
		return nil, fmt.Errorf("spool: value log file size %d below 1 MiB", opts.ValueLogFileSize)
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = 5 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", opts.Dir, classify(err))
	}
	if opts.MinFree < 0 {
		return nil, fmt.Errorf("spool: negative free-space reserve %d", opts.MinFree)
	}
	if opts.MinFree == 0 {
		_, total, _ := statfs(opts.Dir)
		opts.MinFree = AutoMinFree(total, opts.ValueLogFileSize)
	}
	s := &Spool{
		dir:       opts.Dir,
		log:       opts.Log.With("component", "spool"),
		clock:     opts.Clock,
		minFree:   opts.MinFree,
		vlogMax:   opts.ValueLogFileSize,
		chunk:     int(min(chunkMax, opts.ValueLogFileSize/2)),
		reqs:      make(chan *request, 256),
		committed: make(chan struct{}),
		gcStop:    make(chan struct{}),
		gcDone:    make(chan struct{}),
		gcKick:    make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),

		duePending: math.MaxUint64,
	}
	if err := removeEmptyLogs(opts.Dir, s.log); err != nil {
		return nil, err
	}
	db, err := badger.Open(s.badgerOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("spool: open badger in %s: %w", opts.Dir, classify(err))
	}
	s.db = db
	if err := s.loadCounters(); err != nil {
		_ = db.Close()
		return nil, err
	}
	// Opening read the whole last value-log file; give those pages back.
	trimMappings(s.dir)
	adviseLogs(s.dir)
	s.checkVolume()
	go s.commitLoop()
	go s.gcLoop(opts.GCInterval)
	return s, nil
}

// badgerOptions states every Badger option that differs from its default
// and why (see also the constants above).
func (s *Spool) badgerOptions(o Options) badger.Options {
	return badger.DefaultOptions(o.Dir).
		// Durability: Badger's write loop msyncs the value log and the
		// memtable WAL before a commit returns. The committer makes each
		// commit carry every waiting write, so the sync is shared.
		WithSyncWrites(true).
		// Only the committer goroutine writes, so transactions cannot
		// conflict; skipping conflict tracking saves memory and CPU.
		WithDetectConflicts(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(numLevelZeroTables).
		WithNumLevelZeroTablesStall(numLevelZeroTablesStall).
		WithBaseTableSize(baseTableSize).
		WithBaseLevelSize(baseLevelSize).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithNumCompactors(numCompactors).
		// Envelopes are small JSON and bodies are mostly compressed
		// attachments: compression would cost CPU and force a block cache.
		WithCompression(options.None).
		// Without compression or encryption Badger reads SSTables straight
		// from mmap, so no block cache is needed (default 256 MiB); table
		// indexes stay in memory (0 = no index cache), which is small for a
		// small tree.
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		// expvar metrics are global and unused (Stats measures files).
		WithMetricsEnabled(false).
		// Compact L0 on close so a restart opens a tidy tree.
		WithCompactL0OnClose(true).
		// Badger's own messages go to slog; info/debug are dropped.
		WithLogger(&badgerLogger{s: s}).
		WithLoggingLevel(badger.WARNING)
}

// Close stops the GC, lets queued writes finish, and closes Badger.
func (s *Spool) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.gcStop)
	<-s.gcDone
	close(s.reqs) // no sender can be in flight: they hold closeMu.RLock
	<-s.committed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool: close badger: %w", err)
	}
	return nil
}

// removeEmptyLogs deletes zero-length value-log and memtable-WAL files.
// Badger creates such a file (O_EXCL) and then sizes it; a crash between
// the two leaves an empty file that Badger then refuses to open ("Open
// existing file ... Create a new file" / "while opening memtables"), as the
// crash test found. An empty file holds no data, so removing it loses
// nothing.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spool: read %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".vlog") || strings.HasSuffix(e.Name(), ".mem")) {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("spool: remove empty log %s: %w", p, err)
		}
		log.Warn("spool: removed empty log file left by a crash", "file", p)
	}
	return nil
}

// badgerLogger routes Badger's logging to slog at warning level and up.
// It also notices value-log sync failures, which Badger logs but does not
// return to the committing transaction (value.go, valueLog.write).
type badgerLogger struct{ s *Spool }

func (l *badgerLogger) Errorf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	if containsFold(msg, "sync") {
		l.s.syncErrMu.Lock()
		l.s.syncErr = msg
		l.s.syncErrMu.Unlock()
		l.s.syncErrs.Add(1)
	}
	l.s.log.Error("badger", "msg", trimNL(msg))
}
func (l *badgerLogger) Warningf(f string, a ...any) {
	l.s.log.Warn("badger", "msg", trimNL(fmt.Sprintf(f, a...)))
}
func (l *badgerLogger) Infof(string, ...any)  {}
func (l *badgerLogger) Debugf(string, ...any) {}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
