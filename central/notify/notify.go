// Package notify mails device owners about their registrations: request
// received (with the owner link), approved, denied, suspended, reinstated,
// revoked, expiring in 30 and in 7 days, and expired. Every mail says what
// happened and exactly what the owner has to do next.
//
// Guarantees:
//   - Each notice goes out at most once: it is claimed in the store
//     (store.ClaimNotice) under the device, its kind and a key naming the
//     event (the audit entry of a status change, the expiry an expiry
//     reminder is about) before it is sent, so several central instances
//     and repeated reports (several edges suspending one device) send one
//     mail. A reminder that could not be sent is released and retried.
//   - Mail goes only to contact addresses in the affiliated domains: the
//     registration form is public, so anyone can type any address; a
//     registration made by staff (API, CLI) may also have its owner link
//     mailed elsewhere.
//   - The subject carries only fixed text and the device's validated DNS
//     name; free text (staff's reasons) goes into the body with control
//     characters replaced, and the mailer refuses header injection.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/postern/postern/central/store"
)

// Mailer sends one text message (central/mailer.Mailer).
type Mailer interface {
	Send(ctx context.Context, to, subject, body string) error
}

// Kind is what a notice is about.
type Kind string

// Notice kinds.
const (
	Received   Kind = "received"
	Approved   Kind = "approved"
	Denied     Kind = "denied"
	Suspended  Kind = "suspended"
	Reinstated Kind = "reinstated"
	Revoked    Kind = "revoked"
	Expiring30 Kind = "expiring-30"
	Expiring7  Kind = "expiring-7"
	Expired    Kind = "expired"
)

// ForStatus is the notice of a device entering status to ("" for none).
func ForStatus(from, to store.Status) Kind {
	switch {
	case to == store.Active && from == store.Suspended:
		return Reinstated
	case to == store.Active && (from == store.Pending || from == store.Denied):
		return Approved
	case to == store.Denied:
		return Denied
	case to == store.Suspended && from != store.Suspended:
		return Suspended
	case to == store.Revoked:
		return Revoked
	case to == store.Expired:
		return Expired
	}
	return ""
}

// Notice is one mail to an owner.
type Notice struct {
	Kind   Kind
	Device store.Device
	// Key names the event (see the package comment); "" uses the
	// device's last change time.
	Key string
	// OwnerLink is the registration's owner link (Received only).
	OwnerLink string
	// ByStaff: staff made the registration (Received may then go to any
	// address).
	ByStaff bool
}

// Notifier sends owner notices. Fields are set once before use.
type Notifier struct {
	Mail  Mailer
	Store store.Store
	// BaseURL is central's external URL (links to the owner's pages).
	BaseURL string
	// Affiliated reports whether an address is in the affiliated domains.
	Affiliated func(addr string) bool
	// TimeZone is the zone dates are written in (nil: UTC).
	TimeZone *time.Location
	Clock    func() time.Time
	Log      *slog.Logger

	mu         sync.Mutex
	lastRemind time.Time
}

func (n *Notifier) now() time.Time {
	if n.Clock != nil {
		return n.Clock()
	}
	return time.Now()
}

func (n *Notifier) log() *slog.Logger {
	if n.Log != nil {
		return n.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Send mails one notice unless it was sent before. sent reports whether a
// message went out.
func (n *Notifier) Send(ctx context.Context, nt Notice) (sent bool, err error) {
	d := nt.Device
	if n.Mail == nil || d.ContactEmail == "" {
		return false, nil
	}
	subject, body, ok := n.compose(nt)
	if !ok {
		return false, fmt.Errorf("notify: unknown notice %q", nt.Kind)
	}
	key := nt.Key
	if key == "" {
		key = strconv.FormatInt(d.UpdatedAt.UnixMilli(), 10)
	}
	if nt.ByStaff {
		key += "-staff"
	}
	claimed, err := n.Store.ClaimNotice(ctx, d.Name, string(nt.Kind), key, n.now())
	if err != nil {
		return false, fmt.Errorf("notify %s of %s: %w", nt.Kind, d.Name, err)
	}
	if !claimed {
		return false, nil
	}
	// A contact outside the affiliated domains gets nothing; the claim
	// stays, so the notice counts as handled (reminders move on).
	if !(nt.Kind == Received && nt.ByStaff) && (n.Affiliated == nil || !n.Affiliated(d.ContactEmail)) {
		n.log().Info("owner notice not sent: the contact is outside the affiliated domains", "device", d.Name, "notice", string(nt.Kind))
		return false, nil
	}
	if err := n.Mail.Send(ctx, d.ContactEmail, subject, body); err != nil {
		if rerr := n.Store.ReleaseNotice(context.WithoutCancel(ctx), d.Name, string(nt.Kind), key); rerr != nil {
			n.log().Warn("owner notice claim not released", "device", d.Name, "notice", string(nt.Kind), "err", rerr)
		}
		return false, fmt.Errorf("notify %s of %s: %w", nt.Kind, d.Name, err)
	}
	n.log().Info("owner notified", "device", d.Name, "notice", string(nt.Kind))
	return true, nil
}

// RemindInterval is how often Remind looks for expiring registrations.
const RemindInterval = time.Hour

// Remind mails the expiry reminders due (30 and 7 days before), at most
// once per RemindInterval per process; the claims keep it to one mail per
// registration period and reminder also across instances.
func (n *Notifier) Remind(ctx context.Context) error {
	now := n.now()
	n.mu.Lock()
	if !n.lastRemind.IsZero() && now.Sub(n.lastRemind) < RemindInterval {
		n.mu.Unlock()
		return nil
	}
	n.lastRemind = now
	n.mu.Unlock()
	var errs []error
	for _, stage := range []struct {
		kind     Kind
		from, to time.Duration
	}{{Expiring7, 0, 7 * 24 * time.Hour}, {Expiring30, 7 * 24 * time.Hour, 30 * 24 * time.Hour}} {
		// Each page leaves out what was claimed already; a page without
		// one success (the relay refuses) ends the round.
		for {
			devs, err := n.Store.ExpiringDevices(ctx, now.Add(stage.from), now.Add(stage.to), string(stage.kind), remindPage)
			if err != nil {
				return fmt.Errorf("notify: expiring registrations: %w", err)
			}
			done := 0
			for _, d := range devs {
				_, err := n.Send(ctx, Notice{Kind: stage.kind, Device: d, Key: strconv.FormatInt(d.ExpiresAt.UnixMilli(), 10)})
				if err != nil {
					n.log().Warn("expiry reminder not sent", "device", d.Name, "err", err)
					errs = append(errs, err)
					continue
				}
				done++
			}
			if len(devs) < remindPage || done == 0 {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// remindPage is how many expiring registrations Remind reads at once.
const remindPage = 200

// oneLine replaces control characters (line breaks included) of free text.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

func (n *Notifier) date(t time.Time) string {
	loc := n.TimeZone
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("Monday 2 January 2006, 15:04 MST")
}

func (n *Notifier) pageURL(name string) string {
	return strings.TrimRight(n.BaseURL, "/") + "/my/devices/" + url.PathEscape(name)
}

func (n *Notifier) compose(nt Notice) (subject, body string, ok bool) {
	d := nt.Device
	page := n.pageURL(d.Name)
	reason := oneLine(d.StatusReason)
	if reason == "" {
		reason = "(no reason given)"
	}
	var senders []string
	for _, s := range d.Senders {
		senders = append(senders, s.Address)
	}
	sendersText := strings.Join(senders, ", ")
	open := fmt.Sprintf(`Open the registration's page (in the browser you registered from, or
after opening the owner link mailed when you registered):

  %s
`, page)
	var b strings.Builder
	fmt.Fprintf(&b, "Hello %s,\n\n", oneLine(d.Owner))
	switch nt.Kind {
	case Received:
		subject = "Registration of " + d.Name + " received"
		fmt.Fprintf(&b, `your request to let the device %s send mail through Postern, the
organisation's mail relay for devices, has been received. Staff will
review it.

What you need to do now:
  1. Each sender address of the device (%s) gets a message with a
     confirmation link. Make sure someone opens each link and presses
     "Confirm": staff approve only confirmed addresses.
  2. Wait for the review. You get a mail when the request is approved or
     denied. Until then the relay refuses the device's mail.

This is the owner link of the registration. With it you can see the
request's status and the relay's reports about the device, change the
request, withdraw it and renew it later. Keep it like a password:

  %s

If you did not ask for this, tell the mail administrators; the device
will not be approved without their review.
`, d.Name, sendersText, nt.OwnerLink)
	case Approved:
		subject = "Registration of " + d.Name + " approved"
		fmt.Fprintf(&b, `the device %s may now send mail through the relay, until
%s.

What you need to do now:
  1. Set the device to send through the relay and to use only its
     registered sender addresses (%s); mail from other senders is
     refused.
  2. Keep those mailboxes receiving mail: bounce messages come to them,
     and if bounces cannot be delivered the device is suspended.
  3. Renew the registration before it expires (you get reminders 30 and
     7 days before).

%s`, d.Name, n.date(d.ExpiresAt), sendersText, open)
	case Denied:
		subject = "Registration of " + d.Name + " denied"
		fmt.Fprintf(&b, `staff denied the request to register the device %s. The reason:

  %s

What you can do: fix what the reason says, then open the request's page,
press "Change or request again", correct the request and send it; staff
will review it again. If the reason is unclear, reply to the mail
administrators.

%s`, d.Name, reason, open)
	case Suspended:
		subject = "Device " + d.Name + " suspended"
		fmt.Fprintf(&b, `the relay no longer accepts mail from the device %s. The reason:

  %s

What to fix: most suspensions happen because bounce messages (NDRs) to
the device's sender addresses (%s) could not be delivered. Make sure each
of these mailboxes exists and receives mail, or change the sender
addresses on the device's page (a change of senders goes back to review).
Then ask the mail administrators to reinstate the device.

%s`, d.Name, reason, sendersText, open)
	case Reinstated:
		subject = "Device " + d.Name + " reinstated"
		fmt.Fprintf(&b, `the device %s may send mail through the relay again. Nothing else
is needed; keep its sender addresses (%s) receiving mail so that it is
not suspended again.

%s`, d.Name, sendersText, open)
	case Revoked:
		subject = "Registration of " + d.Name + " revoked"
		fmt.Fprintf(&b, `the registration of the device %s has ended; the relay refuses
its mail. The reason:

  %s

If the device still needs to send mail, register it again on the
registration form (%s/register).
`, d.Name, reason, strings.TrimRight(n.BaseURL, "/"))
	case Expiring30, Expiring7:
		days := int(d.ExpiresAt.Sub(n.now()).Hours()/24 + 0.5)
		subject = fmt.Sprintf("Registration of %s expires in %d days", d.Name, days)
		fmt.Fprintf(&b, `the registration of the device %s expires on %s
(in %d days). After that the relay refuses its mail.

What you need to do: if the device still sends mail, open its page and
press "Renew". If it no longer does, press "Withdraw" or do nothing.

%s`, d.Name, n.date(d.ExpiresAt), days, open)
	case Expired:
		subject = "Registration of " + d.Name + " expired"
		fmt.Fprintf(&b, `the registration of the device %s has expired; the relay refuses
its mail now.

What you need to do: if the device still sends mail, open its page,
press "Change or request again" and send the request; staff will review
it again.

%s`, d.Name, open)
	default:
		return "", "", false
	}
	b.WriteString("\n-- \nPostern, the mail relay for devices. This message was sent automatically.\n")
	return subject, b.String(), true
}
