package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/rpc"
)

// `keyflow key alias` against a real stack (NATS, the rpc worker,
// SoftHSM): create, move (update), delete and list, each checked by
// what the key list says afterwards, and the refusals.
func TestKeyAliasCLI(t *testing.T) {
	st := newAuditStack(t)
	srv, err := rpc.Start(rpc.Config{Conn: st.nc, KMS: st.kms, Tenants: st.id,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	admin := kms.Caller{Tenant: "alpha", Principal: "admin"}
	a, err := st.kms.CreateKey(t.Context(), admin, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	// key create -o raw prints the bare key ID (the README names a new
	// key with $(keyflow key create -o raw)).
	out, errs, code := st.run(t, "--creds", st.dir+"/admin.creds", "-o", "raw", "key", "create")
	b, err := st.kms.DescribeKey(t.Context(), admin, strings.TrimSuffix(out, "\n"))
	if code != exitOK || err != nil || b.ID+"\n" != out {
		t.Fatalf("key create -o raw: exit %d, stdout %q, stderr %q (%v)", code, out, errs, err)
	}
	named, err := st.kms.CreateKey(t.Context(), admin, kms.CreateKeyParams{Alias: "taken"})
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, int) {
		return st.run(t, append([]string{"--creds", st.dir + "/admin.creds"}, args...)...)
	}
	aliases := func() map[string]string {
		t.Helper()
		out, errs, code := run("key", "alias", "list")
		var r api.ListAliasesReply
		if code != exitOK || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("alias list: exit %d, stdout %q, stderr %q", code, out, errs)
		}
		m := map[string]string{}
		for _, e := range r.Aliases {
			m[e.Alias] = e.KeyID
		}
		return m
	}
	keyOf := func(alias string) string {
		t.Helper()
		k, err := st.kms.DescribeKey(t.Context(), admin, alias)
		if err != nil {
			return ""
		}
		return k.ID
	}

	// create: JSON key metadata of the key now named; the alias resolves.
	out, errs, code = run("key", "alias", "create", "alias/orders", "--key", a.ID)
	var meta api.KeyMetadata
	if code != exitOK || json.Unmarshal([]byte(out), &meta) != nil || meta.KeyID != a.ID || meta.Alias != "orders" {
		t.Fatalf("create: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got := aliases(); got["alias/orders"] != a.ID || got["alias/taken"] != named.ID || len(got) != 2 {
		t.Fatalf("after create, list = %v", got)
	}

	// update moves the alias to b: a loses it, b has it, and the alias
	// resolves to b.
	out, errs, code = run("-o", "table", "key", "alias", "update", "orders", "--key", b.ID)
	if code != exitOK || !strings.Contains(out, b.ID) || !strings.Contains(out, "orders") {
		t.Fatalf("update: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got := aliases(); got["alias/orders"] != b.ID || len(got) != 2 {
		t.Fatalf("after update, list = %v", got)
	}
	if keyOf("orders") != b.ID {
		t.Fatalf("orders resolves to %q, want %s", keyOf("orders"), b.ID)
	}
	if k, _ := st.kms.DescribeKey(t.Context(), admin, a.ID); k.Alias != "" {
		t.Fatalf("key a kept alias %q after the move", k.Alias)
	}

	// Refusals: exit 1 with the stable code, and nothing changes.
	for _, tc := range []struct {
		args []string
		code string
	}{
		{[]string{"create", "taken", "--key", a.ID}, "AlreadyExistsException"},
		{[]string{"create", "second", "--key", b.ID}, "LimitExceededException"},
		{[]string{"update", "orders", "--key", "00000000-0000-0000-0000-000000000000"}, "NotFoundException"},
		{[]string{"create", "fresh", "--key", "alias/nosuchkey"}, "NotFoundException"},
		{[]string{"update", "nosuchalias", "--key", a.ID}, "NotFoundException"},
		{[]string{"delete", "nosuchalias"}, "NotFoundException"},
	} {
		_, errs, code := run(append([]string{"key", "alias"}, tc.args...)...)
		if code != exitRefused || !strings.Contains(errs, tc.code) {
			t.Errorf("alias %v: exit %d, stderr %q; want exit %d and %s", tc.args, code, errs, exitRefused, tc.code)
		}
	}
	if got := aliases(); got["alias/orders"] != b.ID || got["alias/taken"] != named.ID || len(got) != 2 {
		t.Fatalf("after refusals, list = %v", got)
	}
	if _, _, code := run("key", "alias", "create", "x"); code != exitUsage {
		t.Fatalf("create without --key: exit %d, want %d", code, exitUsage)
	}

	// delete: the alias is gone, its key stays usable by ID.
	out, errs, code = run("key", "alias", "delete", "orders")
	if code != exitOK || !strings.Contains(out, `"alias": "alias/orders"`) || !strings.Contains(out, `"deleted": true`) {
		t.Fatalf("delete: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if got := aliases(); len(got) != 1 || got["alias/taken"] != named.ID {
		t.Fatalf("after delete, list = %v", got)
	}
	if keyOf("orders") != "" || keyOf(b.ID) != b.ID {
		t.Fatalf("after delete: orders resolves to %q, key b to %q", keyOf("orders"), keyOf(b.ID))
	}
	out, _, code = run("-o", "table", "key", "alias", "list")
	if code != exitOK || !strings.HasPrefix(out, "ALIAS") || !strings.Contains(out, "alias/taken") || strings.Contains(out, "orders") {
		t.Fatalf("list -o table: exit %d, %q", code, out)
	}
}
