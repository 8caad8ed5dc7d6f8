// Package bounce holds the edge's rules for the reports it generates from
// a transaction (non-delivery reports, delay and relayed notices) and for the
// suspensions a failed report causes. They are the two places where a
// stranger could otherwise turn the edge against someone: a report is
// mail the edge sends on its own, to an address someone else typed.
//
// Who gets a report (Rules.Report):
//   - Never a report about a report (an envelope marked Bounce) and never
//     one to the null sender.
//   - A recipient whose NOTIFY excludes the kind gets none (Notifies).
//   - A sender in the affiliated domains gets its reports: they stay
//     inside the organisation.
//   - A sender outside the affiliated domains gets a report only when the
//     transaction came from a registered, active device using one of its
//     registered senders. The rule checks the device table itself when
//     the report is due, whatever the envelope says: the device must
//     still be registered and active and the sender still in its list.
//     Any other report is dropped (logged with the queue id, counted, and
//     reported to central as event.ReportDropped). Without this, a client
//     that is not registered could send MAIL FROM:<victim@example.com>
//     RET=FULL to a mailbox that does not exist and have the edge mail the
//     whole payload to the victim inside an NDR.
//
// Who gets suspended (Rules.Undeliverable), when a report could not be
// delivered:
//   - Only a device whose own registered sender the report was for: the
//     report names the device (Envelope.BounceFor, set by Report only in
//     that case), and at failure time the device must still be registered
//     and the address still in its sender list.
//   - Only when the sender's mail system refused the report permanently
//     because of the address itself (AddressRefused): the mailbox or the
//     domain does not exist or is disabled. A refusal for size (552,
//     5.2.2 mailbox full, 5.2.3, 5.3.4), for policy or content (5.7.x),
//     or of any other kind, and a report that expired because the
//     sender's domain could not be reached, never suspend: such refusals
//     can be caused by third parties (filling a mailbox, a hostile MX, a
//     network outage). They are logged as warnings and reported to
//     central as event.NDRWarning.
//   - A transaction whose sender was not in the device's list never
//     suspends the device; nor does a report to an affiliated sender that
//     belongs to no device.
//
// Report text is bounded everywhere it is stored or sent (ReplyText).
package bounce

import (
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/edge/delivery"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/dsn"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/smtpstatus"
)

// Devices is the device table the rules consult (*devices.Table).
type Devices interface {
	Lookup(name string) (devices.Device, bool)
}

// Rules decide who gets a report and who gets suspended. The zero value
// sends no report at all (no domain is affiliated, no device registered)
// and suspends nobody.
type Rules struct {
	// Affiliated is the organisation's domain list (smtp.affiliated_domains).
	Affiliated address.DomainList
	// Devices is the device table; nil means no device is registered.
	Devices Devices
}

// Decision says whether a report about a transaction is sent to its
// sender.
type Decision struct {
	Send bool
	// Device is the registered device whose registered sender the report
	// goes to, "" when the sender is not one (Envelope.BounceFor).
	Device string
	// Why explains a report not sent (for logs and the event).
	Why string
}

// Report decides whether a report (NDR or delay notice) about env goes
// to env.From.
func (r *Rules) Report(env *spool.Envelope) Decision {
	switch {
	case env.Bounce:
		return Decision{Why: "never a report about a report"}
	case env.From == "":
		return Decision{Why: "no report to the null sender"}
	}
	dev := r.registeredSender(env.Device, env.From)
	if dev != "" || r.affiliated(env.From) {
		return Decision{Send: true, Device: dev}
	}
	why := fmt.Sprintf("sender %s is outside the affiliated domains and the message did not come from a registered, active device using one of its registered senders", env.From)
	if env.Device != "" {
		why += " (client " + env.Device + ")"
	}
	return Decision{Why: why}
}

// registeredSender returns the canonical name of device when it is
// registered, active, and lists sender; otherwise "".
func (r *Rules) registeredSender(device, sender string) string {
	if device == "" || r.Devices == nil {
		return ""
	}
	d, ok := r.Devices.Lookup(device)
	if !ok || !d.Active() || !listed(d.Senders, sender) {
		return ""
	}
	return d.Name
}

// listed compares addresses as intake does: local part case-insensitively,
// domain in canonical form.
func listed(senders []string, addr string) bool {
	a, err := address.ParsePath(addr)
	if err != nil {
		return false
	}
	for _, s := range senders {
		b, err := address.ParsePath(s)
		if err == nil && strings.EqualFold(a.Local, b.Local) && a.Domain == b.Domain {
			return true
		}
	}
	return false
}

func (r *Rules) affiliated(addr string) bool {
	a, err := address.ParsePath(addr)
	return err == nil && r.Affiliated.Contains(a.Domain)
}

// Verdict is what a report that could not be delivered means.
type Verdict struct {
	// Suspend: suspend Device.
	Suspend bool
	// Device is the device the report was for ("" when none).
	Device string
	// Reason is the bounded one-line explanation (suspension reason, log,
	// event).
	Reason string
	// Why says, when Suspend is false, why not.
	Why string
}

// Undeliverable decides what it means that report (an envelope marked
// Bounce) could not be delivered to rc: permanently refused, or expired
// when expired is set.
func (r *Rules) Undeliverable(report *spool.Envelope, rc *spool.Recipient, expired bool) Verdict {
	v := Verdict{Device: report.BounceFor}
	v.Reason = ReplyText(fmt.Sprintf("NDR to %s could not be delivered: %d %s %s", rc.Addr, rc.Code, rc.EnhancedCode, rc.Reply))
	switch {
	case report.BounceFor == "":
		v.Why = "the report was not for a registered sender of a device"
	case r.Devices == nil:
		v.Why = "no device table"
	default:
		d, ok := r.Devices.Lookup(report.BounceFor)
		switch {
		case !ok:
			v.Why = "device " + report.BounceFor + " is no longer registered"
		case !listed(d.Senders, rc.Addr):
			v.Why = rc.Addr + " is not a registered sender of " + report.BounceFor
		case expired:
			v.Why = "the report expired (the sender's mail system could not be reached); a temporary outage suspends nobody"
		case !AddressRefused(rc.Code, rc.EnhancedCode):
			v.Why = "the refusal is not about the address (size, policy or other), which a third party could cause"
		default:
			v.Suspend, v.Device = true, d.Name
		}
	}
	return v
}

// AddressRefused reports whether a permanent refusal says that the
// address cannot receive mail at all, which is what may suspend a
// device: a 5xx reply other than 552 (storage exceeded) with one of the
// enhanced codes
//
//	5.1.1  bad destination mailbox address (no such user)
//	5.1.2  bad destination system (no such domain)
//	5.1.3  bad destination mailbox address syntax
//	5.1.6  destination mailbox has moved
//	5.1.10 null MX: the domain accepts no mail (RFC 7505)
//	5.2.1  mailbox disabled, not accepting messages
//
// Not: 5.2.2 (mailbox full) and 5.2.3 (message too long), since anyone
// can fill a mailbox; 5.3.x (size, system); 5.7.x (policy, content, spam
// filter); 5.1.0, 5.1.4 and other vague address codes; and a 5xx without
// an enhanced code (delivery fills in 5.0.0), which says nothing about
// why.
func AddressRefused(code int, enhanced smtpstatus.Code) bool {
	if code < 500 || code > 599 || code == 552 {
		return false
	}
	switch enhanced {
	case smtpstatus.BadDestinationMailbox, smtpstatus.BadDestinationSystem, smtpstatus.BadDestinationMailboxSyntax,
		smtpstatus.MailboxMoved, smtpstatus.NullMX, smtpstatus.MailboxDisabled:
		return true
	}
	return false
}

// Notifies reports whether a recipient's NOTIFY parameter asks for kind
// ("FAILURE" or "DELAY"). Without NOTIFY, failures are reported and delays
// are too (when delay warnings are on), as RFC 3461 §4.1 permits.
func Notifies(rc *spool.Recipient, kind string) bool {
	if len(rc.Notify) == 0 {
		return true
	}
	for _, n := range rc.Notify {
		if strings.EqualFold(n, "NEVER") {
			return false
		}
	}
	for _, n := range rc.Notify {
		if strings.EqualFold(n, kind) {
			return true
		}
	}
	return false
}

// MaxReplyText bounds the remote reply text kept per recipient, in the
// history, in reports, suspension reasons and events (bytes).
const MaxReplyText = delivery.MaxReplyText

// ReplyText returns s on one line, cut to at most MaxReplyText bytes.
func ReplyText(s string) string { return delivery.ReplyText(s) }

// Recipient is the report entry for rc.
func Recipient(rc *spool.Recipient, action dsn.Action, expired bool, now time.Time) dsn.Recipient {
	status := rc.EnhancedCode
	switch {
	case action == dsn.Failed && expired && status == smtpstatus.TempRequireTLS:
		// No next hop met REQUIRETLS until the end (RFC 8689 §4.2.1).
		status = smtpstatus.RequireTLS
	case action == dsn.Failed && expired:
		if status.Class() != 4 {
			status = smtpstatus.DeliveryTimeUp
		}
	case status == "":
		status = smtpstatus.PermUndefined
		if action == dsn.Delayed {
			status = smtpstatus.TempUndefined
		}
	}
	code := rc.Code
	if rc.RemoteMTA == "" {
		code = 0 // no server answered: a local diagnostic
	}
	return dsn.Recipient{Addr: rc.Addr, ORCPT: rc.ORCPT, Action: action, Status: status,
		RemoteMTA: rc.RemoteMTA, Code: code, Reply: ReplyText(rc.Reply), LastAttempt: now, Expired: expired}
}

// Compose builds the report about env for rcpts (all of one action) and
// the envelope that carries it from the null sender to env.From. device
// is Decision.Device. retryUntil is when delivery is given up (delay
// notices, which also state env.NextAttempt as the next try). The caller spools the result (spool.Record, with the
// outcome it reports).
func Compose(reportingMTA string, env *spool.Envelope, data []byte, rcpts []dsn.Recipient, device string, retryUntil, now time.Time) (spool.NewMessage, error) {
	rep := &dsn.Report{
		ReportingMTA: reportingMTA, QueueID: env.ID, To: env.From, EnvelopeID: env.DSNEnvID,
		Return: env.DSNRet, ArrivalDate: env.ReceivedAt, Date: now, Recipients: rcpts, Original: data,
	}
	if env.RequireTLS {
		// The body was to travel only over authenticated TLS; the report
		// goes back as any mail does, so it carries the header only.
		rep.Return = "HDRS"
	}
	switch {
	case env.ClientName != "":
		rep.ReceivedFrom = env.ClientName
	case env.ClientIP != "":
		rep.ReceivedFrom = "[" + env.ClientIP + "]"
	}
	if rcpts[0].Action == dsn.Delayed {
		rep.NextAttempt = env.NextAttempt
		for i := range rep.Recipients {
			rep.Recipients[i].WillRetryUntil = retryUntil
		}
	}
	msg, err := dsn.Build(rep)
	if err != nil {
		return spool.NewMessage{}, fmt.Errorf("bounce: build report for %s: %w", env.ID, err)
	}
	ndr := &spool.Envelope{
		From:        "",
		Recipients:  []spool.Recipient{{Addr: env.From, State: spool.Pending}},
		Bounce:      true,
		BounceFor:   device,
		ClientName:  reportingMTA,
		ReceivedAt:  now,
		NextAttempt: now,
	}
	return spool.NewMessage{Env: ndr, Data: msg}, nil
}
