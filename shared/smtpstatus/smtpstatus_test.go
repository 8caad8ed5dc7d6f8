package smtpstatus

import (
	"testing"

	"github.com/emersion/go-smtp"
)

func TestParse(t *testing.T) {
	for s, ok := range map[string]bool{
		"5.1.1": true, "4.4.7": true, "2.0.0": true, "5.1.10": true,
		"": false, "3.1.1": false, "5.1": false, "5.1.1.1": false, "5.x.1": false, "5.01.1": false, "5.-1.1": false,
	} {
		if _, got := Parse(s); got != ok {
			t.Errorf("Parse(%q) ok = %v, want %v", s, got, ok)
		}
	}
}

func TestSMTPRoundTrip(t *testing.T) {
	for _, c := range []Code{OK, PermNotAuthorized, NullMX, DeliveryTimeUp} {
		back, ok := FromSMTP(c.SMTP())
		if !ok || back != c {
			t.Errorf("%s -> %v -> %s, %v", c, c.SMTP(), back, ok)
		}
	}
	if got := PermNotAuthorized.SMTP(); got != (smtp.EnhancedCode{5, 7, 1}) {
		t.Errorf("SMTP() = %v", got)
	}
	if got := Code("junk").SMTP(); got != smtp.EnhancedCodeNotSet {
		t.Errorf("malformed SMTP() = %v, want not set", got)
	}
	for _, e := range []smtp.EnhancedCode{smtp.EnhancedCodeNotSet, smtp.NoEnhancedCode, {3, 1, 1}} {
		if c, ok := FromSMTP(e); ok {
			t.Errorf("FromSMTP(%v) = %s, want none", e, c)
		}
	}
}

func TestClass(t *testing.T) {
	for c, want := range map[Code]int{OK: 2, TempUndefined: 4, PermUndefined: 5, "": 0, "x": 0} {
		if got := c.Class(); got != want {
			t.Errorf("%q.Class() = %d, want %d", c, got, want)
		}
	}
}
