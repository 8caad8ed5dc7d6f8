package loopback

import "testing"

func TestHostPort(t *testing.T) {
	for hp, want := range map[string]bool{
		"127.0.0.1:25":   true,
		"127.9.9.9:25":   true,
		"[::1]:8025":     true,
		"localhost:8025": true,
		"0.0.0.0:8025":   false,
		"10.0.0.1:25":    false,
		"[::]:25":        false,
		"example.org:25": false,
		"127.0.0.1":      false,
		"":               false,
	} {
		if got := HostPort(hp); got != want {
			t.Errorf("HostPort(%q) = %v, want %v", hp, got, want)
		}
	}
}
