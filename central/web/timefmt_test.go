package web

import (
	"testing"
	"time"
)

func TestRelTime(t *testing.T) {
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"}, {-30 * time.Second, "just now"}, {5 * time.Minute, "5 min ago"}, {3*time.Hour + 59*time.Minute, "3 h ago"},
		{47 * time.Hour, "47 h ago"}, {3 * 24 * time.Hour, "3 days ago"}, {90 * 24 * time.Hour, "3 months ago"},
		{800 * 24 * time.Hour, "2 years ago"}, {-12 * 24 * time.Hour, "in 12 days"}, {-2 * time.Hour, "in 2 h"},
	} {
		if got := relTime(now.Add(-c.d), now); got != c.want {
			t.Errorf("%v ago: %q, want %q", c.d, got, c.want)
		}
	}
	if relTime(time.Time{}, now) != "" {
		t.Error("zero time is not empty")
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	if got := exactTime(now, berlin); got != "2026-03-02 13:00 CET" {
		t.Errorf("exact time in Berlin: %q", got)
	}
}
