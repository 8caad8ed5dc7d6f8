package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/edge/bounce"
	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/dsn"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/smtpstatus"
	"github.com/postern/postern/shared/tlsinfo"
)

// deliver runs one attempt for every pending domain of env concurrently,
// frees the connection slots, and records the outcome. env stays in
// flight until the outcome is written (or the runner stops). It reports
// whether what is stored moved on: the outcome was written, or the
// message was gone.
func (r *Runner) deliver(ctx context.Context, env *spool.Envelope, domains []string) bool {
	log := r.log.With("queue_id", env.ID)
	// Take the message's bytes from the in-flight bound before reading
	// it; they are given back once the outcome is recorded (the NDR, if
	// any, is built from them).
	need := min(max(env.Size, 1), r.o.DataInFlight)
	if err := r.data.Acquire(ctx, need); err != nil {
		r.freeSlots(domains) // stopping: the message stays due on disk
		return false
	}
	defer r.data.Release(need)
	data, err := r.sp.Data(env.ID)
	if err != nil {
		r.freeSlots(domains)
		r.backOff(env.ID, "reading message failed", err)
		return errors.Is(err, spool.ErrNotFound)
	}
	dctx, cancel := context.WithTimeout(ctx, r.o.AttemptTimeout)
	defer cancel()

	jobs := map[string]*delivery.Job{}
	var order []string
	for _, rc := range env.Recipients {
		if rc.State.Final() {
			continue
		}
		d := domainOf(rc.Addr)
		j := jobs[d]
		if j == nil {
			j = &delivery.Job{QueueID: env.ID, From: env.From, Domain: d, Data: data, Ret: env.DSNRet, EnvID: env.DSNEnvID, RequireTLS: env.RequireTLS}
			jobs[d] = j
			order = append(order, d)
		}
		j.Rcpts = append(j.Rcpts, delivery.Rcpt{Addr: rc.Addr, Notify: rc.Notify, ORCPT: rc.ORCPT})
	}
	outcomes := make([]delivery.Outcome, len(order))
	var wg sync.WaitGroup
	for i, d := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = r.o.Deliverer.Deliver(dctx, jobs[d])
		}()
	}
	wg.Wait()
	if ctx.Err() == nil {
		now := r.clock.Now()
		for i, d := range order {
			if r.adapt(d, outcomes[i].Unreachable, now) {
				log.Info("domain unreachable; its other messages wait and fewer connections are opened to it",
					"domain", d, "limit", r.domainLimit(d), "retry_in", r.domainBackoff().String())
			}
		}
	}
	r.freeSlots(domains)
	signal(r.done)
	o := r.record(env, data, outcomes, ctx.Err() != nil)
	return r.commit(ctx, o, log)
}

// outcome is what one attempt changes, ready to be written in one step.
type outcome struct {
	env  *spool.Envelope
	news []spool.NewMessage
	// reported: recipients whose failure report is in news; delayed:
	// recipients whose delay notice is. If the reports find no room they
	// go back to pending / not warned.
	reported, delayed []int
	// afterReports runs once the outcome is on disk with its reports
	// (logs, metrics, events about them).
	afterReports []func()
	now          time.Time
}

// record applies the outcomes of one attempt to env and returns what to
// write. shutdown marks an attempt cut short by shutdown: its temporary
// failures are retried at once at the next start.
func (r *Runner) record(env *spool.Envelope, data []byte, outcomes []delivery.Outcome, shutdown bool) *outcome {
	now := r.clock.Now()
	o := &outcome{env: env, now: now}
	log := r.log.With("queue_id", env.ID)
	idx := map[string]int{}
	for i, rc := range env.Recipients {
		if !rc.State.Final() {
			idx[strings.ToLower(rc.Addr)] = i
		}
	}
	expired := now.Sub(env.ReceivedAt) >= r.o.Delivery.MaxQueueLifetime && !shutdown
	var failed, expiredIdx, relayed []int
	var delivered, deferred int
	lastErr := ""
	for _, out := range outcomes {
		var done []string // recipients delivered in this attempt: one log line
		doneReply := ""
		tlsLabel := "plaintext"
		switch {
		case out.TLS != "":
			tlsLabel = "tls"
		case out.Host == "":
			tlsLabel = "none"
		}
		r.o.Metrics.IncAttempt(tlsLabel)
		r.o.Metrics.IncTLSOutcome(out.Verification)
		env.History = append(env.History, spool.Attempt{At: now, Host: out.Host, TLS: out.TLS, Verification: out.Verification,
			TLSNote: bounce.ReplyText(out.TLSNote), Result: bounce.ReplyText(out.Summary)})
		for _, res := range out.Results {
			i, ok := idx[strings.ToLower(res.Addr)]
			if !ok {
				continue
			}
			rc := &env.Recipients[i]
			text := bounce.ReplyText(res.Text)
			rc.Code, rc.EnhancedCode, rc.Reply, rc.RemoteMTA, rc.UpdatedAt = res.Code, res.Enhanced, text, res.RemoteMTA, now
			switch res.Status {
			case delivery.Delivered:
				rc.State = spool.Delivered
				delivered++
				r.o.Metrics.ObserveLatency(now.Sub(env.ReceivedAt))
				if done = append(done, rc.Addr); len(done) == 1 {
					doneReply = text
				}
				if res.NoDSN && asksSuccess(rc) {
					relayed = append(relayed, i)
				}
			case delivery.Permanent:
				rc.State = spool.Failed
				failed = append(failed, i)
				log.Info("delivery failed", "rcpt", rc.Addr, "host", out.Host, "code", res.Code, "status", res.Enhanced, "reply", text)
			default:
				if lastErr == "" {
					lastErr = bounce.ReplyText(fmt.Sprintf("%d %s %s", res.Code, res.Enhanced, text))
				}
				if expired {
					rc.State = spool.Failed
					expiredIdx = append(expiredIdx, i)
					failed = append(failed, i)
					log.Info("delivery expired", "rcpt", rc.Addr, "age", now.Sub(env.ReceivedAt).String(), "last_error", text)
				} else {
					deferred++
					log.Info("delivery deferred", "rcpt", rc.Addr, "host", out.Host, "code", res.Code, "status", res.Enhanced, "reply", text)
				}
			}
		}
		if len(done) > 0 {
			log.Info("delivered", "rcpt", strings.Join(done, ","), "host", out.Host, "tls", tlsinfo.OrNone(out.TLS),
				"verification", out.Verification, "reply", doneReply)
		}
	}
	if len(env.History) > maxHistory {
		env.History = append([]spool.Attempt(nil), env.History[len(env.History)-maxHistory:]...)
	}
	env.Attempts++
	env.LastError = lastErr
	r.o.Metrics.IncDelivered(delivered)
	r.o.Metrics.IncDeferred(deferred)
	r.o.Metrics.IncBounced(len(failed))

	if len(failed) > 0 {
		if env.Bounce {
			r.reportUndeliverable(env, failed, expiredIdx, now)
		} else if err := r.failureReport(o, data, failed, expiredIdx); err != nil {
			// Without a report the failure must not be recorded: the
			// recipients stay pending and are tried (and reported) again.
			log.Error("queue: building NDR failed; recipients stay queued", "err", err)
			for _, i := range failed {
				env.Recipients[i].State = spool.Pending
			}
		}
	}
	if len(relayed) > 0 && !env.Bounce {
		r.relayedReport(o, data, relayed)
	}
	if !env.Done() {
		env.NextAttempt = r.nextAttempt(env, now)
		if shutdown {
			env.NextAttempt = now
		}
		r.delayReport(o, data)
	}
	return o
}

// commit writes o in one spool transaction. A report that finds no room
// is left out (its recipients stay queued and are reported on a later
// attempt); any other failure keeps o in memory and writes it again with
// backoff while new deliveries pause, until it succeeds or ctx ends. The
// message stays in flight meanwhile, so it is not delivered again. It
// reports whether the outcome was written or the message was gone.
func (r *Runner) commit(ctx context.Context, o *outcome, log *slog.Logger) bool {
	env := o.env
	for {
		crashPoint("before-record")
		err := r.sp.Record(env, o.news...)
		crashPoint("after-record")
		switch {
		case err == nil:
			r.recovered(env.ID)
			for _, f := range o.afterReports {
				f()
			}
			if env.Done() {
				log.Debug("removed from queue", "attempts", env.Attempts)
			} else {
				log.Debug("queued for retry", "next_attempt", env.NextAttempt)
			}
			return true
		case errors.Is(err, spool.ErrNotFound):
			log.Warn("queue: message gone before its outcome was recorded", "err", err)
			return true
		case errors.Is(err, spool.ErrFull) && len(o.news) > 0:
			log.Warn("queue: no room to spool the report; its recipients stay queued and are reported when space is back", "err", err, "reports", len(o.news))
			for _, i := range o.reported {
				env.Recipients[i].State = spool.Pending
			}
			for _, i := range o.delayed {
				env.Recipients[i].DelayWarned = false
			}
			o.news, o.reported, o.delayed, o.afterReports = nil, nil, nil, nil
			if floor := o.now.Add(r.o.Delivery.RetryMin); env.NextAttempt.Before(floor) {
				env.NextAttempt = floor
			}
			continue
		}
		d := r.pause()
		log.Error("queue: recording the attempt failed; the outcome is kept in memory and written again, no delivery starts meanwhile",
			"err", err, "retry_in", d.String())
		timer, stop := r.clock.Timer(d)
		select {
		case <-ctx.Done():
			stop()
			log.Error("queue: outcome not recorded before shutdown; the message is tried again at the next start (recipients delivered in this attempt may get a second copy)")
			return false
		case <-timer:
		}
	}
}

// crashPoint marks the two sides of the outcome write for the crash test
// (which kills the process there); it does nothing otherwise.
var crashPoint = func(string) {}

// finishStale removes a due message whose recipients are all final.
// It reports false when the removal failed (the message is backed off and
// must be looked at again).
func (r *Runner) finishStale(env *spool.Envelope) bool {
	r.mu.Lock()
	busy := r.inflight[env.ID]
	r.mu.Unlock()
	if busy {
		return true
	}
	if err := r.sp.Record(env); err != nil && !errors.Is(err, spool.ErrNotFound) {
		r.backOff(env.ID, "removing a finished message failed", err)
		return false
	}
	r.recovered(env.ID)
	r.log.Info("removed from queue", "queue_id", env.ID, "attempts", env.Attempts)
	return true
}

// failureReport adds to o the NDR for the recipients that just failed,
// if the bounce rules send one. It fails only when a report should be
// sent and could not be built.
func (r *Runner) failureReport(o *outcome, data []byte, failed, expired []int) error {
	env, now := o.env, o.now
	log := r.log.With("queue_id", env.ID)
	dec := r.o.Rules.Report(env)
	if !dec.Send && env.From == "" {
		log.Info("no NDR for a message from the null sender")
		return nil
	}
	isExpired := map[int]bool{}
	for _, i := range expired {
		isExpired[i] = true
	}
	var rcpts []dsn.Recipient
	var which []int
	for _, i := range failed {
		rc := &env.Recipients[i]
		if !bounce.Notifies(rc, "FAILURE") {
			log.Info("no NDR: recipient's NOTIFY excludes failures", "rcpt", rc.Addr)
			continue
		}
		rcpts = append(rcpts, bounce.Recipient(rc, dsn.Failed, isExpired[i], now))
		which = append(which, i)
	}
	if len(rcpts) == 0 {
		return nil
	}
	if !dec.Send {
		r.dropReport(env, "failure", dec.Why, rcpts, now)
		return nil
	}
	msg, err := bounce.Compose(r.o.Hostname, env, data, rcpts, dec.Device, env.ReceivedAt.Add(r.o.Delivery.MaxQueueLifetime), now)
	if err != nil {
		return err
	}
	o.news = append(o.news, msg)
	o.reported = append(o.reported, which...)
	o.afterReports = append(o.afterReports, func() {
		id := msg.Env.ID
		r.o.Metrics.IncNDR("failure")
		log.Info("NDR queued", "ndr_id", id, "to", env.From, "rcpts", len(rcpts), "device", dec.Device)
		r.emit(event.Event{
			Kind: event.NDR, Time: now, Device: env.Device, ClientIP: env.ClientIP, Sender: env.From,
			Recipient: rcpts[0].Addr, QueueID: env.ID, Count: len(rcpts),
			Reason: bounce.ReplyText(fmt.Sprintf("%d recipient(s) undeliverable: %s %s", len(rcpts), rcpts[0].Status, rcpts[0].Reply)),
			Detail: map[string]string{"status": string(rcpts[0].Status), "ndr_id": id},
		})
	})
	return nil
}

// delayReport adds to o one delay notice (RFC 3464 Action: delayed,
// with the next attempt, env.NextAttempt, and Will-Retry-Until, the
// expiry) for the recipients still pending once a message has waited
// delivery.delay_warning (when set): once per recipient, if its NOTIFY
// asks for delays (or is absent) and the bounce rules send reports to
// the sender.
func (r *Runner) delayReport(o *outcome, data []byte) {
	env, now := o.env, o.now
	dw := r.o.Delivery.DelayWarning
	if dw <= 0 || env.Bounce || env.From == "" || now.Sub(env.ReceivedAt) < dw {
		return
	}
	var rcpts []dsn.Recipient
	var which []int
	for i := range env.Recipients {
		rc := &env.Recipients[i]
		if rc.State.Final() || rc.DelayWarned || !bounce.Notifies(rc, "DELAY") {
			continue
		}
		rcpts = append(rcpts, bounce.Recipient(rc, dsn.Delayed, false, now))
		which = append(which, i)
	}
	if len(rcpts) == 0 {
		return
	}
	// Each recipient is considered once, sent or not.
	for _, i := range which {
		env.Recipients[i].DelayWarned = true
	}
	dec := r.o.Rules.Report(env)
	if !dec.Send {
		r.dropReport(env, "delay", dec.Why, rcpts, now)
		return
	}
	msg, err := bounce.Compose(r.o.Hostname, env, data, rcpts, dec.Device, env.ReceivedAt.Add(r.o.Delivery.MaxQueueLifetime), now)
	if err != nil {
		for _, i := range which {
			env.Recipients[i].DelayWarned = false
		}
		r.log.Error("queue: building delay notice failed", "queue_id", env.ID, "err", err)
		return
	}
	o.news = append(o.news, msg)
	o.delayed = append(o.delayed, which...)
	o.afterReports = append(o.afterReports, func() {
		r.o.Metrics.IncNDR("delay")
		r.log.Info("delay notice queued", "queue_id", env.ID, "ndr_id", msg.Env.ID, "to", env.From, "rcpts", len(rcpts))
	})
}

// dropReport logs, counts and reports a report the bounce rules do not
// send.
func (r *Runner) dropReport(env *spool.Envelope, kind, why string, rcpts []dsn.Recipient, now time.Time) {
	r.o.Metrics.IncReportDropped(kind)
	r.log.Warn("report not sent", "queue_id", env.ID, "kind", kind, "to", env.From, "client_ip", env.ClientIP,
		"device", env.Device, "rcpts", len(rcpts), "why", why)
	r.emit(event.Event{
		Kind: event.ReportDropped, Time: now, ClientIP: env.ClientIP, Sender: env.From, Recipient: rcpts[0].Addr,
		QueueID: env.ID, Count: len(rcpts), Reason: why,
		Detail: map[string]string{"kind": kind, "client_device": env.Device, "status": string(rcpts[0].Status)},
	})
}

// reportUndeliverable handles a report that failed: no report about it;
// the bounce rules decide whether the device it was for is suspended.
// The suspension and its event are written before the outcome, so a crash
// between them repeats them (harmless) rather than losing them.
func (r *Runner) reportUndeliverable(rep *spool.Envelope, failed, expired []int, now time.Time) {
	isExpired := map[int]bool{}
	for _, i := range expired {
		isExpired[i] = true
	}
	rc := &rep.Recipients[failed[0]]
	v := r.o.Rules.Undeliverable(rep, rc, isExpired[failed[0]])
	log := r.log.With("queue_id", rep.ID, "device", v.Device)
	if !v.Suspend {
		log.Warn("NDR undeliverable; no device suspended", "reason", v.Reason, "why", v.Why)
		r.emit(event.Event{
			Kind: event.NDRWarning, Time: now, Device: v.Device, Sender: rc.Addr, Recipient: rc.Addr,
			QueueID: rep.ID, Reason: v.Reason, Detail: map[string]string{"status": string(rc.EnhancedCode), "not_suspended": v.Why},
		})
		return
	}
	if r.o.Suspender != nil {
		if err := r.o.Suspender.Suspend(v.Device, v.Reason); err != nil {
			log.Error("queue: suspending device failed", "err", err)
		}
	}
	log.Warn("NDR undeliverable: device suspended", "reason", v.Reason)
	r.emit(event.Event{
		Kind: event.NDRUndeliverable, Time: now, Device: v.Device, Sender: rc.Addr, Recipient: rc.Addr,
		QueueID: rep.ID, Reason: v.Reason, Detail: map[string]string{"status": string(rc.EnhancedCode)},
	})
}

func (r *Runner) emit(e event.Event) {
	if r.o.Events == nil {
		return
	}
	e.ID = event.NewID()
	e.Edge = r.o.EdgeID
	r.o.Events.Emit(e)
}

// asksSuccess reports whether rc asked for a success notice: NOTIFY given
// and naming SUCCESS (never implied by an absent NOTIFY).
func asksSuccess(rc *spool.Recipient) bool {
	return len(rc.Notify) > 0 && bounce.Notifies(rc, "SUCCESS")
}

// relayedReport adds to o a "relayed" notice (RFC 3461 §5.2.2, RFC 3464
// Action: relayed) for recipients that asked NOTIFY=SUCCESS and were
// delivered to a next hop that does not support DSN, so will send none.
// The bounce rules decide as for any report. A notice that finds no room
// in the spool is dropped (the recipients are delivered; commit logs it).
func (r *Runner) relayedReport(o *outcome, data []byte, which []int) {
	env, now := o.env, o.now
	var rcpts []dsn.Recipient
	for _, i := range which {
		rc := bounce.Recipient(&env.Recipients[i], dsn.Relayed, false, now)
		rc.Status = smtpstatus.OK
		rcpts = append(rcpts, rc)
	}
	dec := r.o.Rules.Report(env)
	if !dec.Send {
		r.dropReport(env, "relayed", dec.Why, rcpts, now)
		return
	}
	msg, err := bounce.Compose(r.o.Hostname, env, data, rcpts, dec.Device, time.Time{}, now)
	if err != nil {
		r.log.Error("queue: building relayed notice failed", "queue_id", env.ID, "err", err)
		return
	}
	o.news = append(o.news, msg)
	o.afterReports = append(o.afterReports, func() {
		r.o.Metrics.IncNDR("relayed")
		r.log.Info("relayed notice queued", "queue_id", env.ID, "ndr_id", msg.Env.ID, "to", env.From, "rcpts", len(rcpts))
	})
}
