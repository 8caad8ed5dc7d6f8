package allowlist

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The wire form of a snapshot (the MQTT payload, the HTTPS fetch body and
// the file the edge persists) is:
//
//	offset 0   4 bytes  magic "PAL1"
//	offset 4   1 byte   compression: 0 none, 1 zstd
//	offset 5  64 bytes  Ed25519 signature over sigContext || byte 4 || payload
//	offset 69 …         payload: canonical JSON of Snapshot, compressed
//
// The signature covers the compressed payload so a receiver verifies
// before it decompresses or parses anything.
const (
	magic      = "PAL1"
	headerLen  = 4 + 1 + ed25519.SignatureSize
	sigContext = "postern allowlist v1\x00"

	compNone byte = 0
	compZstd byte = 1

	// MaxDecoded bounds the decompressed payload (about 500 bytes per
	// device at 100,000 devices leaves ample headroom).
	MaxDecoded = 128 << 20
)

// Canonical returns the canonical JSON encoding of s after Normalize.
func Canonical(s Snapshot) ([]byte, error) {
	s.Devices = cloneDevices(s.Devices)
	if err := s.Normalize(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("allowlist: encode: %w", err)
	}
	return b, nil
}

// cloneDevices copies devices and their sender slices so Normalize does not
// reorder the caller's data.
func cloneDevices(ds []Device) []Device {
	out := make([]Device, len(ds))
	for i, d := range ds {
		out[i] = d
		if d.Senders != nil {
			out[i].Senders = append([]string(nil), d.Senders...)
		}
	}
	return out
}

var encoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(fmt.Sprintf("allowlist: zstd encoder: %v", err))
	}
	return e
})

// decompress inflates a zstd payload with a decoder of its own: a shared
// decoder keeps its last output as history, which for a 100,000-device
// allowlist held 20 MB on an edge between snapshots.
func decompress(payload []byte) ([]byte, error) {
	d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxDecoded), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.DecodeAll(payload, nil)
}

// openPayload returns the payload of a verified wire form (snapshot or
// delta), decompressed as its header says and at most MaxDecoded bytes.
func openPayload(b []byte) ([]byte, error) {
	payload := b[headerLen:]
	switch b[4] {
	case compNone:
	case compZstd:
		var err error
		if payload, err = decompress(payload); err != nil {
			return nil, fmt.Errorf("%w: decompress: %v", ErrFormat, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown compression %d", ErrFormat, b[4])
	}
	if len(payload) > MaxDecoded {
		return nil, fmt.Errorf("%w: payload of %d bytes exceeds the limit", ErrFormat, len(payload))
	}
	return payload, nil
}

// Encode normalizes, compresses and signs s with priv, returning the wire
// form.
func Encode(s Snapshot, priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("allowlist: bad private key length %d", len(priv))
	}
	canon, err := Canonical(s)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+len(canon)/4+64)
	copy(out, magic)
	out[4] = compZstd
	out = encoder().EncodeAll(canon, out)
	sig := ed25519.Sign(priv, signed(out[4], out[headerLen:]))
	copy(out[5:headerLen], sig)
	return out, nil
}

func signed(comp byte, payload []byte) []byte {
	m := make([]byte, 0, len(sigContext)+1+len(payload))
	m = append(m, sigContext...)
	m = append(m, comp)
	return append(m, payload...)
}

// Verify checks the signature of the wire form b without decoding it.
func Verify(b []byte, pub ed25519.PublicKey) error {
	if len(b) < headerLen || !bytes.Equal(b[:4], []byte(magic)) {
		return ErrUnsigned
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: no valid public key configured", ErrBadSignature)
	}
	if !ed25519.Verify(pub, signed(b[4], b[headerLen:]), b[5:headerLen]) {
		return ErrBadSignature
	}
	return nil
}

// Decode verifies the wire form b with pub, then decompresses, parses and
// validates it. Any error wraps ErrUnsigned, ErrBadSignature or ErrFormat.
func Decode(b []byte, pub ed25519.PublicKey) (Snapshot, error) {
	var s Snapshot
	if err := Verify(b, pub); err != nil {
		return s, err
	}
	payload, err := openPayload(b)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(payload, &s); err != nil {
		return s, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if s.Format != FormatVersion {
		return s, fmt.Errorf("%w: format %d, want %d", ErrFormat, s.Format, FormatVersion)
	}
	if err := s.Normalize(); err != nil {
		return s, err
	}
	return s, nil
}
