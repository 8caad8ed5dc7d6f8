package spool

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test runs the spool in a child process (this test binary,
// re-executed into TestHelperProcess) that Puts messages from many
// goroutines, deletes some and runs value-log GC continuously. The child
// prints "P id" only after Put returned, "d id" before Delete and "D id"
// after Delete returned.
// The parent kills it with SIGKILL at a random moment, reopens the spool
// and checks that every acknowledged message is there with the SHA-256
// its data carries, that every acknowledged delete stuck, and that no
// message is half-written. Rounds reuse the directory, so each one also
// recovers from the previous crash.
//
// SIGKILL loses the process, not the kernel's page cache, so this proves
// that Put returns only after the write reached the files (nothing is
// buffered in the process) and that Badger recovers from a crash at any
// point; that the files are also fsynced is Badger's SyncWrites, which
// the group-commit test and the benchmark show is shared.

const crashEnv = "POSTERN_SPOOL_CRASH_DIR"

// crashBody builds a message whose first line carries the SHA-256 of
// the rest, so its integrity can be checked without other state.
func crashBody(r *rand.Rand) []byte {
	rest := make([]byte, 1024+r.IntN(150<<10))
	for i := range rest {
		rest[i] = byte('a' + r.IntN(26))
	}
	sum := sha256.Sum256(rest)
	return append([]byte("X-Sum: "+hex.EncodeToString(sum[:])+"\r\n"), rest...)
}

func checkCrashBody(d []byte) error {
	line, rest, ok := bytes.Cut(d, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte("X-Sum: ")) {
		return fmt.Errorf("no checksum line in %d bytes", len(d))
	}
	sum := sha256.Sum256(rest)
	if string(line[len("X-Sum: "):]) != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("checksum mismatch over %d bytes", len(rest))
	}
	return nil
}

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashKeepsAcknowledgedMail")
	}
	opts := testOptions(dir)
	opts.GCInterval = 50 * time.Millisecond
	s, err := Open(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	ack := func(kind, id string) {
		outMu.Lock()
		defer outMu.Unlock()
		_, _ = os.Stdout.WriteString(kind + " " + id + "\n") // one write(2) per line
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				env := &Envelope{From: "dev@example.edu", ReceivedAt: time.Now(), NextAttempt: time.Now(),
					Recipients: []Recipient{{Addr: fmt.Sprintf("r%d@example.org", i)}}}
				if err := s.Put(context.Background(), env, crashBody(r)); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(3)
				}
				ack("P", env.ID)
				if i%4 == 0 {
					ack("d", env.ID) // a delete in flight at the kill may or may not stick
					if err := s.Delete(env.ID); err != nil {
						fmt.Fprintln(os.Stderr, "delete:", err)
						os.Exit(3)
					}
					ack("D", env.ID)
				}
			}
		})
	}
	wg.Wait()
}

func TestCrashKeepsAcknowledgedMail(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	const rounds = 5
	put, deleting, deleted := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
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
		// Kill at a random moment after the first acknowledgement.
		first, ok := <-lines
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("round %d: child printed nothing; stderr: %s", round, stderr.String())
		}
		kill := time.After(time.Duration(100+rand.IntN(900)) * time.Millisecond)
		var acks []string
		acks = append(acks, first)
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				acks = append(acks, l)
			case <-kill:
				_ = cmd.Process.Kill() // SIGKILL
				kill = nil
			}
		}
		err = cmd.Wait()
		if !strings.Contains(fmt.Sprint(err), "killed") {
			t.Fatalf("round %d: child ended with %v before the kill; stderr: %s", round, err, stderr.String())
		}
		var nPut, nDel int
		for _, l := range acks {
			kind, id, _ := strings.Cut(l, " ")
			switch kind {
			case "P":
				put[id] = true
				nPut++
			case "d":
				deleting[id] = true
			case "D":
				deleted[id] = true
				nDel++
			default:
				t.Fatalf("round %d: bad line %q", round, l)
			}
		}

		s, err := Open(testOptions(dir))
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		for id := range put {
			d, err := s.Data(id)
			switch {
			case deleted[id] && err == nil:
				t.Errorf("round %d: %s was deleted (acknowledged) but is back", round, id)
			case deleting[id] && !deleted[id] && err != nil:
				// deleted just before the kill, not yet acknowledged
			case !deleted[id] && err != nil:
				t.Errorf("round %d: acknowledged %s lost: %v", round, id, err)
			case !deleted[id]:
				if err := checkCrashBody(d); err != nil {
					t.Errorf("round %d: acknowledged %s damaged: %v", round, id, err)
				}
			}
		}
		// Whatever else survived (Puts in flight at the kill) is whole.
		var total, unacked int
		err = s.Iterate(func(env *Envelope) error {
			total++
			if !put[env.ID] {
				unacked++
			}
			d, err := s.Data(env.ID)
			if err != nil {
				return fmt.Errorf("%s: %w", env.ID, err)
			}
			if int64(len(d)) != env.Size {
				return fmt.Errorf("%s: %d bytes, envelope says %d", env.ID, len(d), env.Size)
			}
			return checkCrashBody(d)
		})
		if err != nil {
			t.Errorf("round %d: half-written message: %v", round, err)
		}
		if st := s.Stats(); st.Messages != total {
			t.Errorf("round %d: Stats.Messages %d, Iterate saw %d", round, st.Messages, total)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		t.Logf("round %d: killed after %d acknowledged puts and %d deletes; spool holds %d messages (%d put but not yet acknowledged), all intact",
			round, nPut, nDel, total, unacked)
		if t.Failed() {
			return
		}
	}
}
