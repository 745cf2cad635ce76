package main

import (
	"errors"
	"testing"
	"time"
)

// TestParseWhen: --activation-date and --valid-to take the same forms, a
// bare date included (the README's `key create --activation-date
// 2027-01-01`).
func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, flag := range []string{"activation-date", "valid-to"} {
		for in, want := range map[string]time.Time{
			"2027-06-30":                time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC),
			"2027-06-30T12:00:00Z":      time.Date(2027, 6, 30, 12, 0, 0, 0, time.UTC),
			"2027-06-30T14:00:00+02:00": time.Date(2027, 6, 30, 12, 0, 0, 0, time.UTC),
			"+2d":                       now.Add(48 * time.Hour),
			"+36h":                      now.Add(36 * time.Hour),
		} {
			got, err := parseWhen(flag, in, now)
			if err != nil || !got.Equal(want) {
				t.Errorf("--%s %q = %v, %v; want %v", flag, in, got, err, want)
			}
		}
		for _, in := range []string{"", "tomorrow", "30/06/2027", "2027-06-30 12:00", "+0h", "+x"} {
			var ue usageError
			if _, err := parseWhen(flag, in, now); !errors.As(err, &ue) {
				t.Errorf("--%s %q: %v, want a usage error", flag, in, err)
			}
		}
	}
}
