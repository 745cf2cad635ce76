// Package testbed assembles the real parts of keyflow for tests: a SoftHSM
// token of the test's own, an in-process nats-server with JetStream on a temp
// dir in operator mode, the KV store, the audit stream and the domain
// service. Nothing is mocked.
//
// A test binary that uses it must call pkcs11test.Main from TestMain, so
// SoftHSM is configured before the library initialises:
//
//	func TestMain(m *testing.M) { pkcs11test.Main(m) }
package testbed

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/rpc"
)

// Bed is one test's keyflow.
type Bed struct {
	T        testing.TB
	HSM      *pkcs11.Token
	NATS     *server.Server
	Identity *natsauth.Identity
	Conn     *nats.Conn // the service account's connection
	JS       jetstream.JetStream
	Store    *kvstore.Store
	Gov      *kvstore.Governance // tenant policies and approvals
	Audit    *jsaudit.Publisher
	KMS      *kms.Service

	region string
	now    func() time.Time
}

// New starts a bed with tenants "alpha" and "beta".
func New(t testing.TB) *Bed {
	t.Helper()
	return NewOn(t, pkcs11test.NewToken(t))
}

// Options change how NewWith starts a bed.
type Options struct {
	// SyncAlways fsyncs every JetStream write before its ack
	// (natsserver.Config.SyncAlways), as `keyflow dev --sync always`.
	SyncAlways bool
	// Region names the deployment for multi-region keys (kms.Config.Region
	// and the JetStream domain); LeafListen and LeafRemotes link it to
	// other beds (natsserver.Config, docs/multi-region.md).
	Region      string
	LeafListen  string
	LeafRemotes []natsserver.LeafRemote
	// Now is the domain service's clock (kms.Config.Now); nil is
	// time.Now.
	Now func() time.Time
}

// NewWith is New with options.
func NewWith(t testing.TB, o Options) *Bed {
	t.Helper()
	return newOn(t, pkcs11test.NewToken(t), o)
}

// NewOn starts a bed on an HSM token the test already has: a fresh NATS
// and store over the same root key, as a stack rebuilt from a backup is.
func NewOn(t testing.TB, tok *pkcs11.Token) *Bed {
	t.Helper()
	return newOn(t, tok, Options{})
}

func newOn(t testing.TB, tok *pkcs11.Token, o Options) *Bed {
	t.Helper()
	ctx := context.Background()
	b := &Bed{T: t, HSM: tok, region: o.Region, now: o.Now}
	var err error
	if b.Identity, err = natsauth.Load(t.TempDir() + "/identity.json"); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"alpha", "beta"} {
		if _, err := b.Identity.AddTenant(tenant); err != nil {
			t.Fatal(err)
		}
	}
	if b.NATS, err = natsserver.Start(natsserver.Config{StoreDir: t.TempDir(), Identity: b.Identity, SyncAlways: o.SyncAlways,
		JetStreamDomain: o.Region, LeafListen: o.LeafListen, LeafRemotes: o.LeafRemotes}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.NATS.Shutdown(); b.NATS.WaitForShutdown() })
	if b.Conn, err = natsserver.ConnectService(b.NATS, b.Identity, "testbed"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Conn.Close)
	if b.JS, err = jetstream.New(b.Conn); err != nil {
		t.Fatal(err)
	}
	if b.Store, err = kvstore.Open(ctx, b.JS); err != nil {
		t.Fatal(err)
	}
	gctx, stopGov := context.WithCancel(ctx)
	t.Cleanup(stopGov)
	if b.Gov, err = kvstore.OpenGovernance(gctx, b.JS); err != nil {
		t.Fatal(err)
	}
	// Audit records go out on their own connection, as in the dev stack:
	// replies and audit publishes then do not queue behind each other.
	auditConn, err := natsserver.ConnectService(b.NATS, b.Identity, "testbed-audit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auditConn.Close)
	auditJS, err := jetstream.New(auditConn)
	if err != nil {
		t.Fatal(err)
	}
	if b.Audit, err = jsaudit.Open(ctx, auditJS); err != nil {
		t.Fatal(err)
	}
	extra, err := b.Audit.Spread(jsaudit.DefaultConns)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range extra {
		t.Cleanup(c.Close)
	}
	b.KMS = b.NewKMS(b.Audit)
	b.watchAuthz(b.KMS)
	b.Identity.SetPlatformTenant(PlatformTenant)
	return b
}

// NewKMS returns another domain service over the same HSM and store (a
// second worker), with the given audit sink.
func (b *Bed) NewKMS(audit events.Sink) *kms.Service {
	b.T.Helper()
	s, err := kms.New(context.Background(), kms.Config{
		HSM: b.HSM, Store: b.Store, Audit: audit, Source: "/keyflow/test", Governance: b.Gov, Region: b.region, Now: b.now,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		b.T.Fatal(err)
	}
	b.T.Cleanup(s.Close)
	return s
}

// StartRPC serves the NATS API over b.KMS.
func (b *Bed) StartRPC(rot rpc.Rotator) *rpc.Server {
	b.T.Helper()
	srv, err := rpc.Start(rpc.Config{Conn: b.Conn, KMS: b.KMS, Tenants: b.Identity, JS: b.JS, Rotator: rot, Workers: 16,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.T.Fatal(err)
	}
	b.T.Cleanup(srv.Stop)
	return srv
}

// Client connects as principal of tenant through the tenant's account, as a
// real application would.
func (b *Bed) Client(tenant, principal string) *client.Client {
	b.T.Helper()
	creds, err := b.Identity.UserCreds(tenant, principal)
	if err != nil {
		b.T.Fatal(err)
	}
	nc, err := natsserver.Connect(b.NATS, creds, principal)
	if err != nil {
		b.T.Fatal(err)
	}
	b.T.Cleanup(nc.Close)
	c, err := client.Dial(context.Background(), client.Options{Conn: nc, Creds: creds, Tenant: tenant, Timeout: 20 * time.Second})
	if err != nil {
		b.T.Fatal(err)
	}
	return c
}

// AuditEvent is a stored CloudEvent decoded for assertions.
type AuditEvent struct {
	Seq       uint64
	Raw       []byte
	ID        string         `json:"id"`
	Type      string         `json:"type"`
	Source    string         `json:"source"`
	Subject   string         `json:"subject"`
	Time      time.Time      `json:"time"`
	Tenant    string         `json:"tenant"`
	Principal string         `json:"principal"`
	Outcome   string         `json:"outcome"`
	RequestID string         `json:"requestid"`
	ErrorCode string         `json:"errorcode"`
	Data      map[string]any `json:"data"`
}

// Events returns every audit event of tenant stored so far ("-" for
// requests refused before a tenant was known).
func (b *Bed) Events(tenant string) []AuditEvent {
	b.T.Helper()
	var out []AuditEvent
	var after uint64
	for {
		page, err := jsaudit.Read(context.Background(), b.JS, jsaudit.ReadParams{Tenant: tenant, AfterSeq: after, Limit: 1000, Wait: 100 * time.Millisecond})
		if err != nil {
			b.T.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		for _, s := range page {
			var e AuditEvent
			if err := json.Unmarshal(s.Event, &e); err != nil {
				b.T.Fatalf("audit event is not JSON: %v", err)
			}
			e.Seq, e.Raw = s.Seq, s.Event
			out = append(out, e)
			after = s.Seq
		}
	}
}

// EventsOfType filters Events.
func (b *Bed) EventsOfType(tenant, typ string) []AuditEvent {
	var out []AuditEvent
	for _, e := range b.Events(tenant) {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}
