package kmip_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/kmip"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

// TestBaselineLifecycle runs the Baseline Server operations the way a
// KMIP client does, and checks that each KMIP object is a keyflow key.
func TestBaselineLifecycle(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))

	// Discover Versions: the server's list, restricted to the client's.
	p := c.must(opDiscover)
	if n := len(p.All(tProtocolVersion)); n != 5 {
		t.Errorf("Discover Versions offered %d versions, want 5 (1.4 .. 1.0)", n)
	}
	p = c.must(opDiscover, ttlv.Struct(tProtocolVersion, ttlv.Int(tMajor, 1), ttlv.Int(tMinor, 2)), ttlv.Struct(tProtocolVersion, ttlv.Int(tMajor, 2), ttlv.Int(tMinor, 0)))
	if vs := p.All(tProtocolVersion); len(vs) != 1 {
		t.Errorf("Discover Versions for {1.2, 2.0} returned %d versions, want only 1.2", len(vs))
	}
	// Query.
	p = c.must(opQuery, ttlv.Enum(tQueryFunction, 1), ttlv.Enum(tQueryFunction, 3))
	if ops := p.All(tOperation); len(ops) < 9 {
		t.Errorf("Query listed %d operations", len(ops))
	}
	if v, _ := p.TextOf(tVendorIdentfication); v != "keyflow" {
		t.Errorf("vendor = %q", v)
	}

	// Create: a keyflow key, visible to keyflow's own API.
	id := c.createAES(nameAttr("db-master-1"))
	caller := kms.Caller{Tenant: "alpha", Principal: "test"}
	k, err := f.bed.KMS.GetKey(t.Context(), caller, id)
	if err != nil {
		t.Fatalf("the KMIP object %s is not a keyflow key: %v", id, err)
	}
	if k.Spec != kms.SpecSymmetricDefault || k.Exportable {
		t.Errorf("key = %s exportable=%v", k.Spec, k.Exportable)
	}
	if got := c.stateOf(id); got != 2 {
		t.Errorf("state after Create = %d, want Active (2): keyflow keys are active at creation", got)
	}
	if !slices.Contains(f.life.changed, id) {
		t.Error("Create did not start the key's lifecycle timers")
	}

	// Locate by name, by object type and state, with Maximum Items and Offset.
	second := c.createAES(nameAttr("db-master-2"))
	p = c.must(opLocate, nameAttr("db-master-1"))
	if ids := texts(p.All(tUniqueIdentifier)); !slices.Equal(ids, []string{id}) {
		t.Errorf("Locate by name = %v, want [%s]", ids, id)
	}
	p = c.must(opLocate, attribute("Object Type", ttlv.Enum(0, 2)), attribute("State", ttlv.Enum(0, 2)))
	if ids := texts(p.All(tUniqueIdentifier)); len(ids) != 2 {
		t.Errorf("Locate by type and state = %v, want 2 keys", ids)
	}
	p = c.must(opLocate, ttlv.Int(tMaximumItems, 1), ttlv.Int(tOffsetItems, 1), attribute("Object Type", ttlv.Enum(0, 2)))
	if ids := texts(p.All(tUniqueIdentifier)); len(ids) != 1 || ids[0] != second {
		t.Errorf("Locate with Maximum Items 1, Offset 1 = %v, want [%s]", ids, second)
	}
	if n, _ := p.IntOf(tLocatedItems); n != 2 {
		t.Errorf("Located Items = %d, want 2", n)
	}

	// Encrypt / Decrypt round trip; a tampered ciphertext fails.
	p = c.must(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("card 4111")))
	ct, _ := p.BytesOf(tData)
	p = c.must(opDecrypt, uidItem(id), ttlv.Bytes(tData, ct))
	if pt, _ := p.BytesOf(tData); string(pt) != "card 4111" {
		t.Errorf("decrypted %q", pt)
	}
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	if r := c.do(opDecrypt, uidItem(id), ttlv.Bytes(tData, bad)); r.ok() || r.reason != 0x0A {
		t.Errorf("tampered ciphertext: %v, want Cryptographic Failure", r)
	}
	if r := c.do(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x")), ttlv.Struct(0x42002B, ttlv.Enum(0x420011, 1))); r.reason != reasonFeatureNotSupp {
		t.Errorf("CBC asked for: %v, want Feature Not Supported", r)
	}

	// Get on a key that is not exportable: Permission Denied, saying why.
	r := c.do(opGet, uidItem(id))
	if r.ok() || r.reason != reasonPermissionDenied || !strings.Contains(r.message, "not exportable") {
		t.Errorf("Get of a non-exportable key: %v", r)
	}

	// Revoke (cessation of operation) deactivates; Key Compromise compromises.
	c.must(opRevoke, uidItem(id), ttlv.Struct(tRevocationReason, ttlv.Enum(tRevocationCode, 6)))
	if got := c.stateOf(id); got != 3 {
		t.Errorf("state after Revoke(cessation) = %d, want Deactivated (3)", got)
	}
	if r := c.do(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x"))); r.ok() {
		t.Error("a deactivated key encrypted")
	}
	c.must(opRevoke, uidItem(second), ttlv.Struct(tRevocationReason, ttlv.Enum(tRevocationCode, 2)))
	if got := c.stateOf(second); got != 4 {
		t.Errorf("state after Revoke(key compromise) = %d, want Compromised (4)", got)
	}

	// Destroy schedules keyflow's destruction (the deletion workflow).
	c.must(opDestroy, uidItem(id))
	if !slices.Contains(f.life.keys, id) {
		t.Errorf("Destroy did not start the deletion workflow: %v", f.life.keys)
	}
	p = c.must(opGetAttributes, uidItem(id), ttlv.Text(tAttributeName, "Destroy Date"))
	if p.Find(tAttribute) == nil {
		t.Error("no Destroy Date after Destroy")
	}

	// Unknown key, unsupported operation.
	if r := c.do(opGetAttributes, uidItem("6f1b7d8e-0000-4000-8000-000000000000")); r.reason != reasonItemNotFound {
		t.Errorf("unknown key: %v", r)
	}
	if r := c.do(0x05); r.reason != reasonOpNotSupported { // Derive Key
		t.Errorf("Derive Key: %v", r)
	}
}

// TestActivatePreActive: a key created with a future Activation Date is
// Pre-Active until Activate.
func TestActivatePreActive(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))
	id := c.createAES(attribute("Activation Date", ttlv.Item{Type: ttlv.TypeDateTime, Int: 4102444800})) // 2100-01-01
	if got := c.stateOf(id); got != 1 {
		t.Fatalf("state = %d, want Pre-Active (1)", got)
	}
	if r := c.do(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x"))); r.ok() {
		t.Error("a pre-active key encrypted")
	}
	c.must(opActivate, uidItem(id))
	if got := c.stateOf(id); got != 2 {
		t.Errorf("state after Activate = %d, want Active (2)", got)
	}
	c.must(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x")))
}

// TestExportableKeys: Get releases material only for keys made exportable,
// every Get is one audit record, and the inventory marks such keys.
func TestExportableKeys(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))

	// Created exportable (Operation Policy Name "exportable").
	id := c.createAES(attribute("Operation Policy Name", ttlv.Text(0, kmip.ExportablePolicy)))
	p := c.must(opGet, uidItem(id))
	mat, _ := p.Find(tSymmetricKey).Find(tKeyBlock).Find(tKeyValue).BytesOf(tKeyMaterial)
	if len(mat) != 32 {
		t.Fatalf("Get returned %d bytes of material", len(mat))
	}
	// The released material is the key the HSM uses: a MAC, or here the
	// exportable HMAC key registered below, proves it end to end.

	// Registered exportable symmetric key: Get returns the same bytes.
	material := make([]byte, 32)
	_, _ = rand.Read(material)
	p = c.must(opRegister, ttlv.Enum(tObjectType, 2),
		ttlv.Struct(tTemplateAttribute, attribute(kmip.ExportableAttribute, ttlv.Text(0, "true")), nameAttr("pg_tde principal key")),
		ttlv.Struct(tSymmetricKey, ttlv.Struct(tKeyBlock, ttlv.Enum(tKeyFormatType, 1),
			ttlv.Struct(tKeyValue, ttlv.Bytes(tKeyMaterial, material)),
			ttlv.Enum(tCryptoAlgorithm, 3), ttlv.Int(tCryptoLength, 256))))
	reg, _ := p.TextOf(tUniqueIdentifier)
	p = c.must(opGet, uidItem(reg))
	if got, _ := p.Find(tSymmetricKey).Find(tKeyBlock).Find(tKeyValue).BytesOf(tKeyMaterial); !bytes.Equal(got, material) {
		t.Error("Get of a registered key did not return the registered material")
	}
	// The registered material is what encrypts: same key, round trip.
	p = c.must(opEncrypt, uidItem(reg), ttlv.Bytes(tData, []byte("hello")))
	ct, _ := p.BytesOf(tData)
	c.must(opDecrypt, uidItem(reg), ttlv.Bytes(tData, ct))
	// Re-key of an exportable key: the new version is exportable too, and
	// fresh material.
	c.must(opRekey, uidItem(reg))
	p = c.must(opGet, uidItem(reg))
	if got, _ := p.Find(tSymmetricKey).Find(tKeyBlock).Find(tKeyValue).BytesOf(tKeyMaterial); len(got) != 32 || bytes.Equal(got, material) {
		t.Error("Get after Re-key did not return the new version's material")
	}
	c.must(opDecrypt, uidItem(reg), ttlv.Bytes(tData, ct))

	// Secret Data (32 bytes), registered exportable; MAC with it matches
	// HMAC-SHA256 over the same secret computed here.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	p = c.must(opRegister, ttlv.Enum(tObjectType, 7),
		ttlv.Struct(tTemplateAttribute, attribute("Operation Policy Name", ttlv.Text(0, "exportable"))),
		ttlv.Struct(tSecretData, ttlv.Enum(tSecretDataType, 1), ttlv.Struct(tKeyBlock, ttlv.Enum(tKeyFormatType, 2),
			ttlv.Struct(tKeyValue, ttlv.Bytes(tKeyMaterial, secret)))))
	sid, _ := p.TextOf(tUniqueIdentifier)
	p = c.must(opGet, uidItem(sid))
	if ot, _ := p.EnumOf(tObjectType); ot != 7 {
		t.Errorf("Get of secret data: object type %d", ot)
	}
	if got, _ := p.Find(tSecretData).Find(tKeyBlock).Find(tKeyValue).BytesOf(tKeyMaterial); !bytes.Equal(got, secret) {
		t.Error("Get of secret data did not return it")
	}
	p = c.must(opMAC, uidItem(sid), ttlv.Bytes(tData, []byte("msg")))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("msg"))
	if got, _ := p.BytesOf(tMACData); !hmac.Equal(got, m.Sum(nil)) {
		t.Error("the MAC of the registered secret is not HMAC-SHA256 under it")
	}
	p = c.must(0x24, uidItem(sid), ttlv.Bytes(tData, []byte("msg")), ttlv.Bytes(tMACData, m.Sum(nil)))
	if v, _ := p.EnumOf(0x42009B); v != 1 {
		t.Errorf("MAC Verify of a good MAC: validity %d", v)
	}
	p = c.must(0x24, uidItem(sid), ttlv.Bytes(tData, []byte("msh")), ttlv.Bytes(tMACData, m.Sum(nil)))
	if v, _ := p.EnumOf(0x42009B); v != 2 {
		t.Errorf("MAC Verify of a wrong message: validity %d", v)
	}

	// Every Get is one key.exported record; the refused one too.
	plain := c.createAES()
	c.do(opGet, uidItem(plain))
	var ok, denied int
	for _, e := range f.bed.EventsOfType("alpha", events.TypeKeyExported) {
		switch e.Outcome {
		case "success":
			ok++
		case "denied":
			denied++
		}
	}
	if ok != 4 || denied != 1 {
		t.Errorf("key.exported records: %d success, %d denied; want 4 and 1", ok, denied)
	}
	// No key material in any audit record, raw or Base64.
	for _, e := range f.bed.Events("alpha") {
		for _, m := range [][]byte{mat, material, secret} {
			if bytes.Contains(e.Raw, m) || bytes.Contains(e.Raw, []byte(base64.StdEncoding.EncodeToString(m))) {
				t.Fatalf("key material in the audit record %s", e.Type)
			}
		}
	}
	// The inventory marks exportable keys.
	inv, err := f.bed.KMS.Inventory(t.Context(), kms.Caller{Tenant: "alpha", Principal: "auditor"}, kms.InventoryParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range inv.Keys {
		if want := k.ID != plain; k.Exportable != want {
			t.Errorf("inventory: key %s exportable=%v, want %v", k.ID, k.Exportable, want)
		}
	}
}

// TestRolesAndTenants: the KMIP door enforces kms.Authorize's table and
// the tenant boundary.
func TestRolesAndTenants(t *testing.T) {
	f := newFixture(t)
	admin := f.dial(t, f.principal(t, "alpha", "kadmin", keypolicy.RoleKeyAdmin))
	user := f.dial(t, f.principal(t, "alpha", "app", keypolicy.RoleCryptoUser))
	other := f.dial(t, f.principal(t, "beta", "app"))

	id := admin.createAES()
	if r := admin.do(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x"))); r.reason != reasonPermissionDenied {
		t.Errorf("a key admin encrypted: %v", r)
	}
	user.must(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x")))
	if r := user.do(opCreate, ttlv.Enum(tObjectType, 2)); r.reason != reasonPermissionDenied || !strings.Contains(r.message, "key-admin") {
		t.Errorf("a crypto user created a key: %v", r)
	}
	if r := other.do(opGetAttributes, uidItem(id)); r.reason != reasonItemNotFound {
		t.Errorf("another tenant saw the key: %v", r)
	}
	if r := other.do(opEncrypt, uidItem(id), ttlv.Bytes(tData, []byte("x"))); r.ok() {
		t.Error("another tenant used the key")
	}
	if got := f.bed.EventsOfType("alpha", events.TypeAccessDenied); len(got) < 2 {
		t.Errorf("%d access.denied records, want at least 2", len(got))
	}
}

// TestAttributes: Get Attribute List, Add/Modify/Delete Attribute.
func TestAttributes(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))
	id := c.createAES(nameAttr("a"))
	xa := attribute("x-owner", ttlv.Text(0, "team-db"))
	c.must(opAddAttribute, uidItem(id), xa)
	p := c.must(opGetAttributeList, uidItem(id))
	names := texts(p.All(tAttributeName))
	for _, want := range []string{"Unique Identifier", "State", "Name", "x-owner", "Cryptographic Algorithm"} {
		if !slices.Contains(names, want) {
			t.Errorf("Get Attribute List lacks %q: %v", want, names)
		}
	}
	c.must(opModifyAttribute, uidItem(id), attribute("x-owner", ttlv.Text(0, "team-pay")))
	p = c.must(opLocate, attribute("x-owner", ttlv.Text(0, "team-pay")))
	if ids := texts(p.All(tUniqueIdentifier)); !slices.Equal(ids, []string{id}) {
		t.Errorf("Locate by custom attribute = %v", ids)
	}
	c.must(opDeleteAtt, uidItem(id), ttlv.Struct(tAttribute, ttlv.Text(tAttributeName, "x-owner")))
	p = c.must(opGetAttributes, uidItem(id), ttlv.Text(tAttributeName, "x-owner"))
	if p.Find(tAttribute) != nil {
		t.Error("x-owner still there after Delete Attribute")
	}
	if r := c.do(opModifyAttribute, uidItem(id), attribute("State", ttlv.Enum(0, 2))); r.reason != reasonPermissionDenied {
		t.Errorf("a client modified State: %v", r)
	}
	if r := c.do(opAddAttribute, uidItem(id), attribute(kmip.ExportableAttribute, ttlv.Text(0, "true"))); r.reason != reasonPermissionDenied {
		t.Errorf("a client made a key exportable after creation: %v", r)
	}
	if got := f.bed.EventsOfType("alpha", events.TypeKMIPAttributesChanged); len(got) != 3 {
		t.Errorf("%d attributes.changed records, want 3", len(got))
	}
}

func texts(items []*ttlv.Item) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, string(it.Bytes))
	}
	return out
}

// TestExportByDefault: a certificate issued with ExportByDefaultOU makes
// every key its client creates exportable (for pg_tde and MongoDB, which
// cannot ask), still only for a principal allowed kmip.exportable.
func TestExportByDefault(t *testing.T) {
	f := newFixture(t)
	f.principal(t, "alpha", "pgtde") // registers the principal (every role)
	dir := t.TempDir()
	cert, key, err := f.ca.IssueClient(dir, "pgtde", "alpha", "pgtde", true)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := f.ca.ClientTLS(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	c := f.dial(t, tc)
	id := c.createAES()
	c.must(opGet, uidItem(id))

	// The same for a key admin without the crypto-user role: Create is
	// allowed, but Get is still refused by role.
	f.principal(t, "alpha", "kadmin", keypolicy.RoleKeyAdmin)
	cert, key, _ = f.ca.IssueClient(dir, "kadmin", "alpha", "kadmin", true)
	tc, _ = f.ca.ClientTLS(cert, key)
	admin := f.dial(t, tc)
	id = admin.createAES()
	k, _ := f.bed.KMS.GetKey(t.Context(), kms.Caller{Tenant: "alpha", Principal: "t"}, id)
	if !k.Exportable {
		t.Error("a key created through an export-by-default certificate is not exportable")
	}
	if r := admin.do(opGet, uidItem(id)); r.reason != reasonPermissionDenied {
		t.Errorf("a key admin fetched material: %v", r)
	}
	// A crypto user cannot create at all, export-by-default or not.
	f.principal(t, "alpha", "user", keypolicy.RoleCryptoUser)
	cert, key, _ = f.ca.IssueClient(dir, "user", "alpha", "user", true)
	tc, _ = f.ca.ClientTLS(cert, key)
	if r := f.dial(t, tc).do(opCreate, ttlv.Enum(tObjectType, 2)); r.reason != reasonPermissionDenied {
		t.Errorf("a crypto user created a key: %v", r)
	}
}

// TestEveryKMIPEventValidates: the records a KMIP session leaves (its own
// types and the domain's) all match their schemas, refusals included.
func TestEveryKMIPEventValidates(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.principal(t, "alpha", "app"))
	exp := c.createAES(attribute("Operation Policy Name", ttlv.Text(0, kmip.ExportablePolicy)), nameAttr("n"))
	plain := c.createAES()
	c.must(opGet, uidItem(exp))
	c.do(opGet, uidItem(plain))
	c.must(opAddAttribute, uidItem(plain), attribute("x-a", ttlv.Text(0, "1")))
	c.do(opDeleteAtt, uidItem(plain), ttlv.Struct(tAttribute, ttlv.Text(tAttributeName, "x-missing")))
	c.do(opEncrypt, uidItem(plain), ttlv.Bytes(tData, []byte("x")), ttlv.Struct(0x42002B, ttlv.Enum(0x420011, 1)))
	c.must(opLocate, nameAttr("n"))
	c.do(0x05)
	seen := map[string]bool{}
	for _, e := range f.bed.Events("alpha") {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Errorf("%s: %v", e.Type, err)
		}
		seen[e.Type] = true
	}
	for _, typ := range []string{events.TypeKeyExported, events.TypeKMIPAttributesChanged, events.TypeRequestRejected, events.TypeKeyCreated, events.TypeKeyListed} {
		if !seen[typ] {
			t.Errorf("no %s record", typ)
		}
	}
}
