package spool

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// benchPut measures Puts of 10 KB messages into a spool on the real disk
// with production options, and reports messages per second and how many
// Puts each commit (one value-log sync + one WAL sync) carried.
func benchPut(b *testing.B, parallelism int) {
	s, err := Open(Options{Dir: b.TempDir(), GCInterval: -1, MinFree: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := body(10<<10, 1)
	put := func() {
		env := &Envelope{From: "scanner@example.edu", ReceivedAt: time.Now(), NextAttempt: time.Now(),
			Recipients: []Recipient{{Addr: "someone@example.org"}}}
		if err := s.Put(context.Background(), env, data); err != nil {
			b.Error(err)
		}
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	if parallelism == 0 {
		for b.Loop() {
			put()
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				put()
			}
		})
	}
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Writes)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Writes)/float64(max(1, st.Commits)), "puts/commit")
}

// BenchmarkPutParallel: SetParallelism(32), i.e. 32×GOMAXPROCS writers.
func BenchmarkPutParallel(b *testing.B) { benchPut(b, 32) }

// BenchmarkPutSerial: one writer, so one sync per Put (the baseline).
func BenchmarkPutSerial(b *testing.B) { benchPut(b, 0) }
