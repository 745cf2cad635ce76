package rpc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/natsauth"
)

// userPub is the user public key a creds file was issued to.
func userPub(t *testing.T, creds []byte) string {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc.Subject
}

// TestReplySnooping replays issue 12's first attack: principal B of the
// same tenant subscribes to every reply subject it can name while A
// decrypts. The server refuses every subscription outside B's own inbox,
// and none of A's reply bytes reach B.
func TestReplySnooping(t *testing.T) {
	b := testbed.New(t)
	b.StartRPC(nil)
	ctx := context.Background()
	admin := b.Principal("alpha", "kadmin", keypolicy.RoleKeyAdmin)
	credsA := b.PrincipalCreds("alpha", "app", keypolicy.RoleCryptoUser)
	a := b.ClientWithCreds("alpha", "app", credsA)
	credsB := b.PrincipalCreds("alpha", "snoop", keypolicy.RoleAuditor)
	if _, err := admin.CreateKey(ctx, api.CreateKeyRequest{Alias: "secret"}); err != nil {
		t.Fatal(err)
	}

	// B connects as a hand-written program would, with its own error
	// handler to hear the server's refusals.
	var mu sync.Mutex
	var refused []string
	opt, err := natsauth.CredsOption(credsB)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(b.NATS), opt, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			mu.Lock()
			refused = append(refused, err.Error())
			mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	prefixA := natsauth.InboxPrefix(userPub(t, credsA))
	prefixB := natsauth.InboxPrefix(userPub(t, credsB))
	var got [][]byte
	targets := []string{"_INBOX.>", ">", "*.>", "_R_.>", prefixA + ".>", prefixB + ".>"}
	for _, subj := range targets {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			got = append(got, append([]byte(m.Subject+" "), m.Data...))
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	secret := []byte("TOPSECRET-" + strings.Repeat("x", 8))
	ct, err := a.Encrypt(ctx, api.EncryptRequest{KeyID: "alias/secret", Plaintext: secret})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		pt, err := a.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: ct.CiphertextBlob})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pt.Plaintext, secret) {
			t.Fatal("A's decrypt round trip failed")
		}
	}
	_ = nc.Flush()
	time.Sleep(200 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	for _, m := range got {
		if bytes.Contains(m, secret) || bytes.Contains(m, []byte(base64.StdEncoding.EncodeToString(secret))) {
			t.Errorf("B received A's plaintext: %q", m)
		}
	}
	if len(got) != 0 {
		t.Errorf("B received %d messages, want none: %q", len(got), got[0])
	}
	// Every subscription but B's own inbox was refused by the server,
	// A's inbox by name.
	for _, subj := range targets[:len(targets)-1] {
		found := false
		for _, r := range refused {
			if strings.Contains(r, `Subscription to "`+subj+`"`) {
				found = true
			}
		}
		if !found {
			t.Errorf("the server did not refuse B's subscription to %s (refusals: %q)", subj, refused)
		}
	}
	for _, r := range refused {
		if strings.Contains(r, prefixB) {
			t.Errorf("B's own inbox was refused: %s", r)
		}
	}
}
