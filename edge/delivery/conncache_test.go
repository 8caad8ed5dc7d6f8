package delivery

import (
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/delivery/deliverytest"
)

// TestConnectionReuse: messages to the same server share a connection
// while it is idle for less than ConnIdle; without reuse, or after the
// idle time, each takes its own; a refused message (5xx after DATA) leaves
// the connection usable.
func TestConnectionReuse(t *testing.T) {
	cases := []struct {
		name     string
		idle     time.Duration
		pause    time.Duration
		refuse   bool // the sink refuses the second message's data
		sessions int
	}{
		{name: "reused", idle: time.Minute, sessions: 1},
		{name: "reuse off", idle: -1, sessions: 3},
		{name: "idle too long", idle: 50 * time.Millisecond, pause: 300 * time.Millisecond, sessions: 3},
		{name: "after a refusal", idle: time.Minute, refuse: true, sessions: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.dns.AddMX("example.com", 10, "mx1.example.com")
			w.dns.AddA("mx1.example.com", "127.0.0.2")
			s := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
			c := w.client(func(o *Options) { o.ConnIdle = tc.idle })
			defer c.Close()
			for i := range 3 {
				want := Delivered
				if tc.refuse && i == 1 {
					want = Permanent
				}
				if want == Permanent {
					s.SetBehaviour(deliverytest.Behaviour{Data: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no thanks"}})
				} else {
					s.SetBehaviour(deliverytest.Behaviour{})
				}
				j := job(fmt.Sprintf("r%d@example.com", i))
				expect(t, deliver(t, c, j), want)
				time.Sleep(tc.pause)
			}
			if got := s.Sessions(); got != tc.sessions {
				t.Errorf("%d SMTP sessions, want %d", got, tc.sessions)
			}
		})
	}
}

// TestReuseOfClosedConnection: the server dropped the cached connection
// (here: it was restarted); the next message goes over a new connection
// instead of failing.
func TestReuseOfClosedConnection(t *testing.T) {
	w := newWorld(t)
	w.dns.AddMX("example.com", 10, "mx1.example.com")
	w.dns.AddA("mx1.example.com", "127.0.0.2")
	s1 := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	c := w.client(func(o *Options) { o.ConnIdle = time.Minute })
	defer c.Close()
	expect(t, deliver(t, c, job("a@example.com")), Delivered)
	s1.Close()
	s2 := w.sink("127.0.0.2", "mx1.example.com", deliverytest.Behaviour{})
	expect(t, deliver(t, c, job("b@example.com")), Delivered)
	if got := s2.Messages(); len(got) != 1 || got[0].To[0] != "b@example.com" {
		t.Fatalf("restarted server got %+v", got)
	}
}
