package registration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/postern/postern/central/store"
)

// Warning is something staff should weigh before approving a device. Each
// has a fixed code that the approval must acknowledge.
type Warning struct {
	Code string
	Text string
}

// Warning codes.
const (
	WarnDNS         = "dns"         // the last FCrDNS check did not match (or found no PTR)
	WarnPublicIP    = "public-ip"   // an address is publicly routable
	WarnNoIP        = "no-ip"       // no address given: the device is whatever DNS says
	WarnPersonal    = "personal"    // a sender looks like a person's mailbox
	WarnUnconfirmed = "unconfirmed" // a sender has not confirmed its address
	WarnFirewall    = "firewall"    // the name is a firewall's: every system behind it may send
)

// ErrUnacknowledged: an approval did not acknowledge every warning.
var ErrUnacknowledged = errors.New("not every warning was acknowledged")

// Warnings lists what staff should weigh before approving d.
func Warnings(d store.Device) []Warning {
	var out []Warning
	if !d.FCrDNSOK {
		text := "The last DNS check did not match"
		if d.FCrDNS != "" {
			text += ": " + d.FCrDNS
		}
		if strings.Contains(strings.ToLower(d.FCrDNS), "no reverse") || strings.Contains(strings.ToLower(d.FCrDNS), "ptr") {
			text += " (no usable PTR record)"
		}
		out = append(out, Warning{WarnDNS, text + ". Edges identify the device by this name; run the check again after the owner fixes DNS."})
	}
	var public []string
	for _, p := range d.IPs {
		a, err := netip.ParseAddr(p)
		if err != nil {
			continue
		}
		if !a.IsPrivate() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			public = append(public, a.String())
		}
	}
	if len(public) > 0 {
		out = append(out, Warning{WarnPublicIP, "Publicly routable address " + strings.Join(public, ", ") + ": a device on the LAN normally has a private one; make sure it is the organisation's."})
	}
	if len(d.IPs) == 0 {
		out = append(out, Warning{WarnNoIP, "No IP address was given: the device is whatever address the name resolves to, now and later."})
	}
	var personal, unconfirmed []string
	for _, sn := range d.Senders {
		if sn.Personal {
			personal = append(personal, sn.Address)
		}
		if !sn.Confirmed() {
			unconfirmed = append(unconfirmed, sn.Address)
		}
	}
	if len(personal) > 0 {
		out = append(out, Warning{WarnPersonal, "Sender " + strings.Join(personal, ", ") + " looks like a person's mailbox; devices should send as a functional address."})
	}
	if len(unconfirmed) > 0 {
		out = append(out, Warning{WarnUnconfirmed, "Sender " + strings.Join(unconfirmed, ", ") + " has not confirmed its address: NDRs for the device's mail may reach no one."})
	}
	if d.BehindFirewall {
		out = append(out, Warning{WarnFirewall, "The name is a firewall's or NAT's: every system behind it may relay; the requester took responsibility for them."})
	}
	return out
}

// Approve approves a device after staff acknowledged every warning
// (Warnings) by code; the acknowledged warnings are recorded in the audit
// reason. A missing acknowledgement is ErrUnacknowledged naming the codes.
func (s *Service) Approve(ctx context.Context, name, actor, reason string, acks []string) error {
	d, err := s.Store.Device(ctx, name)
	if err != nil {
		return err
	}
	var missing, done []string
	for _, w := range Warnings(d) {
		if slices.Contains(acks, w.Code) {
			done = append(done, w.Code)
		} else {
			missing = append(missing, w.Code)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("approve %s: %w (%s)", name, ErrUnacknowledged, strings.Join(missing, ", "))
	}
	reason = strings.TrimSpace(reason)
	if len(done) > 0 {
		reason = strings.TrimSpace(reason + " [warnings acknowledged: " + strings.Join(done, ", ") + "]")
	}
	return s.Act(ctx, name, Approve, actor, reason, slices.Contains(done, WarnUnconfirmed))
}
