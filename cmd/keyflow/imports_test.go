package main

import (
	"errors"
	"testing"
	"time"
)

func TestParseValidTo(t *testing.T) {
	for in, want := range map[string]time.Time{
		"2027-06-30":                time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC),
		"2027-06-30T12:00:00Z":      time.Date(2027, 6, 30, 12, 0, 0, 0, time.UTC),
		"2027-06-30T14:00:00+02:00": time.Date(2027, 6, 30, 12, 0, 0, 0, time.UTC),
	} {
		got, err := parseValidTo(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseValidTo(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "tomorrow", "30/06/2027", "2027-06-30 12:00"} {
		var ue usageError
		if _, err := parseValidTo(in); !errors.As(err, &ue) {
			t.Errorf("parseValidTo(%q): %v, want a usage error", in, err)
		}
	}
}
