package awskms_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/awskms"
	"github.com/keyflow/keyflow/workers/rpc"
)

// TestMain points SoftHSM at a temporary token directory before anything
// initialises the PKCS#11 library; every test then takes a token of its own.
func TestMain(m *testing.M) { pkcs11test.Main(m) }

// fixture is one test's keyflow behind the AWS KMS API: the real domain,
// NATS store and audit stream (testbed), the NATS services (whose dispatch
// the gateway calls in process) and the gateway on an httptest server.
type fixture struct {
	bed *testbed.Bed
	inv *rpc.Server // the gateway's Invoker
	gw  *awskms.Server
	url string
	hs  *httptest.Server
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, testbed.New(t))
}

// newFixtureOn is newFixture over a bed the test made (a region's, say).
func newFixtureOn(t testing.TB, b *testbed.Bed) *fixture {
	t.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Workers: 16,
		Rotator: inProcessRotator{b.KMS}, Lifecycle: &noTimers{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	gw, err := awskms.New(awskms.Options{KMS: b.KMS, Invoker: srv,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw)
	t.Cleanup(hs.Close)
	return &fixture{bed: b, gw: gw, url: hs.URL, hs: hs, inv: srv}
}

// accessKey registers a principal with roles and issues it an access key,
// as `keyflow access-key create` does.
func (f *fixture) accessKey(t testing.TB, tenant, principal string, roles ...keypolicy.Role) (id, secret string) {
	t.Helper()
	f.bed.PrincipalCreds(tenant, principal, roles...)
	admin := kms.Caller{Tenant: tenant, Principal: "root", Roles: []string{string(keypolicy.RoleTenantAdmin)}}
	k, secret, err := f.bed.KMS.CreateAccessKey(context.Background(), admin, f.bed.Identity, principal)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID, secret
}

// sdk is a real AWS SDK for Go v2 KMS client for the gateway.
func (f *fixture) sdk(id, secret string) *awskmssdk.Client {
	return awskmssdk.New(awskmssdk.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(f.url), HTTPClient: f.hs.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(id, secret, ""), RetryMaxAttempts: 1,
	})
}

// client issues an access key to a new principal and returns its SDK
// client.
func (f *fixture) client(t testing.TB, tenant, principal string, roles ...keypolicy.Role) *awskmssdk.Client {
	id, secret := f.accessKey(t, tenant, principal, roles...)
	return f.sdk(id, secret)
}

// inProcessRotator rotates with the domain's own steps, as the rotation
// workflow's activities do.
type inProcessRotator struct{ kms *kms.Service }

func (r inProcessRotator) Rotate(ctx context.Context, c kms.Caller, keyID string) (*rpc.RotateResult, error) {
	next, err := r.kms.NextVersion(ctx, c, keyID)
	if err != nil {
		return nil, err
	}
	if _, err := r.kms.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: keyID, Version: next}); err != nil {
		return nil, err
	}
	res, err := r.kms.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: keyID, Version: next})
	if err != nil {
		return nil, err
	}
	return &rpc.RotateResult{KeyID: keyID, PreviousVersion: res.PreviousPrimary, NewVersion: next, WorkflowID: "test-" + keyID}, nil
}

// noTimers stands in for the Temporal lifecycle workflows: the deletion
// window is recorded, never run out.
type noTimers struct{ mu sync.Mutex }

func (*noTimers) KeyChanged(context.Context, kms.Caller, *kms.Key) error { return nil }
func (l *noTimers) ScheduleDeletion(_ context.Context, _ kms.Caller, k *kms.Key) (string, error) {
	return "deletion-" + k.ID, nil
}
func (*noTimers) CancelDeletion(context.Context, kms.Caller, string) error { return nil }
func (*noTimers) ScheduleRetirement(_ context.Context, _ kms.Caller, keyID string, version uint32, _ time.Time) (string, error) {
	return "retirement-" + keyID, nil
}
func (*noTimers) CancelRetirement(context.Context, kms.Caller, string, uint32) error { return nil }
func (*noTimers) RemediationWorkflowID(tenant, keyID string, version uint32) string {
	return "remediation-" + keyID
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
