package queue

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/resolver"
)

const (
	crashDirEnv   = "POSTERN_QUEUE_CRASH_DIR"
	crashStageEnv = "POSTERN_QUEUE_CRASH_STAGE"
	crashDNSEnv   = "POSTERN_QUEUE_CRASH_DNS"
	crashPortEnv  = "POSTERN_QUEUE_CRASH_PORT"
)

// TestQueueCrashHelper is the child of TestCrashAroundOutcomeWrite: a
// runner on the parent's spool, DNS and sinks that kills itself with
// SIGKILL at the named side of the first outcome write.
func TestQueueCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashAroundOutcomeWrite")
	}
	stage := os.Getenv(crashStageEnv)
	crashPoint = func(where string) {
		if where == stage {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	port, _ := strconv.Atoi(os.Getenv(crashPortEnv))
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sp, err := spool.Open(spool.Options{Dir: dir, ValueLogFileSize: 1 << 20, GCInterval: -1, MinFree: 1})
	if err != nil {
		fail(err)
	}
	reg, err := devices.New([]config.Device{{Name: device, Senders: []string{"scanner@example.edu"}}}, sp.KV("susp/"), nil)
	if err != nil {
		fail(err)
	}
	// Generous timeouts (they only bound a hang): a lookup or reply that
	// timed out on a loaded machine would make the first outcome a retry
	// instead of the permanent failure this test crashes around.
	res, err := resolver.New(resolver.Options{Servers: []string{os.Getenv(crashDNSEnv)}, Timeout: 5 * time.Second, Attempts: 1, CacheSize: -1})
	if err != nil {
		fail(err)
	}
	dc, err := delivery.New(delivery.Options{Hostname: "edge.example.edu", Resolver: res, MXPort: port, ConnectTimeout: 10 * time.Second, CommandTimeout: 10 * time.Second})
	if err != nil {
		fail(err)
	}
	aff, _ := address.NewDomainList([]string{"example.edu"})
	r, err := New(Options{Spool: sp, Deliverer: dc, Hostname: "edge.example.edu", Delivery: config.Default(false).Delivery,
		Rules: bounce.Rules{Affiliated: aff, Devices: reg}, Suspender: reg})
	if err != nil {
		fail(err)
	}
	r.Run(context.Background())
}

// TestCrashAroundOutcomeWrite kills the edge (SIGKILL, in a child
// process) on either side of the write that records a permanent failure
// and spools its NDR, then restarts the runner on the same spool: the
// sender gets exactly one NDR either way. (With the NDR and the outcome
// as two writes, a kill between them gave two.)
func TestCrashAroundOutcomeWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	for _, stage := range []string{"before-record", "after-record"} {
		t.Run(stage, func(t *testing.T) {
			e := newEnv(t)
			e.sp.Close()
			rcptMX := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("nobody", smtpErr(550, [3]int{5, 1, 1}, "User unknown"))})
			senderMX := e.sink("127.0.0.3", deliverytest.Behaviour{})
			// Spool the message with the clock the child uses.
			sp, err := spool.Open(spool.Options{Dir: e.dir, ValueLogFileSize: 1 << 20, GCInterval: -1, MinFree: 1})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			m := &spool.Envelope{From: "scanner@example.edu", Device: device, ClientIP: "127.0.0.10", ReceivedAt: now, NextAttempt: now,
				Recipients: []spool.Recipient{{Addr: "nobody@example.com"}, {Addr: "nobody2@example.com"}}}
			if err := sp.Put(context.Background(), m, []byte(body)); err != nil {
				t.Fatal(err)
			}
			sp.Close()

			cmd := exec.Command(os.Args[0], "-test.run=^TestQueueCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+e.dir, crashStageEnv+"="+stage,
				crashDNSEnv+"="+e.dns.Addr, crashPortEnv+"="+strconv.Itoa(e.port))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("child ended with %v, not killed at %s; stderr: %s", err, stage, stderr.String())
				}
			case <-time.After(2 * time.Minute): // bounds a hang only
				cmd.Process.Kill()
				t.Fatalf("child never reached %s; stderr: %s", stage, stderr.String())
			}
			if rcptMX.Sessions() != 1 || senderMX.Sessions() != 0 {
				t.Fatalf("before restart: recipient MX %d sessions, sender MX %d", rcptMX.Sessions(), senderMX.Sessions())
			}

			// Restart on the same spool.
			e.openSpool()
			e.clock.Set(time.Now())
			e.start()
			senderMX.Wait(t, 1, 30*time.Second)
			e.eventually("spool empty", func() bool { return len(e.all()) == 0 })
			time.Sleep(200 * time.Millisecond)
			if n := len(senderMX.Messages()); n != 1 {
				t.Fatalf("the sender got %d NDRs after a crash %s, want exactly 1", n, stage)
			}
			t.Logf("crash %s: recipient MX saw %d sessions in all, sender got 1 NDR", stage, rcptMX.Sessions())
		})
	}
}
