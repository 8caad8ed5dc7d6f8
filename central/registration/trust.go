package registration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/notify"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/shared/address"
)

// MsgControl is the field error for control characters (CR, LF and the
// like) in a field that may end up in a mail header or line.
const MsgControl = "contains control characters (line breaks, tabs or similar), which are not allowed here"

// ErrLinkExpired: a sender confirmation link older than ConfirmTTL.
var ErrLinkExpired = errors.New("this confirmation link has expired")

// HasControl reports whether any field has a control-character error: a
// request that a browser typing into the form does not make.
func (e FieldErrors) HasControl() bool {
	for _, v := range e {
		if v == MsgControl {
			return true
		}
	}
	return false
}

// hasControl reports control characters (C0, DEL, C1, and the Unicode
// line and paragraph separators); multiline allows LF, CR and tab.
func hasControl(s string, multiline bool) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			return false
		}
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\u0085'
	})
}

// Affiliated reports whether a mail address is in the affiliated domains.
func (s *Service) Affiliated(addr string) bool {
	a, err := address.Parse(addr)
	if err != nil {
		return false
	}
	l, err := address.NewDomainList(s.AffiliatedDomains)
	if err != nil {
		return false
	}
	return l.Contains(a.Domain)
}

func (s *Service) confirmTTL() time.Duration {
	if s.ConfirmTTL > 0 {
		return s.ConfirmTTL
	}
	return 7 * 24 * time.Hour
}

func fmtTTL(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		if n := int(d / (24 * time.Hour)); n != 1 {
			return fmt.Sprintf("%d days", n)
		}
		return "1 day"
	}
	return d.String()
}

// confirmable checks that token names an unexpired link (ErrNotFound,
// ErrLinkExpired otherwise). A confirmed sender may open its link again.
func (s *Service) confirmable(ctx context.Context, token string) error {
	_, sn, err := s.Store.SenderByToken(ctx, auth.HashToken(token))
	if err != nil {
		return err
	}
	if !sn.Confirmed() && s.now().Sub(sn.ConfirmSentAt) > s.confirmTTL() {
		return ErrLinkExpired
	}
	return nil
}

// ResendConfirmations sends new links to the unconfirmed senders of a
// device on its owner's behalf: only to affiliated addresses (staff send
// to the others). It returns the addresses left to staff.
func (s *Service) ResendConfirmations(ctx context.Context, name string) (leftToStaff []string, err error) {
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		return nil, err
	}
	for _, sn := range d.Senders {
		if !sn.Confirmed() && s.Mail != nil && !s.Affiliated(sn.Address) {
			leftToStaff = append(leftToStaff, sn.Address)
		}
	}
	return leftToStaff, s.sendConfirmations(ctx, name, false)
}

// SendOwnerLink mails a new registration's owner link to its contact
// address. For an anonymous request (byStaff false) only an affiliated
// contact gets mail; sent reports whether a message went out.
func (s *Service) SendOwnerLink(ctx context.Context, d store.Device, link string, byStaff bool) (sent bool, err error) {
	if s.Owners != nil {
		return s.Owners.Send(ctx, notify.Notice{Kind: notify.Received, Device: d, OwnerLink: link, ByStaff: byStaff})
	}
	if s.Mail == nil {
		return false, nil
	}
	if !byStaff && !s.Affiliated(d.ContactEmail) {
		s.log().Warn("contact outside the affiliated domains: no owner link mailed", "device", d.Name)
		return false, nil
	}
	body := fmt.Sprintf(`Hello,

a registration of the device %s with Postern, the organisation's mail
relay for devices, names this address as its contact.

This is the owner link of the registration. Anyone with it can see the
device's status, its reports and re-send its confirmation links, so keep
it like a password:

  %s

If you did not ask for this, tell the mail administrators; the device will
not be approved without their review.
`, d.Name, link)
	if err := s.Mail.Send(ctx, d.ContactEmail, "Owner link for "+d.Name, body); err != nil {
		return false, fmt.Errorf("owner link to the contact of %s: %w", d.Name, err)
	}
	s.log().Info("owner link mailed to the contact", "device", d.Name)
	return true, nil
}
