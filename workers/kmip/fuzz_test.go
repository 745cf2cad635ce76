package kmip_test

import (
	"testing"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// FuzzHandle feeds decodable messages to the server's request handler on a
// real testbed, as a principal with every role: it never panics, and it
// always answers one Response Message that encodes and decodes again.
// Without -fuzz it runs the seeds: every operation with good, missing and
// wrongly typed fields.
func FuzzHandle(f *testing.F) {
	fx := newFixture(f)
	seedID := "6f1b7d8e-0000-4000-8000-000000000000"
	v := [2]int32{1, 4}
	seeds := []ttlv.Item{
		request(v, batch(opCreate, ttlv.Enum(tObjectType, 2), ttlv.Struct(tTemplateAttribute, attribute("Cryptographic Algorithm", ttlv.Enum(0, 3)), nameAttr("f")))),
		request(v, batch(opCreate, ttlv.Enum(tObjectType, 2), ttlv.Struct(tTemplateAttribute, attribute("Name", ttlv.Int(0, 1))))),
		request(v, batch(opRegister, ttlv.Enum(tObjectType, 2), ttlv.Struct(tSymmetricKey, ttlv.Struct(tKeyBlock, ttlv.Enum(tKeyFormatType, 1), ttlv.Struct(tKeyValue, ttlv.Bytes(tKeyMaterial, make([]byte, 31))))))),
		request(v, batch(opRegister, ttlv.Enum(tObjectType, 7), ttlv.Struct(tSecretData))),
		request(v, batch(opGet, ttlv.Text(tUniqueIdentifier, seedID))),
		request(v, batch(opGet, ttlv.Int(tUniqueIdentifier, 1))),
		request(v, batch(opGetAttributes, ttlv.Text(tUniqueIdentifier, seedID+"/public"))),
		request(v, batch(opLocate, ttlv.Int(tMaximumItems, -1))),
		request(v, batch(opLocate, ttlv.Struct(tAttribute, ttlv.Text(tAttributeName, "State")))),
		request(v, batch(opAddAttribute, ttlv.Text(tUniqueIdentifier, seedID))),
		request(v, batch(opModifyAttribute, ttlv.Text(tUniqueIdentifier, seedID), attribute("x-a", ttlv.Int(0, 3)))),
		request(v, batch(opRevoke, ttlv.Text(tUniqueIdentifier, seedID))),
		request(v, batch(opEncrypt, ttlv.Text(tUniqueIdentifier, seedID))),
		request(v, batch(opSign, ttlv.Text(tUniqueIdentifier, seedID), ttlv.Bytes(tData, nil))),
		request(v, batch(opCreateKeyPair, ttlv.Struct(tCommonTemplate, attribute("Cryptographic Algorithm", ttlv.Enum(0, 6))))),
		request(v, batch(opDiscover, ttlv.Struct(tProtocolVersion))),
		request(v, batch(opQuery, ttlv.Enum(tQueryFunction, 99))),
		request(v, ttlv.Struct(tBatchItem)),
		request([2]int32{1, 9}, batch(opQuery)),
		ttlv.Struct(tRequestMessage),
		ttlv.Struct(tRequestMessage, ttlv.Struct(tRequestHeader, ttlv.Text(tProtocolVersion, "1.4"))),
	}
	for _, s := range seeds {
		f.Add(ttlv.Encode(s))
	}
	c := kms.Caller{Tenant: "alpha", Principal: "fuzz", Roles: []string{"key-admin", "crypto-user", "auditor"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ttlv.Decode(b, ttlv.DefaultLimits)
		if err != nil {
			return // the decoder's own fuzz target covers this
		}
		resp := fx.srv.HandleForTest(t.Context(), c, req)
		if resp.Tag != 0x42007B {
			t.Fatalf("answered with tag 0x%06x", resp.Tag)
		}
		if _, err := ttlv.Decode(ttlv.Encode(resp), ttlv.DefaultLimits); err != nil {
			t.Fatalf("the response does not decode: %v", err)
		}
	})
}
