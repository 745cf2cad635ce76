package kmip_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/workers/kmip"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// KMIP tags and enumerations the tests write (KMIP 1.4, 9.1.3).
const (
	tAttribute           ttlv.Tag = 0x420008
	tAttributeIndex      ttlv.Tag = 0x420009
	tAttributeName       ttlv.Tag = 0x42000A
	tAttributeValue      ttlv.Tag = 0x42000B
	tBatchCount          ttlv.Tag = 0x42000D
	tBatchItem           ttlv.Tag = 0x42000F
	tCryptoAlgorithm     ttlv.Tag = 0x420028
	tCryptoLength        ttlv.Tag = 0x42002A
	tKey                 ttlv.Tag = 0x42003F
	tKeyBlock            ttlv.Tag = 0x420040
	tKeyFormatType       ttlv.Tag = 0x420042
	tKeyMaterial         ttlv.Tag = 0x420043
	tKeyValue            ttlv.Tag = 0x420045
	tMaximumItems        ttlv.Tag = 0x42004F
	tName                ttlv.Tag = 0x420053
	tNameType            ttlv.Tag = 0x420054
	tNameValue           ttlv.Tag = 0x420055
	tObjectType          ttlv.Tag = 0x420057
	tOperation           ttlv.Tag = 0x42005C
	tProtocolVersion     ttlv.Tag = 0x420069
	tMajor               ttlv.Tag = 0x42006A
	tMinor               ttlv.Tag = 0x42006B
	tQueryFunction       ttlv.Tag = 0x420074
	tRequestHeader       ttlv.Tag = 0x420077
	tRequestMessage      ttlv.Tag = 0x420078
	tRequestPayload      ttlv.Tag = 0x420079
	tResponsePayload     ttlv.Tag = 0x42007C
	tResultMessage       ttlv.Tag = 0x42007D
	tResultReason        ttlv.Tag = 0x42007E
	tResultStatus        ttlv.Tag = 0x42007F
	tRevocationReason    ttlv.Tag = 0x420081
	tRevocationCode      ttlv.Tag = 0x420082
	tSecretData          ttlv.Tag = 0x420085
	tSecretDataType      ttlv.Tag = 0x420086
	tState               ttlv.Tag = 0x42008D
	tSymmetricKey        ttlv.Tag = 0x42008F
	tTemplateAttribute   ttlv.Tag = 0x420091
	tUniqueIdentifier    ttlv.Tag = 0x420094
	tData                ttlv.Tag = 0x4200C2
	tMACData             ttlv.Tag = 0x4200C6
	tOffsetItems         ttlv.Tag = 0x4200D4
	tLocatedItems        ttlv.Tag = 0x4200D5
	tVendorIdentfication ttlv.Tag = 0x42009D

	opCreate, opRegister, opLocate, opGet          = 0x01, 0x03, 0x08, 0x0A
	opGetAttributes, opGetAttributeList            = 0x0B, 0x0C
	opAddAttribute, opModifyAttribute, opDeleteAtt = 0x0D, 0x0E, 0x0F
	opActivate, opRevoke, opDestroy, opQuery       = 0x12, 0x13, 0x14, 0x18
	opDiscover, opEncrypt, opDecrypt, opMAC        = 0x1E, 0x1F, 0x20, 0x23

	reasonItemNotFound     = 0x01
	reasonInvalidMessage   = 0x04
	reasonOpNotSupported   = 0x05
	reasonInvalidField     = 0x07
	reasonFeatureNotSupp   = 0x08
	reasonPermissionDenied = 0x0C
)

// fixture is a KMIP server over a real testbed (SoftHSM, NATS, audit
// stream) with a dev CA.
type fixture struct {
	bed  *testbed.Bed
	srv  *kmip.Server
	addr string
	ca   *kmip.CA
	life *recordingLifecycle
}

// recordingLifecycle stands in for the Temporal deletion workflow, which
// lives behind an interface the server calls; it records what it was asked.
type recordingLifecycle struct {
	mu      sync.Mutex
	keys    []string // ScheduleDeletion
	changed []string // KeyChanged
}

func (r *recordingLifecycle) KeyChanged(_ context.Context, _ kms.Caller, k *kms.Key) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changed = append(r.changed, k.ID)
	return nil
}

func (r *recordingLifecycle) ScheduleDeletion(_ context.Context, _ kms.Caller, k *kms.Key) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = append(r.keys, k.ID)
	return "wf-" + k.ID, nil
}

// domainRotation runs the rotation workflow's domain steps in line (next
// version, create it, make it primary), as the workflow's activities do.
func domainRotation(k *kms.Service) kmip.Rotator {
	return func(ctx context.Context, c kms.Caller, keyID string) (uint32, error) {
		n, err := k.NextVersion(ctx, c, keyID)
		if err != nil {
			return 0, err
		}
		if _, err := k.CreateVersion(ctx, c, kms.CreateVersionParams{KeyID: keyID, Version: n}); err != nil {
			return 0, err
		}
		_, err = k.SetPrimaryVersion(ctx, c, kms.SetPrimaryParams{KeyID: keyID, Version: n})
		return n, err
	}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	return newFixtureOn(t, testbed.New(t))
}

// newFixtureOn is newFixture over a given testbed.
func newFixtureOn(t testing.TB, bed *testbed.Bed) *fixture {
	t.Helper()
	ca, err := kmip.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ca.ServerTLS([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{bed: bed, ca: ca, life: &recordingLifecycle{}}
	f.srv, err = kmip.New(kmip.Options{KMS: bed.KMS, TLS: tc, Roles: kmip.DirectoryRoles(bed.Identity), Lifecycle: f.life, Rotator: domainRotation(bed.KMS)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.srv.Close() })
	f.addr = a.String()
	return f
}

// principal registers tenant/name with roles (nil: every role, the
// bootstrap path) and issues its client certificate.
func (f *fixture) principal(t testing.TB, tenant, name string, roles ...keypolicy.Role) *tls.Config {
	t.Helper()
	if roles == nil {
		if _, err := f.bed.Identity.UserCreds(tenant, name); err != nil {
			t.Fatal(err)
		}
	} else {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		if _, err := f.bed.Identity.IssuePrincipal(context.Background(), kms.IssuePrincipalParams{Tenant: tenant, Name: name, Roles: roles, PublicKey: pub, CreatedBy: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cert, key, err := f.ca.IssueClient(dir, name, tenant, name, false)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := f.ca.ClientTLS(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// client is a minimal KMIP client: one TLS connection, one request at a
// time.
type client struct {
	t    testing.TB
	conn *tls.Conn
	v    [2]int32
}

func (f *fixture) dial(t testing.TB, tc *tls.Config) *client {
	t.Helper()
	c, err := tls.Dial("tcp", f.addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &client{t: t, conn: c, v: [2]int32{1, 4}}
}

func request(v [2]int32, items ...ttlv.Item) ttlv.Item {
	hdr := ttlv.Struct(tRequestHeader,
		ttlv.Struct(tProtocolVersion, ttlv.Int(tMajor, v[0]), ttlv.Int(tMinor, v[1])),
		ttlv.Int(tBatchCount, int32(len(items))))
	return ttlv.Struct(tRequestMessage, append([]ttlv.Item{hdr}, items...)...)
}

func batch(op uint32, payload ...ttlv.Item) ttlv.Item {
	return ttlv.Struct(tBatchItem, ttlv.Enum(tOperation, op), ttlv.Struct(tRequestPayload, payload...))
}

// raw sends b and reads one response message.
func (c *client) raw(b []byte) (ttlv.Item, error) {
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		return ttlv.Item{}, err
	}
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(c.conn, hdr); err != nil {
		return ttlv.Item{}, err
	}
	msg := make([]byte, 8+int(binary.BigEndian.Uint32(hdr[4:])))
	copy(msg, hdr)
	if _, err := io.ReadFull(c.conn, msg[8:]); err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Decode(msg, ttlv.DefaultLimits)
}

// result is one batch item's outcome.
type result struct {
	status, reason uint32
	message        string
	payload        *ttlv.Item
}

func (r result) ok() bool { return r.status == 0 }

func (r result) String() string {
	return fmt.Sprintf("status=%d reason=0x%02x message=%q", r.status, r.reason, r.message)
}

// do sends one operation and returns its result.
func (c *client) do(op uint32, payload ...ttlv.Item) result {
	c.t.Helper()
	resp, err := c.raw(ttlv.Encode(request(c.v, batch(op, payload...))))
	if err != nil {
		c.t.Fatalf("operation 0x%02x: %v", op, err)
	}
	return firstResult(c.t, resp)
}

func firstResult(t testing.TB, resp ttlv.Item) result {
	t.Helper()
	bi := resp.Find(tBatchItem)
	if bi == nil {
		t.Fatalf("response without a batch item: %+v", resp)
	}
	st, _ := bi.EnumOf(tResultStatus)
	re, _ := bi.EnumOf(tResultReason)
	msg, _ := bi.TextOf(tResultMessage)
	return result{status: st, reason: re, message: msg, payload: bi.Find(tResponsePayload)}
}

// must runs op and fails the test unless it succeeded.
func (c *client) must(op uint32, payload ...ttlv.Item) *ttlv.Item {
	c.t.Helper()
	r := c.do(op, payload...)
	if !r.ok() {
		c.t.Fatalf("operation 0x%02x failed: %v", op, r)
	}
	return r.payload
}

func attribute(name string, v ttlv.Item) ttlv.Item {
	v.Tag = tAttributeValue
	return ttlv.Struct(tAttribute, ttlv.Text(tAttributeName, name), v)
}

func nameAttr(n string) ttlv.Item {
	return attribute("Name", ttlv.Struct(0, ttlv.Text(tNameValue, n), ttlv.Enum(tNameType, 1)))
}

// createAES asks for an AES-256 key with the extra template attributes.
func (c *client) createAES(attrs ...ttlv.Item) string {
	c.t.Helper()
	ta := append([]ttlv.Item{
		attribute("Cryptographic Algorithm", ttlv.Enum(0, 3)),
		attribute("Cryptographic Length", ttlv.Int(0, 256)),
		attribute("Cryptographic Usage Mask", ttlv.Int(0, 0x0C)),
	}, attrs...)
	p := c.must(opCreate, ttlv.Enum(tObjectType, 2), ttlv.Struct(tTemplateAttribute, ta...))
	id, _ := p.TextOf(tUniqueIdentifier)
	return id
}

func uidItem(id string) ttlv.Item { return ttlv.Text(tUniqueIdentifier, id) }

// stateOf reads the State attribute.
func (c *client) stateOf(id string) uint32 {
	c.t.Helper()
	p := c.must(opGetAttributes, uidItem(id), ttlv.Text(tAttributeName, "State"))
	a := p.Find(tAttribute)
	if a == nil {
		c.t.Fatalf("no State attribute for %s", id)
	}
	v, _ := a.EnumOf(tAttributeValue)
	return v
}

var _ net.Conn = (*tls.Conn)(nil)
