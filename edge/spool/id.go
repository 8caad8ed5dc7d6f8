package spool

import (
	"math/rand/v2"
)

// idAlphabet is Crockford's base32 in lower case: no i, l, o, u, and its
// ASCII order equals its numeric order, so ids sort by time as strings.
const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// idLen is the length of a queue id: 80 bits (48-bit milliseconds since
// the epoch, then 32 random bits) in base32.
const idLen = 16

// NewID returns a new queue id: 16 characters of [0-9a-z], ordered by
// creation time (strictly increasing within this process, even within one
// millisecond or if the clock steps back), safe in logs and file names.
func (s *Spool) NewID() string {
	ms := uint64(s.clock().UnixMilli()) & (1<<48 - 1)
	hi, lo := ms>>32, ms<<32|uint64(rand.Uint32())
	s.idMu.Lock()
	if hi < s.lastHi || (hi == s.lastHi && lo <= s.lastID) {
		hi, lo = s.lastHi, s.lastID+1
		if lo == 0 {
			hi++
		}
	}
	s.lastHi, s.lastID = hi, lo
	s.idMu.Unlock()
	return encodeID(hi, lo)
}

func encodeID(hi, lo uint64) string {
	var b [idLen]byte
	for i := idLen - 1; i >= 0; i-- {
		b[i] = idAlphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(b[:])
}

// validID reports whether id can be a key component: printable, no
// separator bytes. Ids from NewID always are; callers may bring their own.
func validID(id string) bool {
	if id == "" || len(id) > 200 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '/' {
			return false
		}
	}
	return true
}
