package roles_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"

	"github.com/keyflow/keyflow/deploy/roles"
)

// get fetches a path of the ops handler and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// readiness decodes /readyz.
func readiness(t *testing.T, h http.Handler) (int, map[string]string) {
	t.Helper()
	code, body := get(t, h, "/readyz")
	var r struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("readyz: %v: %s", err, body)
	}
	if r.Ready != (code == http.StatusOK) {
		t.Fatalf("readyz says ready=%v with status %d", r.Ready, code)
	}
	return code, r.Checks
}

// sample reads one sample's value from a Prometheus text exposition.
func sample(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReadyzFailsWithTheFailingCheck(t *testing.T) {
	h := roles.OpsHandler([]roles.Check{
		{Name: "nats", Fn: func(context.Context) error { return nil }},
		{Name: "hsm", Fn: func(context.Context) error { return errors.New("CKR_DEVICE_REMOVED") }},
	}, roles.NewMetrics())
	code, checks := readiness(t, h)
	if code != http.StatusServiceUnavailable || checks["nats"] != "ok" || checks["hsm"] != "CKR_DEVICE_REMOVED" {
		t.Fatalf("readyz = %d %v", code, checks)
	}
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("healthz = %d %q", code, body)
	}
}
