package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const recordCrashEnv = "POSTERN_SPOOL_RECORD_CRASH_DIR"

// TestRecordHelperProcess is the child of TestCrashRecordIsAtomic: 8
// goroutines each Put a message with two recipients, then Record one of
// them failed together with a report naming the original (DSNEnvID),
// then Record the other failed with a second report (removing the
// original). It prints "P id" after the Put returned.
func TestRecordHelperProcess(t *testing.T) {
	dir := os.Getenv(recordCrashEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashRecordIsAtomic")
	}
	s, err := Open(testOptions(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	ack := func(id string) {
		outMu.Lock()
		defer outMu.Unlock()
		_, _ = os.Stdout.WriteString("P " + id + "\n")
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for {
				env := &Envelope{From: "dev@example.edu", ReceivedAt: time.Now(), NextAttempt: time.Now(),
					Recipients: []Recipient{{Addr: "a@example.org"}, {Addr: "b@example.org"}}}
				if err := s.Put(context.Background(), env, crashBody(r)); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(3)
				}
				ack(env.ID)
				for i := range env.Recipients {
					env.Recipients[i].State = Failed
					rep := &Envelope{Bounce: true, DSNEnvID: env.ID + "/" + fmt.Sprint(i), ReceivedAt: time.Now(), NextAttempt: time.Now(),
						Recipients: []Recipient{{Addr: "dev@example.edu"}}}
					if err := s.Record(env, NewMessage{Env: rep, Data: crashBody(r)}); err != nil {
						fmt.Fprintln(os.Stderr, "record:", err)
						os.Exit(3)
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestCrashRecordIsAtomic kills a child that records outcomes with their
// reports (SIGKILL at a random moment, several rounds on one directory),
// reopens the spool and checks that each outcome and its report are on
// disk together or not at all: a report exists exactly when the
// recipient it reports is recorded as failed.
func TestCrashRecordIsAtomic(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	put := map[string]bool{}
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRecordHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), recordCrashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		if _, ok := <-lines; !ok {
			_ = cmd.Wait()
			t.Fatalf("round %d: child printed nothing; stderr: %s", round, stderr.String())
		}
		kill := time.After(time.Duration(200+rand.IntN(800)) * time.Millisecond)
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				if id, ok := strings.CutPrefix(l, "P "); ok {
					put[id] = true
				}
			case <-kill:
				_ = cmd.Process.Kill()
				kill = nil
			}
		}
		if err := cmd.Wait(); !strings.Contains(fmt.Sprint(err), "killed") {
			t.Fatalf("round %d: child ended with %v before the kill; stderr: %s", round, err, stderr.String())
		}

		s, err := Open(testOptions(dir))
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		originals := map[string]*Envelope{}
		reports := map[string]int{} // "id/recipient index" -> count
		if err := s.Iterate(func(env *Envelope) error {
			if env.Bounce {
				reports[env.DSNEnvID]++
			} else {
				originals[env.ID] = env
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var removed, half, whole int
		for id := range put {
			env, present := originals[id]
			for i := range 2 {
				failed := !present || env.Recipients[i].State == Failed
				n := reports[fmt.Sprintf("%s/%d", id, i)]
				switch {
				case failed && n != 1:
					t.Errorf("round %d: %s recipient %d recorded failed with %d reports", round, id, i, n)
				case !failed && n != 0:
					t.Errorf("round %d: %s recipient %d still pending with %d reports", round, id, i, n)
				}
			}
			switch {
			case !present:
				removed++
			case env.Recipients[0].State == Failed:
				half++
			default:
				whole++
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d messages: %d finished (original removed, 2 reports), %d half recorded (1 report), %d untouched (none); %d reports in all",
			round, len(put), removed, half, whole, len(reports))
		if t.Failed() {
			return
		}
	}
}
