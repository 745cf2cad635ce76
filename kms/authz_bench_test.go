package kms_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// The cost of authorization on the hot path, next to the operation it
// guards. Run them together:
//
//	go test -run '^$' -bench 'Authorize|EncryptNoAuditBaseline' -benchtime 2s -count 3 ./kms/
//
// BenchmarkEncryptNoAuditBaseline is kms.Encrypt of 32 bytes through
// SoftHSM with an audit sink that stores nothing; the Authorize benchmarks
// are the check the transport runs before it, from warm caches (as on a
// worker, where the store watch keeps them fresh).

func benchService(b *testing.B) (*testbed.Bed, *kms.Service) {
	bed := testbed.New(b)
	svc := bed.NewKMS(events.SinkFunc(func(context.Context, events.Record) error { return nil }))
	return bed, svc
}

var benchCaller = kms.Caller{Tenant: "alpha", Principal: "svc-bench", Roles: []string{"crypto-user"}}

func BenchmarkEncryptNoAuditBaseline(b *testing.B) {
	_, svc := benchService(b)
	ctx := context.Background()
	k, err := svc.CreateKey(ctx, benchCaller, kms.CreateKeyParams{Alias: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 32)
	b.ResetTimer()
	for b.Loop() {
		if _, err := svc.Encrypt(ctx, benchCaller, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthorizeDefaultPolicy(b *testing.B) {
	_, svc := benchService(b)
	benchAuthorize(b, svc, "")
}

// BenchmarkAuthorizeKeyPolicy: a policy of 10 statements and 20 grants,
// where only the last grant allows the caller (every statement and grant
// is looked at).
func BenchmarkAuthorizeKeyPolicy(b *testing.B) {
	_, svc := benchService(b)
	var st []string
	for i := range 10 {
		st = append(st, fmt.Sprintf(`{"sid":"S%d","effect":"Allow","principals":["user-%d","role:auditor"],"operations":["Encrypt","Decrypt"],"conditions":{"encryptionContextSubset":{"app":"a%d"}}}`, i, i, i))
	}
	benchAuthorize(b, svc, `{"version":"2026-11-01","statements":[`+strings.Join(st, ",")+`]}`)
}

func benchAuthorize(b *testing.B, svc *kms.Service, policy string) {
	ctx := context.Background()
	admin := kms.Caller{Tenant: "alpha", Principal: "admin", Roles: []string{"key-admin"}}
	k, err := svc.CreateKey(ctx, admin, kms.CreateKeyParams{Alias: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if policy != "" {
		if _, err := svc.SetKeyPolicy(ctx, admin, k.ID, []byte(policy)); err != nil {
			b.Fatal(err)
		}
		for i := range 20 {
			grantee := fmt.Sprintf("other-%d", i)
			if i == 19 {
				grantee = benchCaller.Principal
			}
			if _, err := svc.CreateGrant(ctx, admin, kms.CreateGrantParams{KeyRef: k.ID, Grantee: grantee, Operations: []keypolicy.Action{keypolicy.ActionEncrypt}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	p := kms.AuthorizeParams{Operation: "crypto.encrypt", Targets: []kms.AccessTarget{{KeyRef: k.ID, Context: kms.EncryptionContext{"app": "x"}}}}
	if err := svc.Authorize(ctx, benchCaller, p); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := svc.Authorize(ctx, benchCaller, p); err != nil {
			b.Fatal(err)
		}
	}
}
