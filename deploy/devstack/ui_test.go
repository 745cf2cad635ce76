package devstack_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/deploy/devstack"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
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

// The dev stack serves the Temporal Web UI on loopback: its index page,
// and its API, which reaches the frontend only through the mutual TLS of
// the dev stack (the frontend refuses any client without keyflow's
// certificate), so the namespace it describes proves the path.
func TestWebUIServesItsIndexAndReachesTheFrontend(t *testing.T) {
	st, err := devstack.Start(context.Background(), devstack.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", TemporalListen: "127.0.0.1:0", UIListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	if !strings.HasPrefix(st.UIURL, "http://127.0.0.1:") {
		t.Fatalf("UI URL %q", st.UIURL)
	}
	code, body := httpGet(t, st.UIURL+"/")
	if code != http.StatusOK || !strings.Contains(body, "<html") || !strings.Contains(body, "_app/") {
		t.Fatalf("index page: %d\n%.300s", code, body)
	}
	code, body = httpGet(t, st.UIURL+"/api/v1/namespaces/"+st.Temporal.Namespace())
	var ns struct {
		NamespaceInfo struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"namespaceInfo"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ns) != nil || ns.NamespaceInfo.Name != st.Temporal.Namespace() {
		t.Fatalf("the UI's API did not describe the namespace through the frontend: %d %.300s", code, body)
	}
}

func TestWebUIListensOnLoopbackOnly(t *testing.T) {
	_, err := devstack.Start(context.Background(), devstack.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", TemporalListen: "127.0.0.1:0", UIListen: "0.0.0.0:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("UI on 0.0.0.0: %v", err)
	}
}
