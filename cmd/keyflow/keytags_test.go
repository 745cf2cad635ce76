package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"testing"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/workers/rpc"
)

// `keyflow key create --tag`, `key tag`, `key untag` and
// `key update-description` against a real stack, checked by the key's
// metadata after each, and a malformed tag refused before any request.
func TestKeyTagsCLI(t *testing.T) {
	st := newAuditStack(t)
	srv, err := rpc.Start(rpc.Config{Conn: st.nc, KMS: st.kms, Tenants: st.id,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	run := func(args ...string) api.KeyMetadata {
		t.Helper()
		out, errs, code := st.run(t, append([]string{"--creds", st.dir + "/admin.creds"}, args...)...)
		var m api.KeyMetadata
		if code != exitOK || json.Unmarshal([]byte(out), &m) != nil {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		return m
	}
	k := run("key", "create", "--tag", "team=payments", "--tag", "env=")
	if len(k.Tags) != 2 || k.Tags[0] != (api.Tag{TagKey: "team", TagValue: "payments"}) || k.Tags[1] != (api.Tag{TagKey: "env"}) {
		t.Fatalf("created with tags %+v", k.Tags)
	}
	k = run("key", "tag", k.KeyID, "env=prod", "owner=ada")
	if len(k.Tags) != 3 || k.Tags[1].TagValue != "prod" || k.Tags[2].TagKey != "owner" {
		t.Fatalf("after tag: %+v", k.Tags)
	}
	k = run("key", "untag", k.KeyID, "team", "nope")
	if len(k.Tags) != 2 || k.Tags[0].TagKey != "env" {
		t.Fatalf("after untag: %+v", k.Tags)
	}
	k = run("key", "update-description", k.KeyID, "billing exports")
	if k.Description != "billing exports" {
		t.Fatalf("description %q", k.Description)
	}
	if _, errs, code := st.run(t, "--creds", st.dir+"/admin.creds", "key", "tag", k.KeyID, "novalue"); code != exitUsage || errs == "" {
		t.Fatalf("a tag without = : exit %d, stderr %q", code, errs)
	}
}
