// Package azurekv is the Azure Key Vault connector of package cloud, on the
// official SDK (github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys).
//
// How keyflow's key maps onto Key Vault:
//
//   - A keyflow key is one Key Vault key, keyflow-<keyID>; each keyflow
//     version is one of its versions, tagged keyflow-version=<n> (the
//     idempotence key: a retried step finds the version it imported).
//   - Import is Key Vault's BYOK: the vault's key-exchange key
//     (keyflow-kek, RSA-HSM 3072, key_ops ["import"], made on first use)
//     is the wrapping key; keyflow wraps the material as
//     CKM_RSA_AES_KEY_WRAP (RSA-OAEP with SHA-1 of a fresh AES-256 key,
//     then AES-KWP of the material) and sends it in the key-transfer blob
//     (JSON: schema_version, header {kid, alg "dir", enc
//     "CKM_RSA_AES_KEY_WRAP"}, ciphertext, generator) as the JWK's key_hsm.
//   - The key's JWK type follows its keyflow spec: an AES-256 key is
//     oct-HSM (encrypt, decrypt, wrapKey, unwrapKey), which only a
//     Managed HSM imports; an exportable RSA key pair is RSA-HSM (sign
//     and verify, or encrypt, decrypt, wrapKey and unwrapKey, from the
//     keyflow key's usage) and an EC pair EC-HSM on P-256 or P-384 (sign
//     and verify), which a Key Vault Premium or a Managed HSM imports. A
//     pair's material in the transfer blob is its private key's PKCS#8.
//   - A rotation imports a new version, which Key Vault makes current
//     (the newest version is the one a "versionless" key ID uses).
//   - Disable/enable update every version's "enabled"; scheduled
//     deletion is DeleteKey, soft-deleted for the vault's retention
//     (7-90 days, a vault setting, not a per-call one), and a cancelled
//     deletion is RecoverDeletedKey (Restore, restore.go), which brings
//     every version back. While the key is soft-deleted its name cannot
//     be imported again (Conflict).
//
// Each call's x-ms-request-id is noted as the provider's request ID.
package azurekv

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/keyflow/keyflow/cloud"
)

// KEKName is the vault's key-exchange key.
const KEKName = "keyflow-kek"

// Connector is one vault or Managed HSM.
type Connector struct {
	c        *azkeys.Client
	vaultURL string
}

var _ cloud.Connector = (*Connector)(nil)

// Settings name a vault. Credentials come from DefaultAzureCredential
// (environment, workload identity, managed identity, Azure CLI).
type Settings struct {
	VaultURL string
}

// Open connects with DefaultAzureCredential.
func Open(s Settings) (*Connector, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("failed to load Azure credentials: %w", err)
	}
	return New(s.VaultURL, cred, nil)
}

// New builds a connector with a credential and client options (a test
// gives its own transport). The SDK's retries are off: the Temporal
// activity retries.
func New(vaultURL string, cred azcore.TokenCredential, opts *azkeys.ClientOptions) (*Connector, error) {
	if opts == nil {
		opts = &azkeys.ClientOptions{}
	}
	opts.Retry = policy.RetryOptions{MaxRetries: -1}
	c, err := azkeys.NewClient(vaultURL, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("failed to open the Key Vault client: %w", err)
	}
	return &Connector{c: c, vaultURL: vaultURL}, nil
}

// KeyName is the Key Vault key of a keyflow key.
func KeyName(keyID string) string { return "keyflow-" + keyID }

// do runs one call with its response captured, notes it with
// x-ms-request-id and maps its error.
func do(ctx context.Context, op, resource string, f func(ctx context.Context) error) error {
	var resp *http.Response
	err := f(runtime.WithCaptureResponse(ctx, &resp))
	c := cloud.Call{Operation: op, Resource: resource}
	if resp != nil {
		c.RequestID = resp.Header.Get("x-ms-request-id")
	}
	if err == nil {
		cloud.Note(ctx, c)
		return nil
	}
	ce := &cloud.Error{Operation: op, Code: cloud.CodeUnavailable, Retryable: true, RequestID: c.RequestID, Err: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		ce.Code = re.ErrorCode
		if ce.Code == "" {
			ce.Code = http.StatusText(re.StatusCode)
		}
		ce.Retryable = re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
		if c.RequestID == "" && re.RawResponse != nil {
			ce.RequestID = re.RawResponse.Header.Get("x-ms-request-id")
		}
	}
	c.RequestID, c.ErrorCode = ce.RequestID, ce.Code
	cloud.Note(ctx, c)
	return ce
}

func isNotFound(err error) bool {
	e, ok := cloud.AsError(err)
	return ok && (e.Code == "KeyNotFound" || e.Code == http.StatusText(http.StatusNotFound))
}

// kek returns the key-exchange key's ID and public key, making it on
// first use.
func (a *Connector) kek(ctx context.Context) (string, []byte, error) {
	var key *azkeys.JSONWebKey
	err := do(ctx, "GetKey", KEKName, func(ctx context.Context) error {
		r, err := a.c.GetKey(ctx, KEKName, "", nil)
		key = r.Key
		return err
	})
	if isNotFound(err) {
		kty, size := azkeys.KeyTypeRSAHSM, int32(3072)
		err = do(ctx, "CreateKey", KEKName, func(ctx context.Context) error {
			r, err := a.c.CreateKey(ctx, KEKName, azkeys.CreateKeyParameters{Kty: &kty, KeySize: &size, KeyOps: ops(azkeys.KeyOperationImport)}, nil)
			key = r.Key
			return err
		})
	}
	if err != nil {
		return "", nil, err
	}
	if key == nil || key.KID == nil || len(key.N) == 0 {
		return "", nil, &cloud.Error{Operation: "GetKey", Code: "InvalidKEK", Err: errors.New("the key-exchange key has no RSA public key")}
	}
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(key.N), E: int(new(big.Int).SetBytes(key.E).Int64())})
	if err != nil {
		return "", nil, err
	}
	return string(*key.KID), der, nil
}

func ptr[T any](v T) *T { return &v }

func ops(o ...azkeys.KeyOperation) []*azkeys.KeyOperation {
	out := make([]*azkeys.KeyOperation, len(o))
	for i := range o {
		out[i] = &o[i]
	}
	return out
}

// azureJWK is how Key Vault holds one keyflow spec: the JWK key type,
// curve and operations of the imported key.
type azureJWK struct {
	kty azkeys.KeyType
	crv *azkeys.CurveName
	ops []azkeys.KeyOperation
}

var (
	azSign    = []azkeys.KeyOperation{azkeys.KeyOperationSign, azkeys.KeyOperationVerify}
	azDecrypt = []azkeys.KeyOperation{azkeys.KeyOperationEncrypt, azkeys.KeyOperationDecrypt, azkeys.KeyOperationWrapKey, azkeys.KeyOperationUnwrapKey}

	azureSpecs = map[string]azureJWK{
		cloud.SpecAES256:         {kty: azkeys.KeyTypeOctHSM, ops: azDecrypt},
		cloud.SpecRSA3072Sign:    {kty: azkeys.KeyTypeRSAHSM, ops: azSign},
		cloud.SpecRSA3072Decrypt: {kty: azkeys.KeyTypeRSAHSM, ops: azDecrypt},
		cloud.SpecRSA4096Sign:    {kty: azkeys.KeyTypeRSAHSM, ops: azSign},
		cloud.SpecRSA4096Decrypt: {kty: azkeys.KeyTypeRSAHSM, ops: azDecrypt},
		cloud.SpecECP256Sign:     {kty: azkeys.KeyTypeECHSM, crv: ptr(azkeys.CurveNameP256), ops: azSign},
		cloud.SpecECP384Sign:     {kty: azkeys.KeyTypeECHSM, crv: ptr(azkeys.CurveNameP384), ops: azSign},
	}
)

// transferBlob is the BYOK key-transfer blob.
type transferBlob struct {
	SchemaVersion string `json:"schema_version"`
	Header        struct {
		KID string `json:"kid"`
		Alg string `json:"alg"`
		Enc string `json:"enc"`
	} `json:"header"`
	Ciphertext string `json:"ciphertext"`
	Generator  string `json:"generator"`
}

// versionOf finds the version tagged with a keyflow version.
func (a *Connector) versionOf(ctx context.Context, name string, version uint32) (string, error) {
	var found string
	err := do(ctx, "ListKeyPropertiesVersions", name, func(ctx context.Context) error {
		pager := a.c.NewListKeyPropertiesVersionsPager(name, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, p := range page.Value {
				if t := p.Tags["keyflow-version"]; t != nil && *t == fmt.Sprint(version) && p.KID != nil {
					found = string(*p.KID)
				}
			}
		}
		return nil
	})
	if isNotFound(err) {
		return "", nil
	}
	return found, err
}

// Import implements cloud.Connector.
func (a *Connector) Import(ctx context.Context, p cloud.ImportParams) (*cloud.ImportResult, error) {
	jwk, ok := azureSpecs[p.Spec]
	if !ok {
		return nil, fmt.Errorf("%w: Key Vault takes no %s keys from keyflow", cloud.ErrUnsupported, p.Spec)
	}
	name := KeyName(p.KeyID)
	if v, err := a.versionOf(ctx, name, p.KeyVersion); err != nil || v != "" {
		return &cloud.ImportResult{Resource: a.vaultURL + "/keys/" + name, ProviderVersion: v}, err
	}
	kid, pub, err := a.kek(ctx)
	if err != nil {
		return nil, err
	}
	wrapped, err := p.Wrap(ctx, cloud.WrappingKey{Scheme: cloud.SchemeRSAAESKeyWrapSHA1, PublicKey: pub})
	if err != nil {
		return nil, err
	}
	var blob transferBlob
	blob.SchemaVersion, blob.Generator = "1.0.0", "keyflow"
	blob.Header.KID, blob.Header.Alg, blob.Header.Enc = kid, "dir", "CKM_RSA_AES_KEY_WRAP"
	blob.Ciphertext = base64.RawURLEncoding.EncodeToString(wrapped)
	raw, err := json.Marshal(blob)
	if err != nil {
		return nil, err
	}
	var out *azkeys.JSONWebKey
	err = do(ctx, "ImportKey", name, func(ctx context.Context) error {
		r, err := a.c.ImportKey(ctx, name, azkeys.ImportKeyParameters{
			HSM: ptr(true), Key: &azkeys.JSONWebKey{Kty: ptr(jwk.kty), Crv: jwk.crv, T: raw, KeyOps: ops(jwk.ops...)},
			Tags: map[string]*string{"keyflow-key-id": ptr(p.KeyID), "keyflow-version": ptr(fmt.Sprint(p.KeyVersion))},
		}, nil)
		out = r.Key
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil || out.KID == nil {
		return nil, &cloud.Error{Operation: "ImportKey", Code: "NoKeyID", Err: errors.New("the vault answered without a key ID")}
	}
	return &cloud.ImportResult{Resource: a.vaultURL + "/keys/" + name, ProviderVersion: string(*out.KID)}, nil
}

// Rotate implements cloud.Connector: a new version, which becomes current.
func (a *Connector) Rotate(ctx context.Context, p cloud.RotateParams) (*cloud.ImportResult, error) {
	return a.Import(ctx, cloud.ImportParams{KeyID: p.Key.KeyID, KeyVersion: p.KeyVersion, Spec: p.Spec, Wrap: p.Wrap})
}

func (a *Connector) setEnabled(ctx context.Context, p cloud.KeyRef, on bool) error {
	for _, kid := range p.Versions {
		id := azkeys.ID(kid)
		if err := do(ctx, "UpdateKey", kid, func(ctx context.Context) error {
			_, err := a.c.UpdateKey(ctx, id.Name(), id.Version(), azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: &on}}, nil)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// Enable implements cloud.Connector.
func (a *Connector) Enable(ctx context.Context, p cloud.KeyRef) error {
	return a.setEnabled(ctx, p, true)
}

// Disable implements cloud.Connector.
func (a *Connector) Disable(ctx context.Context, p cloud.KeyRef) error {
	return a.setEnabled(ctx, p, false)
}

// ScheduleDeletion implements cloud.Connector: DeleteKey, soft-deleted for
// the vault's retention period.
func (a *Connector) ScheduleDeletion(ctx context.Context, p cloud.DeletionParams) error {
	name := KeyName(p.Key.KeyID)
	err := do(ctx, "DeleteKey", name, func(ctx context.Context) error {
		_, err := a.c.DeleteKey(ctx, name, nil)
		return err
	})
	if isNotFound(err) {
		return nil
	}
	return err
}

// Describe implements cloud.Connector: the current version and every
// version's enabled flag.
func (a *Connector) Describe(ctx context.Context, p cloud.KeyRef) (*cloud.Description, error) {
	name := KeyName(p.KeyID)
	d := &cloud.Description{Resource: a.vaultURL + "/keys/" + name, State: cloud.StateMissing, Versions: map[string]string{}}
	var cur azkeys.KeyBundle
	err := do(ctx, "GetKey", name, func(ctx context.Context) error {
		r, err := a.c.GetKey(ctx, name, "", nil)
		cur = r.KeyBundle
		return err
	})
	if isNotFound(err) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	if cur.Key != nil && cur.Key.KID != nil {
		d.Primary = string(*cur.Key.KID)
	}
	d.State = enabledState(cur.Attributes)
	err = do(ctx, "ListKeyPropertiesVersions", name, func(ctx context.Context) error {
		pager := a.c.NewListKeyPropertiesVersionsPager(name, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, v := range page.Value {
				if v.KID != nil {
					d.Versions[string(*v.KID)] = enabledState(v.Attributes)
				}
			}
		}
		return nil
	})
	return d, err
}

func enabledState(at *azkeys.KeyAttributes) string {
	if at != nil && at.Enabled != nil && !*at.Enabled {
		return cloud.StateDisabled
	}
	return cloud.StateEnabled
}
