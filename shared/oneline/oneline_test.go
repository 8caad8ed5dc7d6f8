package oneline

import "testing"

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"250 ok":                           "250 ok",
		"  550 5.1.1 no\r\n such\tuser \n": "550 5.1.1 no such user",
		"a\r\nb":                           "a b",
	} {
		if got := Fold(in); got != want {
			t.Errorf("Fold(%q) = %q, want %q", in, got, want)
		}
	}
}
