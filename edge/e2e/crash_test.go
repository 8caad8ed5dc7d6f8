package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/spool"
)

// TestCrashLosesNothingAcknowledged runs the edge binary, sends messages
// from several concurrent clients, kill -9s the edge at a random moment,
// and checks — with the edge dead, by opening its spool directly — that
// every message that got "250" is in the spool with its bytes intact.
// Several rounds on the same data folder (each restart must also keep the
// earlier rounds' messages).
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	d := zone(t)
	// Delivery must not remove what the test checks: MX connections go
	// to a closed port (a temporary failure) and are retried much later.
	closed := freeAddr(t)
	_, port, _ := net.SplitHostPort(closed)
	e := newEdge(t, d.Addr, devices+"\n[delivery]\nmx_port = "+port+"\nretry_min = \"1h\"\nretry_max = \"2h\"\n")
	acked := map[string]string{} // queue id -> body sent
	rounds := 4
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		e.start()
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := 0; g < 6; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sender(t, e.smtp, 30+g, round, g, stop, func(id, body string) {
					mu.Lock()
					acked[id] = body
					mu.Unlock()
				})
			}()
		}
		time.Sleep(time.Duration(300+rand.IntN(900)) * time.Millisecond)
		e.kill() // SIGKILL: no clean shutdown
		close(stop)
		wg.Wait()

		sp, err := spool.Open(spool.Options{Dir: filepath.Join(e.dir, "data", "spool"), ValueLogFileSize: 8 << 20, GCInterval: -1})
		if err != nil {
			t.Fatalf("round %d: reopening spool after kill -9: %v", round, err)
		}
		for id, body := range acked {
			env, err := sp.Get(id)
			if err != nil {
				t.Errorf("round %d: acknowledged %s lost: %v", round, id, err)
				continue
			}
			data, err := sp.Data(id)
			if err != nil {
				t.Errorf("round %d: data of %s: %v", round, id, err)
				continue
			}
			if !strings.HasSuffix(string(data), body) || !strings.HasPrefix(string(data), "Received: ") || env.Size != int64(len(data)) {
				t.Errorf("round %d: %s corrupted (%d bytes, envelope says %d)", round, id, len(data), env.Size)
			}
			if len(env.Recipients) != 2 || env.From != "crash@example.edu" {
				t.Errorf("round %d: %s envelope %+v", round, id, env)
			}
		}
		sp.Close()
		t.Logf("round %d: %d acknowledged messages verified", round, len(acked))
	}
	if len(acked) < rounds {
		t.Fatalf("only %d messages acknowledged in %d rounds: the test did not exercise anything", len(acked), rounds)
	}
}

// sender sends messages on one connection (reconnecting when needed)
// until stop is closed or the edge dies, reporting each acknowledged one.
func sender(t *testing.T, addr string, src, round, g int, stop <-chan struct{}, ack func(id, body string)) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		c, err := dial(t, addr, src)
		if err != nil {
			return
		}
		if c.hello() != nil {
			c.conn.Close()
			return
		}
		for j := 0; j < 20; j++ {
			tok := fmt.Sprintf("r%d-g%d-c%d-m%d", round, g, i, j)
			body := "From: crash@example.edu\r\nSubject: " + tok + "\r\n\r\n" + strings.Repeat(tok+" payload line\r\n", 50+rand.IntN(200))
			r, err := c.transaction("crash@example.edu", []string{"a@example.edu", "b@dept.example.edu"}, body)
			if err != nil {
				c.conn.Close()
				return
			}
			if id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as "); ok {
				ack(id, body)
			}
		}
		c.cmd("QUIT")
		c.conn.Close()
	}
}
