package natsauth_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// TestSharedInboxCredsRefused: creds issued before per-user inboxes (their
// JWT allows the shared _INBOX.>) are refused by the client with a message
// that says how to reissue them, and revoked by the server once the
// identity that issued them is loaded again.
func TestSharedInboxCredsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.json")
	id, err := natsauth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.AddTenant("acme"); err != nil {
		t.Fatal(err)
	}
	old, err := id.TestingSharedInboxCreds("acme", "legacy")
	if err != nil {
		t.Fatal(err)
	}
	if natsauth.CredsOwnInbox(old) {
		t.Fatal("shared-inbox creds reported as confined")
	}
	if _, err := client.InboxOption(old); !errors.Is(err, client.ErrSharedInbox) {
		t.Fatalf("the client accepted shared-inbox creds: %v", err)
	}
	if e := client.ErrSharedInbox; e.Code != "AccessDeniedException" || !strings.Contains(e.Message, "keyflow principal create") || !strings.Contains(e.Message, "keyflow dev") {
		t.Errorf("the refusal does not say how to reissue: %s", e.Message)
	}
	current, err := id.UserCreds("acme", "current")
	if err != nil {
		t.Fatal(err)
	}
	if !natsauth.CredsOwnInbox(current) {
		t.Fatal("new creds are not confined to their own inbox")
	}

	// Record the legacy key as an identity file of an older keyflow did
	// (no ownInbox), then load it again and start a server.
	tok, _ := jwt.ParseDecoratedJWT(old)
	uc, _ := jwt.DecodeUserClaims(tok)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	ps := f["principals"].(map[string]any)["acme"].(map[string]any)
	ps["legacy"] = map[string]any{"roles": []string{"crypto-user"}, "users": []any{map[string]any{"public": uc.Subject, "issued": uc.IssuedAt}},
		"createdAt": time.Now().UTC(), "createdBy": "old-keyflow"}
	b, _ = json.Marshal(f)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	id2, err := natsauth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Identity: id2, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	connect := func(creds []byte) error {
		opt, err := natsauth.CredsOption(creds)
		if err != nil {
			return err
		}
		nc, err := nats.Connect(ns.ClientURL(), opt, nats.NoReconnect())
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := connect(old); !errors.Is(err, nats.ErrAuthRevoked) && !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("the server did not refuse revoked shared-inbox creds: %v", err)
	}
	if err := connect(current); err != nil {
		t.Fatalf("current creds refused: %v", err)
	}
}
