package smtpd

import (
	"math/rand/v2"
	"testing"
)

// refLineEnds is the byte-at-a-time definition of what lineEndChecker
// finds: a CR not followed by LF, an LF not preceded by CR (a CR at the
// very end counts), and a line longer than maxLine octets with its LF.
func refLineEnds(data []byte, maxLine int) (bad, long bool) {
	cur := 0
	for i, b := range data {
		cur++
		if maxLine > 0 && cur > maxLine {
			long = true
		}
		if b == '\n' {
			cur = 0
			if i == 0 || data[i-1] != '\r' {
				bad = true
			}
		}
		if b == '\r' && (i == len(data)-1 || data[i+1] != '\n') {
			bad = true
		}
	}
	return bad, long
}

func TestLineEndCheckerMatchesByteRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\r\n.")
	for iter := 0; iter < 20000; iter++ {
		data := make([]byte, rng.IntN(40))
		for i := range data {
			// Mostly CRLF-clean text with the odd bare CR or LF.
			data[i] = alphabet[rng.IntN(len(alphabet))]
			if data[i] == '\r' && i+1 < len(data) && rng.IntN(4) > 0 {
				data[i+1] = '\n'
			}
		}
		maxLine := rng.IntN(8)
		wantBad, wantLong := refLineEnds(data, maxLine)
		// The same stream in random chunks.
		c := &lineEndChecker{maxLine: maxLine}
		for p := data; len(p) > 0; {
			n := 1 + rng.IntN(len(p))
			c.Write(p[:n])
			p = p[n:]
		}
		if c.bad() != wantBad || c.long != wantLong {
			t.Fatalf("%q maxLine %d: bad=%v long=%v, want bad=%v long=%v", data, maxLine, c.bad(), c.long, wantBad, wantLong)
		}
	}
}

// BenchmarkLineEndChecker checks a 10 KB message of 78-octet lines.
func BenchmarkLineEndChecker(b *testing.B) {
	line := []byte("0123456789012345678901234567890123456789012345678901234567890123456789012345\r\n")
	var msg []byte
	for len(msg) < 10<<10 {
		msg = append(msg, line...)
	}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		c := &lineEndChecker{maxLine: 1000}
		c.Write(msg)
		if c.bad() || c.long {
			b.Fatal("clean message found bad")
		}
	}
}
