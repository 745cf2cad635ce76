// Package awskms is the AWS KMS connector of package cloud, on the
// official SDK (github.com/aws/aws-sdk-go-v2/service/kms).
//
// How keyflow's key maps onto AWS:
//
//   - Each keyflow key version is one AWS KMS key of origin EXTERNAL,
//     whose material keyflow imports with GetParametersForImport and
//     ImportKeyMaterial (KEY_MATERIAL_DOES_NOT_EXPIRE). An AES-256 key is
//     SYMMETRIC_DEFAULT, its 32 bytes under RSAES_OAEP_SHA_256 on an
//     RSA_2048 wrapping key (or the destination's wrappingKeySpec). An
//     exportable key pair is RSA_3072, RSA_4096, ECC_NIST_P256 or
//     ECC_NIST_P384 with KeyUsage SIGN_VERIFY or ENCRYPT_DECRYPT from the
//     keyflow key's usage, its PKCS#8 private key under
//     RSA_AES_KEY_WRAP_SHA_256 on a wrapping key of at least RSA_3072.
//   - The alias alias/keyflow/<keyID> points at the primary version's AWS
//     key: applications use the alias, so a rotation is a new AWS key and
//     an alias move (UpdateAlias). Old AWS keys stay enabled so their
//     ciphertexts (which name the AWS key) still decrypt.
//   - The alias alias/keyflow/<keyID>/v<n> names version n's AWS key, so a
//     retried step finds the key an earlier attempt made instead of
//     making another (idempotence without local state).
//
// Why a new key and not on-demand rotation of imported material: AWS has
// accepted new material for an imported key (ImportType NEW_KEY_MATERIAL,
// then RotateKeyOnDemand) since 2025, but local-kms, the emulator the
// tests run against, refuses a second material ("Key material does not
// match existing key material"), and the alias scheme works on every
// AWS partition. docs/multi-cloud.md says more.
//
// The SDK's own retries are off (RetryMaxAttempts 1): the Temporal
// activity that calls the connector retries with backoff, durably, and
// every attempt is an audit record.
package awskms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/keyflow/keyflow/cloud"
)

// Connector is an AWS account and region.
type Connector struct {
	c           *kms.Client
	wrapSpec    types.WrappingKeySpec
	primaryOnly bool // no version aliases (WithAliases)
}

var (
	_ cloud.Connector = (*Connector)(nil)
	_ cloud.Restorer  = (*Connector)(nil)
)

// New wraps an SDK client. Imports ask for an RSA_2048 wrapping key
// (every AWS-compatible KMS has it; WithWrappingKeySpec changes it).
func New(c *kms.Client) *Connector { return &Connector{c: c, wrapSpec: types.WrappingKeySpecRsa2048} }

// WithWrappingKeySpec makes imports ask for an RSA wrapping key of spec
// (RSA_2048, RSA_3072 or RSA_4096; empty keeps RSA_2048). AWS takes all
// three with RSAES_OAEP_SHA_256; local-kms only RSA_2048, keyflow's own
// AWS API only RSA_3072 and RSA_4096. Key pairs ask for RSA_3072 when
// the spec is RSA_2048: their RSA_AES_KEY_WRAP_SHA_256 import is never
// tested here on RSA_2048 (keyflow's own API refuses it).
func (a *Connector) WithWrappingKeySpec(spec string) (*Connector, error) {
	switch types.WrappingKeySpec(spec) {
	case "":
	case types.WrappingKeySpecRsa2048, types.WrappingKeySpecRsa3072, types.WrappingKeySpecRsa4096:
		a.wrapSpec = types.WrappingKeySpec(spec)
	default:
		return nil, fmt.Errorf("%w: wrapping key spec %q (RSA_2048, RSA_3072 or RSA_4096)", cloud.ErrUnsupported, spec)
	}
	return a, nil
}

// Settings name an AWS destination. Credentials come from the SDK's
// default chain (environment, shared config and credentials files, SSO,
// web identity, the instance role); Profile and CredentialsFile select
// among them.
type Settings struct {
	Region          string
	Endpoint        string // optional: a KMS-compatible endpoint (local-kms, keyflow's own API)
	Profile         string
	CredentialsFile string // optional: a shared credentials file
	// WrappingKeySpec is the RSA wrapping key imports ask for (default
	// RSA_2048; see WithWrappingKeySpec).
	WrappingKeySpec string
	// Aliases is AliasesPerVersion (the default) or AliasesPrimaryOnly;
	// see WithAliases.
	Aliases string
}

// Alias layouts.
const (
	// AliasesPerVersion gives each version's AWS key the alias
	// alias/keyflow/<keyID>/v<n> besides the primary alias.
	AliasesPerVersion = "per-version"
	// AliasesPrimaryOnly keeps the primary alias only, for KMSs that
	// allow one alias per key (keyflow's own AWS API).
	AliasesPrimaryOnly = "primary-only"
)

// WithAliases sets the alias layout. With AliasesPrimaryOnly, a retried
// step finds its version's AWS key through the primary alias and the
// key's description; a step that crashed between CreateKey and the alias
// move leaves an unused key behind (tagged keyflow:key-id and
// keyflow:version), where the per-version layout would find it.
func (a *Connector) WithAliases(layout string) (*Connector, error) {
	switch layout {
	case "", AliasesPerVersion:
		a.primaryOnly = false
	case AliasesPrimaryOnly:
		a.primaryOnly = true
	default:
		return nil, fmt.Errorf("%w: alias layout %q (%s or %s)", cloud.ErrUnsupported, layout, AliasesPerVersion, AliasesPrimaryOnly)
	}
	return a, nil
}

// Open builds a connector from settings and the SDK's credential chain.
func Open(ctx context.Context, s Settings) (*Connector, error) {
	opts := []func(*config.LoadOptions) error{config.WithRegion(s.Region), config.WithRetryMaxAttempts(1)}
	if s.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(s.Profile))
	}
	if s.CredentialsFile != "" {
		opts = append(opts, config.WithSharedCredentialsFiles([]string{s.CredentialsFile}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to load the AWS configuration: %w", err)
	}
	c := New(kms.NewFromConfig(cfg, func(o *kms.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
	}))
	if _, err := c.WithWrappingKeySpec(s.WrappingKeySpec); err != nil {
		return nil, err
	}
	return c.WithAliases(s.Aliases)
}

// PrimaryAlias is the alias that names a keyflow key's primary AWS key.
func PrimaryAlias(keyID string) string { return "alias/keyflow/" + keyID }

// VersionAlias names the AWS key of one keyflow version.
func VersionAlias(keyID string, version uint32) string {
	return fmt.Sprintf("alias/keyflow/%s/v%d", keyID, version)
}

// call runs one SDK operation, notes it with its request ID and maps its
// error.
func call[T any](ctx context.Context, op, resource string, f func() (*T, error), meta func(*T) middleware.Metadata) (*T, error) {
	out, err := f()
	c := cloud.Call{Operation: op, Resource: resource}
	if err == nil {
		c.RequestID, _ = awsmiddleware.GetRequestIDMetadata(meta(out))
		cloud.Note(ctx, c)
		return out, nil
	}
	ce := &cloud.Error{Operation: op, Code: cloud.CodeUnavailable, Retryable: true, Err: err}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		ce.RequestID = re.ServiceRequestID()
		if st := re.HTTPStatusCode(); st > 0 && st < http.StatusInternalServerError {
			ce.Retryable = false
		}
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		ce.Code = api.ErrorCode()
		switch ce.Code {
		case "ThrottlingException", "KMSInternalException", "DependencyTimeoutException":
			ce.Retryable = true
		}
	}
	c.RequestID, c.ErrorCode = ce.RequestID, ce.Code
	cloud.Note(ctx, c)
	return nil, ce
}

func isNotFound(err error) bool {
	e, ok := cloud.AsError(err)
	return ok && e.Code == "NotFoundException"
}

func (a *Connector) describe(ctx context.Context, ref string) (*types.KeyMetadata, error) {
	out, err := call(ctx, "DescribeKey", ref, func() (*kms.DescribeKeyOutput, error) {
		return a.c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
	}, func(o *kms.DescribeKeyOutput) middleware.Metadata { return o.ResultMetadata })
	if err != nil {
		return nil, err
	}
	return out.KeyMetadata, nil
}

// importVersion makes (or finds) the AWS key of one keyflow version and
// imports its material when it has none yet. It returns the key's ARN.
func (a *Connector) importVersion(ctx context.Context, keyID string, version uint32, spec string, wrap cloud.Wrapper) (string, error) {
	ks, ok := keySpecs[spec]
	if !ok {
		return "", fmt.Errorf("%w: AWS KMS imports %v here, not %s", cloud.ErrUnsupported, cloud.Accepts[cloud.ProviderAWS], spec)
	}
	md, err := a.findVersion(ctx, keyID, version)
	if err != nil {
		return "", err
	}
	if md == nil {
		created, err := call(ctx, "CreateKey", "", func() (*kms.CreateKeyOutput, error) {
			return a.c.CreateKey(ctx, &kms.CreateKeyInput{
				Origin: types.OriginTypeExternal, KeySpec: ks.keySpec, KeyUsage: ks.usage,
				Description: aws.String(versionDescription(keyID, version)),
				Tags:        []types.Tag{{TagKey: aws.String("keyflow:key-id"), TagValue: aws.String(keyID)}, {TagKey: aws.String("keyflow:version"), TagValue: aws.String(fmt.Sprint(version))}},
			})
		}, func(o *kms.CreateKeyOutput) middleware.Metadata { return o.ResultMetadata })
		if err != nil {
			return "", err
		}
		md = created.KeyMetadata
		if !a.primaryOnly {
			alias := VersionAlias(keyID, version)
			if _, err := call(ctx, "CreateAlias", alias, func() (*kms.CreateAliasOutput, error) {
				return a.c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: md.KeyId})
			}, func(o *kms.CreateAliasOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
				return "", err
			}
		}
	}
	if md.KeyState != types.KeyStatePendingImport {
		return aws.ToString(md.Arn), nil // imported by an earlier attempt
	}
	alg, scheme, wrapSpec := types.AlgorithmSpecRsaesOaepSha256, cloud.SchemeRSAOAEPSHA256, a.wrapSpec
	if ks.pair {
		alg, scheme = types.AlgorithmSpecRsaAesKeyWrapSha256, cloud.SchemeRSAAESKeyWrapSHA256
		if wrapSpec == types.WrappingKeySpecRsa2048 {
			wrapSpec = types.WrappingKeySpecRsa3072 // keyflow's own AWS API takes no RSA_2048
		}
	}
	params, err := call(ctx, "GetParametersForImport", aws.ToString(md.Arn), func() (*kms.GetParametersForImportOutput, error) {
		return a.c.GetParametersForImport(ctx, &kms.GetParametersForImportInput{
			KeyId: md.KeyId, WrappingAlgorithm: alg, WrappingKeySpec: wrapSpec,
		})
	}, func(o *kms.GetParametersForImportOutput) middleware.Metadata { return o.ResultMetadata })
	if err != nil {
		return "", err
	}
	wrapped, err := wrap(ctx, cloud.WrappingKey{Scheme: scheme, PublicKey: params.PublicKey})
	if err != nil {
		return "", err
	}
	if _, err := call(ctx, "ImportKeyMaterial", aws.ToString(md.Arn), func() (*kms.ImportKeyMaterialOutput, error) {
		return a.c.ImportKeyMaterial(ctx, &kms.ImportKeyMaterialInput{
			KeyId: md.KeyId, ImportToken: params.ImportToken, EncryptedKeyMaterial: wrapped,
			ExpirationModel: types.ExpirationModelTypeKeyMaterialDoesNotExpire,
		})
	}, func(o *kms.ImportKeyMaterialOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
		return "", err
	}
	return aws.ToString(md.Arn), nil
}

// awsSpec is how one keyflow spec is made in AWS KMS.
type awsSpec struct {
	keySpec types.KeySpec
	usage   types.KeyUsageType
	// pair: the material is a PKCS#8 private key, too long for
	// RSAES_OAEP_SHA_256, so it goes under RSA_AES_KEY_WRAP_SHA_256.
	pair bool
}

// keySpecs are the specs this connector imports (cloud.Accepts lists
// the same for AWS).
var keySpecs = map[string]awsSpec{
	cloud.SpecAES256:         {types.KeySpecSymmetricDefault, types.KeyUsageTypeEncryptDecrypt, false},
	cloud.SpecRSA3072Sign:    {types.KeySpecRsa3072, types.KeyUsageTypeSignVerify, true},
	cloud.SpecRSA3072Decrypt: {types.KeySpecRsa3072, types.KeyUsageTypeEncryptDecrypt, true},
	cloud.SpecRSA4096Sign:    {types.KeySpecRsa4096, types.KeyUsageTypeSignVerify, true},
	cloud.SpecRSA4096Decrypt: {types.KeySpecRsa4096, types.KeyUsageTypeEncryptDecrypt, true},
	cloud.SpecECP256Sign:     {types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify, true},
	cloud.SpecECP384Sign:     {types.KeySpecEccNistP384, types.KeyUsageTypeSignVerify, true},
}

// versionDescription is the description of version's AWS key; with
// AliasesPrimaryOnly it is how a retried step knows the primary alias's
// key as its own.
func versionDescription(keyID string, version uint32) string {
	return fmt.Sprintf("keyflow key %s version %d (material imported by keyflow)", keyID, version)
}

// findVersion returns the AWS key an earlier attempt made for version,
// nil when there is none.
func (a *Connector) findVersion(ctx context.Context, keyID string, version uint32) (*types.KeyMetadata, error) {
	alias := VersionAlias(keyID, version)
	if a.primaryOnly {
		alias = PrimaryAlias(keyID)
	}
	md, err := a.describe(ctx, alias)
	switch {
	case isNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case a.primaryOnly && aws.ToString(md.Description) != versionDescription(keyID, version):
		return nil, nil // the primary is another version's key
	}
	return md, nil
}

// pointPrimary makes the primary alias name keyARN.
func (a *Connector) pointPrimary(ctx context.Context, keyID, keyARN string) error {
	return a.pointAlias(ctx, PrimaryAlias(keyID), keyARN)
}

// pointAlias makes alias name keyARN, creating or moving it.
func (a *Connector) pointAlias(ctx context.Context, alias, keyARN string) error {
	md, err := a.describe(ctx, alias)
	switch {
	case isNotFound(err):
		_, err = call(ctx, "CreateAlias", alias, func() (*kms.CreateAliasOutput, error) {
			return a.c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyARN)})
		}, func(o *kms.CreateAliasOutput) middleware.Metadata { return o.ResultMetadata })
		return err
	case err != nil:
		return err
	case aws.ToString(md.Arn) == keyARN:
		return nil
	}
	_, err = call(ctx, "UpdateAlias", alias, func() (*kms.UpdateAliasOutput, error) {
		return a.c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyARN)})
	}, func(o *kms.UpdateAliasOutput) middleware.Metadata { return o.ResultMetadata })
	return err
}

// Import implements cloud.Connector. The result's Resource is the primary
// alias; ProviderVersion the version's AWS key ARN.
func (a *Connector) Import(ctx context.Context, p cloud.ImportParams) (*cloud.ImportResult, error) {
	arn, err := a.importVersion(ctx, p.KeyID, p.KeyVersion, p.Spec, p.Wrap)
	if err != nil {
		return nil, err
	}
	if err := a.pointPrimary(ctx, p.KeyID, arn); err != nil {
		return nil, err
	}
	return &cloud.ImportResult{Resource: PrimaryAlias(p.KeyID), ProviderVersion: arn}, nil
}

// Rotate implements cloud.Connector: a new AWS key with the new material,
// then the primary alias moves to it.
func (a *Connector) Rotate(ctx context.Context, p cloud.RotateParams) (*cloud.ImportResult, error) {
	return a.Import(ctx, cloud.ImportParams{KeyID: p.Key.KeyID, KeyVersion: p.KeyVersion, Spec: p.Spec, Wrap: p.Wrap})
}

// Enable implements cloud.Connector: every version's AWS key.
func (a *Connector) Enable(ctx context.Context, p cloud.KeyRef) error {
	for _, v := range p.Versions {
		if _, err := call(ctx, "EnableKey", v, func() (*kms.EnableKeyOutput, error) {
			return a.c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(v)})
		}, func(o *kms.EnableKeyOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
			return err
		}
	}
	return nil
}

// Disable implements cloud.Connector: every version's AWS key.
func (a *Connector) Disable(ctx context.Context, p cloud.KeyRef) error {
	for _, v := range p.Versions {
		if _, err := call(ctx, "DisableKey", v, func() (*kms.DisableKeyOutput, error) {
			return a.c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(v)})
		}, func(o *kms.DisableKeyOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
			return err
		}
	}
	return nil
}

// ScheduleDeletion implements cloud.Connector: each version's AWS key is
// scheduled for deletion (AWS's window is 7 to 30 days) and the aliases
// go. A key already pending deletion or gone counts as done.
func (a *Connector) ScheduleDeletion(ctx context.Context, p cloud.DeletionParams) error {
	days := int32(min(max(p.Days, 7), 30))
	for _, v := range p.Key.Versions {
		md, err := a.describe(ctx, v)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if md.KeyState == types.KeyStatePendingDeletion {
			continue
		}
		if _, err := call(ctx, "ScheduleKeyDeletion", v, func() (*kms.ScheduleKeyDeletionOutput, error) {
			return a.c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(v), PendingWindowInDays: aws.Int32(days)})
		}, func(o *kms.ScheduleKeyDeletionOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
			return err
		}
	}
	aliases := []string{PrimaryAlias(p.Key.KeyID)}
	for i := range p.Key.Versions {
		aliases = append(aliases, VersionAlias(p.Key.KeyID, uint32(i+1)))
	}
	for _, al := range aliases {
		_, err := call(ctx, "DeleteAlias", al, func() (*kms.DeleteAliasOutput, error) {
			return a.c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String(al)})
		}, func(o *kms.DeleteAliasOutput) middleware.Metadata { return o.ResultMetadata })
		if err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

// Restore implements cloud.Restorer: CancelKeyDeletion on every
// version's AWS key still pending deletion (AWS leaves it disabled), then
// the aliases that ScheduleDeletion removed come back. A key AWS has
// already deleted cannot come back (NotFoundException).
func (a *Connector) Restore(ctx context.Context, p cloud.RestoreParams) error {
	if len(p.KeyVersions) != len(p.Key.Versions) {
		return fmt.Errorf("awskms: %d keyflow versions for %d AWS keys", len(p.KeyVersions), len(p.Key.Versions))
	}
	for i, v := range p.Key.Versions {
		md, err := a.describe(ctx, v)
		if err != nil {
			return err
		}
		if md.KeyState == types.KeyStatePendingDeletion {
			if _, err := call(ctx, "CancelKeyDeletion", v, func() (*kms.CancelKeyDeletionOutput, error) {
				return a.c.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(v)})
			}, func(o *kms.CancelKeyDeletionOutput) middleware.Metadata { return o.ResultMetadata }); err != nil {
				return err
			}
		}
		if a.primaryOnly {
			continue
		}
		if err := a.pointAlias(ctx, VersionAlias(p.Key.KeyID, p.KeyVersions[i]), v); err != nil {
			return err
		}
	}
	if p.Primary == "" {
		return nil
	}
	return a.pointPrimary(ctx, p.Key.KeyID, p.Primary)
}

// Describe implements cloud.Connector. State is the primary AWS key's;
// Versions has every version key's state.
func (a *Connector) Describe(ctx context.Context, p cloud.KeyRef) (*cloud.Description, error) {
	d := &cloud.Description{Resource: PrimaryAlias(p.KeyID), State: cloud.StateMissing, Versions: map[string]string{}}
	for _, v := range p.Versions {
		md, err := a.describe(ctx, v)
		switch {
		case isNotFound(err):
			d.Versions[v] = cloud.StateMissing
		case err != nil:
			return nil, err
		default:
			d.Versions[v] = state(md.KeyState)
		}
	}
	md, err := a.describe(ctx, d.Resource)
	switch {
	case isNotFound(err):
		return d, nil
	case err != nil:
		return nil, err
	}
	d.Primary, d.State = aws.ToString(md.Arn), state(md.KeyState)
	return d, nil
}

func state(s types.KeyState) string {
	switch s {
	case types.KeyStateEnabled:
		return cloud.StateEnabled
	case types.KeyStateDisabled:
		return cloud.StateDisabled
	case types.KeyStatePendingDeletion:
		return cloud.StatePendingDeletion
	case types.KeyStatePendingImport:
		return cloud.StatePendingImport
	}
	return strings.ToUpper(string(s))
}
