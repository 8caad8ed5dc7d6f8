package queue

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/dsn"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/oneline"
	"github.com/postern/postern/shared/smtpstatus"
)

// Errors of operator actions.
var (
	// ErrBusy: the message is being delivered right now; try again when
	// the attempt is over.
	ErrBusy = errors.New("queue: message is being delivered")
	// ErrHeld: the message is on hold; release it first.
	ErrHeld = errors.New("queue: message is on hold")
)

// Summary is one line of `queue list`.
type Summary struct {
	ID          string           `json:"id"`
	From        string           `json:"from"`
	ReceivedAt  time.Time        `json:"received_at"`
	NextAttempt time.Time        `json:"next_attempt"`
	Attempts    int              `json:"attempts"`
	Size        int64            `json:"size"`
	Held        bool             `json:"held,omitempty"`
	Bounce      bool             `json:"bounce,omitempty"`
	Device      string           `json:"device,omitempty"`
	InFlight    bool             `json:"in_flight,omitempty"`
	LastError   string           `json:"last_error,omitempty"`
	Recipients  []RecipientState `json:"rcpts"`
}

// RecipientState is a recipient and where it stands.
type RecipientState struct {
	Addr  string `json:"addr"`
	State string `json:"state"`
	Reply string `json:"reply,omitempty"`
}

// List summarises every spooled message, oldest first.
func (r *Runner) List() ([]Summary, error) {
	var out []Summary
	err := r.sp.Iterate(func(env *spool.Envelope) error {
		s := Summary{ID: env.ID, From: env.From, ReceivedAt: env.ReceivedAt, NextAttempt: env.NextAttempt,
			Attempts: env.Attempts, Size: env.Size, Held: env.Held, Bounce: env.Bounce, Device: env.Device, LastError: env.LastError}
		for _, rc := range env.Recipients {
			rs := RecipientState{Addr: rc.Addr, State: rc.State.String()}
			if rc.Code != 0 {
				rs.Reply = fmt.Sprintf("%d %s %s", rc.Code, rc.EnhancedCode, oneline.Fold(rc.Reply))
			}
			s.Recipients = append(s.Recipients, rs)
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue: list: %w", err)
	}
	r.mu.Lock()
	for i := range out {
		out[i].InFlight = r.inflight[out[i].ID]
	}
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReceivedAt.Before(out[j].ReceivedAt) })
	return out, nil
}

// Detail is `queue show`: the envelope and the message's header section
// (never the body).
type Detail struct {
	Envelope *spool.Envelope `json:"envelope"`
	Headers  string          `json:"headers"`
	InFlight bool            `json:"in_flight,omitempty"`
}

// Show returns the envelope and headers of id.
func (r *Runner) Show(id string) (*Detail, error) {
	env, err := r.sp.Get(id)
	if err != nil {
		return nil, err
	}
	data, err := r.sp.Data(id)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	busy := r.inflight[id]
	r.mu.Unlock()
	return &Detail{Envelope: env, Headers: string(dsn.Headers(data)), InFlight: busy}, nil
}

// withIdle runs fn on id's envelope while no delivery can start for it:
// the runner's lock is held, and a message already in flight is refused
// with ErrBusy (its delivery would overwrite the change).
func (r *Runner) withIdle(id string, fn func(env *spool.Envelope) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[id] {
		return fmt.Errorf("%s: %w", id, ErrBusy)
	}
	env, err := r.sp.Get(id)
	if err != nil {
		return err
	}
	return fn(env)
}

// Retry makes id due now. For a message being delivered right now, the
// retry happens as soon as that attempt ends (if it leaves anything to
// do); a held message must be released first.
func (r *Runner) Retry(id string) error {
	err := r.withIdle(id, func(env *spool.Envelope) error {
		if env.Held {
			return fmt.Errorf("%s: %w", id, ErrHeld)
		}
		env.NextAttempt = r.clock.Now()
		return r.sp.Update(env)
	})
	if errors.Is(err, ErrBusy) {
		r.mu.Lock()
		if r.inflight[id] {
			r.retry[id] = true
		}
		r.mu.Unlock()
		r.log.Info("operator: retry after the attempt in progress", "queue_id", id)
		return nil
	}
	if err == nil {
		signal(r.kick)
		r.log.Info("operator: retry", "queue_id", id)
	}
	return err
}

// RetryAll makes every message that is not held or in flight due now and
// returns how many it changed.
func (r *Runner) RetryAll() (int, error) {
	var ids []string
	now := r.clock.Now()
	if err := r.sp.Iterate(func(env *spool.Envelope) error {
		if !env.Held && env.NextAttempt.After(now) {
			ids = append(ids, env.ID)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("queue: retry all: %w", err)
	}
	n := 0
	for _, id := range ids {
		err := r.Retry(id)
		switch {
		case err == nil:
			n++
		case errors.Is(err, spool.ErrNotFound), errors.Is(err, ErrHeld):
		default:
			return n, err
		}
	}
	return n, nil
}

// Hold stops delivery attempts for id until Release.
func (r *Runner) Hold(id string) error {
	err := r.withIdle(id, func(env *spool.Envelope) error {
		if env.Held {
			return nil
		}
		env.Held = true
		return r.sp.Update(env)
	})
	if err == nil {
		r.log.Info("operator: hold", "queue_id", id)
	}
	return err
}

// Release lifts a hold and makes id due now.
func (r *Runner) Release(id string) error {
	err := r.withIdle(id, func(env *spool.Envelope) error {
		env.Held = false
		env.NextAttempt = r.clock.Now()
		return r.sp.Update(env)
	})
	if err == nil {
		signal(r.kick)
		r.log.Info("operator: release", "queue_id", id)
	}
	return err
}

// Delete removes id from the queue. With ndr, the sender first gets an NDR
// for every recipient still pending (status 5.0.0, "deleted by the
// operator"), as for any permanent failure. An NDR itself is always
// deleted silently (never bounce a bounce; and deleting it is not a reason
// to suspend its device).
func (r *Runner) Delete(id string, ndr bool) error {
	err := r.withIdle(id, func(env *spool.Envelope) error {
		if ndr && !env.Bounce && env.From != "" {
			now := r.clock.Now()
			var failed []int
			for i := range env.Recipients {
				rc := &env.Recipients[i]
				if rc.State.Final() {
					continue
				}
				rc.State = spool.Failed
				rc.Code, rc.EnhancedCode, rc.RemoteMTA = 550, smtpstatus.PermUndefined, ""
				rc.Reply = "deleted from the queue by the operator of " + r.o.Hostname
				if prev := env.LastError; prev != "" {
					rc.Reply = bounce.ReplyText(rc.Reply + "; last error: " + prev)
				}
				failed = append(failed, i)
			}
			if len(failed) > 0 {
				data, err := r.sp.Data(id)
				if err != nil {
					return err
				}
				// The removal and its NDR are one write.
				o := &outcome{env: env, now: now}
				if err := r.failureReport(o, data, failed, nil); err != nil {
					return err
				}
				if err := r.sp.Record(env, o.news...); err != nil {
					return err
				}
				for _, f := range o.afterReports {
					f()
				}
				return nil
			}
		}
		return r.sp.Delete(id)
	})
	if err == nil {
		r.log.Info("operator: delete", "queue_id", id, "ndr", ndr)
	}
	return err
}
