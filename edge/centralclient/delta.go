package centralclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/shared/allowlist"
)

// Deltas (docs/CONTRACT.md, "Deltas"). Central publishes every snapshot
// twice: in full, retained on the allowlist topic, and as a signed delta
// from the previous one, retained on the delta topic. An edge whose
// Registry can list central's devices (DeltaRegistry) follows the deltas
// and holds no subscription to the full snapshot, so a change costs it a
// few hundred bytes instead of the whole list:
//
//   - A delta is applied only on top of exactly its base version, and only
//     if the list it produces has the delta's count and content hash; the
//     result is then the list central signed, byte for byte.
//   - A delta for another base (changes were missed), one whose result
//     does not match, or a chain of deltas grown too long makes the edge
//     subscribe to the full snapshot (retained: the broker sends it at
//     once) until the next one arrives, then unsubscribe again. A late or
//     replayed delta changes nothing.
//   - Until the edge has seen one verified delta it keeps the full
//     subscription, so a central that publishes no deltas still reaches it.
//   - The persisted state is the last full snapshot plus the deltas applied
//     since, each verified again at start.

// DeltaRegistry is a Registry that can return central's list as last set,
// sorted by name (*devices.Table); a Client applies deltas only to one.
type DeltaRegistry interface {
	Registry
	CentralDevices() []devices.Device
}

// deltasKey holds, in the allow/ bucket, the deltas applied on top of the
// persisted snapshot, each as a 4-byte big-endian length and its wire
// form. Its presence also records that central publishes deltas.
const deltasKey = "deltas"

// maxChain bounds the persisted deltas: past it the edge takes the full
// snapshot again, which replaces them.
const maxChain = 64

// HandleDelta verifies and applies one delta in wire form from source.
// A delta that does not fit is answered by subscribing to the full
// snapshot (see above); the error says why it was not applied (ErrSame
// and ErrOlder for one with nothing to do).
func (c *Client) HandleDelta(wire []byte, source string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.applyDeltaLocked(wire, true)
	switch {
	case err == nil:
		c.count("deltas_applied")
		c.dropFullLocked(false)
		if len(c.chain) >= maxChain {
			c.wantFullLocked("chain")
		}
		c.requestStatus()
	case errors.Is(err, allowlist.ErrSame), errors.Is(err, allowlist.ErrOlder):
		c.count("deltas_ignored")
		c.dropFullLocked(false)
	case errors.Is(err, allowlist.ErrUnsigned), errors.Is(err, allowlist.ErrBadSignature), errors.Is(err, allowlist.ErrFormat):
		c.rejectAs("deltas", err, source, 0)
	case errors.Is(err, allowlist.ErrDeltaBase):
		c.count("deltas_gap")
		c.log.Info("allowlist delta does not fit the version held; taking the full snapshot", "source", source, "err", err)
		c.wantFullLocked("gap")
	default:
		c.count("deltas_mismatch")
		c.log.Warn("allowlist delta not applied; taking the full snapshot", "source", source, "err", err)
		c.wantFullLocked("mismatch")
	}
	return err
}

// applyDeltaLocked decodes, checks and applies one delta; persist says
// whether to append it to the persisted chain (not when loading it).
func (c *Client) applyDeltaLocked(wire []byte, persist bool) error {
	reg, ok := c.o.Registry.(DeltaRegistry)
	if !ok {
		return errors.New("sync: the device table cannot take deltas")
	}
	d, err := allowlist.DecodeDelta(wire, c.o.PublicKey)
	if err != nil {
		return err
	}
	if !c.deltaMode {
		c.deltaMode = true
		if persist {
			c.persistChainLocked()
		}
	}
	cur := c.current.Load()
	if err := allowlist.AcceptDelta(cur, &d); err != nil {
		return err
	}
	var devs []devices.Device
	if d.Base == d.Version {
		// A republish: the same list, a new validity.
		if d.Hash != c.hash || d.Count != c.devices {
			return fmt.Errorf("%w: republish of version %d does not match the list held", allowlist.ErrDeltaHash, d.Version)
		}
		devs = reg.CentralDevices()
	} else {
		devs, err = mergeDelta(reg.CentralDevices(), &d)
		if err != nil {
			return err
		}
	}
	if persist {
		c.chain = append(c.chain, wire)
		c.persistChainLocked()
	}
	c.o.Registry.SetCentral(d.Version, d.Issued, devs, d.ValidUntil)
	hdr := d.Header()
	c.current.Store(&hdr)
	c.hash, c.devices = d.Hash, d.Count
	if persist {
		active := 0
		for i := range devs {
			if devs[i].Status == devices.StatusActive {
				active++
			}
		}
		c.log.Info("allowlist delta applied", "base", d.Base, "version", d.Version, "changed", len(d.Upsert),
			"removed", len(d.Remove), "active", active, "suspended", len(devs)-active, "valid_until", d.ValidUntil, "bytes", len(wire))
	}
	return nil
}

// mergeDelta applies d to central's list base (sorted by name) and checks
// the result against the delta's count and content hash.
func mergeDelta(base []devices.Device, d *allowlist.Delta) ([]devices.Device, error) {
	out := make([]devices.Device, 0, max(d.Count, 0))
	h := allowlist.NewHasher()
	add := func(dev devices.Device) {
		out = append(out, dev)
		a := toAllowlist(dev)
		h.Add(&a)
	}
	removed := make(map[string]bool, len(d.Remove))
	for _, n := range d.Remove {
		removed[n] = true
	}
	i, j := 0, 0
	for i < len(base) || j < len(d.Upsert) {
		switch {
		case j == len(d.Upsert) || (i < len(base) && base[i].Name < d.Upsert[j].Name):
			if !removed[base[i].Name] {
				add(base[i])
			}
			i++
		case i == len(base) || d.Upsert[j].Name < base[i].Name:
			add(fromAllowlist(d.Upsert[j]))
			j++
		default:
			add(fromAllowlist(d.Upsert[j]))
			i++
			j++
		}
	}
	if h.Len() != d.Count || allowlist.HashString(h.Sum()) != d.Hash {
		return nil, fmt.Errorf("%w: version %d from %d", allowlist.ErrDeltaHash, d.Version, d.Base)
	}
	return out, nil
}

func toAllowlist(d devices.Device) allowlist.Device {
	return allowlist.Device{Name: d.Name, Status: allowlist.Status(d.Status), Senders: d.Senders,
		MessagesPerHour: d.MessagesPerHour, RecipientsPerHour: d.RecipientsPerHour, Reason: d.Reason, Reinstated: d.Reinstated}
}

func fromAllowlist(d allowlist.Device) devices.Device {
	return devices.Device{Name: d.Name, Senders: d.Senders, Status: string(d.Status), MessagesPerHour: d.MessagesPerHour,
		RecipientsPerHour: d.RecipientsPerHour, Source: devices.SourceCentral, Reason: d.Reason, Reinstated: d.Reinstated}
}

// contentHash is the text form of the content hash of a decoded snapshot.
func contentHash(devs []allowlist.Device) string {
	return allowlist.HashString(allowlist.ContentHash(devs))
}

// persistChainLocked writes the chain of applied deltas (best effort, as
// for snapshots: the edge enforces what it verified either way, and after
// a restart it resumes from what was persisted).
func (c *Client) persistChainLocked() {
	n := 0
	for _, w := range c.chain {
		n += 4 + len(w)
	}
	b := make([]byte, 0, n)
	for _, w := range c.chain {
		b = binary.BigEndian.AppendUint32(b, uint32(len(w)))
		b = append(b, w...)
	}
	if err := c.o.Allow.Set(deltasKey, b); err != nil {
		c.log.Error("allowlist deltas not persisted", "err", err)
	}
}

// loadChainLocked applies the persisted deltas on top of the persisted
// snapshot, stopping at the first that does not apply.
func (c *Client) loadChainLocked(b []byte) {
	c.deltaMode = true
	for len(b) >= 4 {
		n := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			break
		}
		w := b[4 : 4+n]
		b = b[4+n:]
		if err := c.applyDeltaLocked(w, false); err != nil {
			if !errors.Is(err, allowlist.ErrSame) && !errors.Is(err, allowlist.ErrOlder) {
				c.log.Warn("persisted allowlist delta not applied", "err", err)
				break
			}
			continue
		}
		c.chain = append(c.chain, w)
	}
}

// wantFullLocked subscribes to the full snapshot until the next one
// arrives (see dropFullLocked).
func (c *Client) wantFullLocked(reason string) {
	c.count("full_requests_" + reason)
	c.fullWanted = true
	if c.fullSub {
		return
	}
	c.fullSub = true
	if c.mqtt == nil || !c.mqtt.IsConnectionOpen() {
		// onConnect subscribes; the HTTPS fallback covers a long outage.
		return
	}
	cl := c.mqtt
	go func() {
		if tok := cl.Subscribe(c.o.Topics.Allowlist(), 1, c.onMessage); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			c.log.Warn("mqtt subscribe to the full allowlist failed", "err", tok.Error())
		}
	}()
}

// dropFullLocked is called after a snapshot or delta was handled: once
// central is known to publish deltas and a snapshot is held, the full
// subscription is dropped (deltas carry the changes from here). Central
// publishes the full snapshot before its delta, so the retained snapshot
// that came on subscribing is at least as new as any delta that made the
// edge ask for it; a delta naming a later version than it (one signed
// for a base never published) cannot keep the edge on full snapshots.
// After a delta (full false) the subscription stays while a full snapshot
// was asked for and has not come.
func (c *Client) dropFullLocked(full bool) {
	if full {
		c.fullWanted = false
	}
	if !c.deltaMode || !c.fullSub || c.fullWanted || c.current.Load() == nil {
		return
	}
	c.fullSub = false
	if c.mqtt == nil || !c.mqtt.IsConnectionOpen() {
		return
	}
	cl := c.mqtt
	go func() {
		if tok := cl.Unsubscribe(c.o.Topics.Allowlist()); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			c.log.Warn("mqtt unsubscribe from the full allowlist failed", "err", tok.Error())
		}
	}()
}
