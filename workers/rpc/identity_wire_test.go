package rpc_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// identityWireMessages sends every identity-and-access message through
// TestSchemaWireMessages' helpers (as alice of alpha, who holds every role
// in the platform tenant), so each request, reply and event is checked
// against its schema.
func identityWireMessages(t *testing.T, ok func(op, reqSchema, body, replySchema string) []byte, refused func(op, reqSchema, body string, code kms.Code)) {
	t.Helper()
	userKey := func() string {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		return pub
	}
	ok(api.OpKeyCreate, "CreateKeyRequest", `{"alias":"wire-gov"}`, "KeyMetadata")
	ok(api.OpKeyGetPolicy, "KeyRequest", `{"keyId":"wire-gov"}`, "KeyPolicyReply")
	ok(api.OpKeySetPolicy, "SetKeyPolicyRequest", `{"keyId":"wire-gov","policy":{"version":"2026-11-01","statements":[
		{"sid":"Admins","effect":"Allow","principals":["role:key-admin"],"operations":["DescribeKey","RotateKey","CreateGrant","ListGrants","RevokeGrant"]},
		{"sid":"Use","effect":"Allow","principals":["role:crypto-user"],"operations":["*"],"conditions":{"encryptionContextSubset":{"app":"wire"}}},
		{"sid":"NoAliceEncrypt","effect":"Deny","principals":["alice"],"operations":["Encrypt"],"conditions":{"notBefore":"2020-01-01T00:00:00Z"}}]}}`, "KeyPolicyReply")
	refused(api.OpKeySetPolicy, "", `{"keyId":"wire-gov","policy":{"version":"2026-11-01","statements":[{"sid":"X","effect":"Maybe","principals":["*"],"operations":["Encrypt"]}]}}`, kms.CodeValidation)
	ok(api.OpKeyGetPolicy, "KeyRequest", `{"keyId":"wire-gov"}`, "KeyPolicyReply")
	refused(api.OpEncrypt, "EncryptRequest", `{"keyId":"wire-gov","plaintext":"aGVsbG8=","encryptionContext":{"app":"wire"}}`, kms.CodeAccessDenied)
	var g api.Grant
	if err := json.Unmarshal(ok(api.OpGrantCreate, "CreateGrantRequest", `{"keyId":"wire-gov","grantee":"wire-bob","operations":["Decrypt"],"constraints":{"encryptionContextEquals":{"app":"wire"},"notAfter":"2099-01-01T00:00:00Z"},"retiringPrincipal":"alice"}`, "Grant"), &g); err != nil {
		t.Fatal(err)
	}
	ok(api.OpGrantList, "KeyRequest", `{"keyId":"wire-gov"}`, "ListGrantsReply")
	ok(api.OpGrantListRetirable, "ListRetirableGrantsRequest", `{"retiringPrincipal":"alice"}`, "ListGrantsReply")
	ok(api.OpKeyTag, "TagKeyRequest", `{"keyId":"wire-gov","tags":[{"tagKey":"team","tagValue":"wire"}]}`, "KeyMetadata")
	ok(api.OpKeyUntag, "UntagKeyRequest", `{"keyId":"wire-gov","tagKeys":["team"]}`, "KeyMetadata")
	refused(api.OpKeyTag, "", `{"keyId":"wire-gov","tags":[{"tagKey":"aws:x","tagValue":"v"}]}`, kms.CodeValidation)
	ok(api.OpKeySetDescription, "SetDescriptionRequest", `{"keyId":"wire-gov","description":"governed"}`, "KeyMetadata")
	ok(api.OpGrantRetire, "GrantRequest", `{"keyId":"wire-gov","grantId":"`+g.GrantID+`"}`, "GrantRequest")
	if err := json.Unmarshal(ok(api.OpGrantCreate, "CreateGrantRequest", `{"keyId":"wire-gov","grantee":"wire-bob","operations":["Encrypt","Decrypt"]}`, "Grant"), &g); err != nil {
		t.Fatal(err)
	}
	ok(api.OpGrantRevoke, "GrantRequest", `{"keyId":"wire-gov","grantId":"`+g.GrantID+`"}`, "GrantRequest")
	refused(api.OpGrantRevoke, "GrantRequest", `{"keyId":"wire-gov","grantId":"`+g.GrantID+`"}`, kms.CodeNotFound)
	refused(api.OpGrantCreate, "", `{"keyId":"wire-gov","grantee":"wire-bob","operations":["Fly"]}`, kms.CodeValidation)

	ok(api.OpPrincipalCreate, "CreatePrincipalRequest", `{"name":"wire-bob","roles":["crypto-user","approver"],"publicKey":"`+userKey()+`"}`, "CreatePrincipalReply")
	refused(api.OpPrincipalCreate, "CreatePrincipalRequest", `{"name":"wire-bob","roles":["crypto-user"],"publicKey":"`+userKey()+`"}`, kms.CodeAlreadyExists)
	ok(api.OpPrincipalList, "", `{}`, "ListPrincipalsReply")
	// Aliases after creation.
	var plain api.KeyMetadata
	if err := json.Unmarshal(ok(api.OpKeyCreate, "CreateKeyRequest", `{"description":"no alias yet"}`, "KeyMetadata"), &plain); err != nil {
		t.Fatal(err)
	}
	ok(api.OpKeySetAlias, "SetAliasRequest", `{"alias":"alias/wire-later","keyId":"`+plain.KeyID+`","create":true}`, "KeyMetadata")
	refused(api.OpKeySetAlias, "SetAliasRequest", `{"alias":"alias/wire-later","keyId":"`+plain.KeyID+`","create":true}`, kms.CodeAlreadyExists)
	refused(api.OpKeySetAlias, "SetAliasRequest", `{"alias":"alias/wire-other","keyId":"wire-gov"}`, kms.CodeNotFound)
	ok(api.OpKeyDeleteAlias, "AliasRequest", `{"alias":"alias/wire-later"}`, "AliasRequest")
	refused(api.OpKeyDeleteAlias, "AliasRequest", `{"alias":"alias/wire-later"}`, kms.CodeNotFound)
	// Access keys of the AWS KMS API (workers/awskms).
	var ak api.AccessKey
	if err := json.Unmarshal(ok(api.OpAccessKeyCreate, "AccessKeyRequest", `{"principal":"wire-bob"}`, "AccessKey"), &ak); err != nil {
		t.Fatal(err)
	}
	if len(ak.SecretAccessKey) != 40 {
		t.Fatalf("access key secret of %d characters", len(ak.SecretAccessKey))
	}
	refused(api.OpAccessKeyCreate, "AccessKeyRequest", `{"principal":"wire-nobody"}`, kms.CodeNotFound)
	ok(api.OpAccessKeyList, "", `{}`, "ListAccessKeysReply")
	ok(api.OpAccessKeyDisable, "AccessKeyRequest", `{"accessKeyId":"`+ak.AccessKeyID+`"}`, "AccessKeyRequest")
	ok(api.OpAccessKeyDelete, "AccessKeyRequest", `{"accessKeyId":"`+ak.AccessKeyID+`"}`, "AccessKeyRequest")
	refused(api.OpAccessKeyDelete, "AccessKeyRequest", `{"accessKeyId":"`+ak.AccessKeyID+`"}`, kms.CodeNotFound)
	ok(api.OpPrincipalDisable, "PrincipalRequest", `{"name":"wire-bob"}`, "PrincipalRequest")
	ok(api.OpTenantCreate, "CreateTenantRequest", `{"tenant":"wire-acme","adminPublicKey":"`+userKey()+`"}`, "CreateTenantReply")
	ok(api.OpTenantCreate, "CreateTenantRequest", `{"tenant":"wire-open","allowAnyRoleCombination":true,"adminName":"root","adminPublicKey":"`+userKey()+`"}`, "CreateTenantReply")
	refused(api.OpTenantCreate, "CreateTenantRequest", `{"tenant":"wire-acme","adminPublicKey":"`+userKey()+`"}`, kms.CodeAlreadyExists)
}
