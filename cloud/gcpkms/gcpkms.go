// Package gcpkms is the Google Cloud KMS connector of package cloud, on the
// official SDK (cloud.google.com/go/kms/apiv1).
//
// How keyflow's key maps onto Cloud KMS:
//
//   - A keyflow key is one CryptoKey, keyflow-<keyID>, in the destination's
//     key ring, protection level HSM (or SOFTWARE, per the destination),
//     made import-only with skip_initial_version_creation so that every
//     version is imported. An AES-256 key is purpose ENCRYPT_DECRYPT,
//     GOOGLE_SYMMETRIC_ENCRYPTION; an exportable RSA or EC key pair is
//     ASYMMETRIC_SIGN (RSA_SIGN_PKCS1_3072/4096_SHA256,
//     EC_SIGN_P256_SHA256, EC_SIGN_P384_SHA384) or ASYMMETRIC_DECRYPT
//     (RSA_DECRYPT_OAEP_3072/4096_SHA256), from the keyflow key's usage,
//     and its material is the private key's PKCS#8 DER.
//   - Each keyflow version is one imported CryptoKeyVersion. Its import
//     job, keyflow-<keyID>-v<n>, uses RSA_OAEP_3072_SHA256_AES_256
//     (CKM_RSA_AES_KEY_WRAP: RSA-OAEP-SHA256 of a fresh AES-256 key, then
//     AES-KWP of the material). The job's name is the idempotence key: a
//     retried step finds the version that job imported.
//   - A rotation is a new imported version made primary
//     (UpdateCryptoKeyPrimaryVersion). Asymmetric CryptoKeys have no
//     primary in Cloud KMS (callers name the version), so there the new
//     version is just added, and Describe reports keyflow's newest
//     version as the primary; disable/enable change every
//     version's state; scheduled deletion destroys every version (Cloud
//     KMS keeps it DESTROY_SCHEDULED for the key's
//     destroy_scheduled_duration, 30 days by default, then destroys it;
//     CryptoKeys themselves are never deleted in Cloud KMS).
//
// Cloud KMS answers with no request ID over gRPC; the call notes name the
// resource instead. Retries are the Temporal activity's: the SDK's own
// retries are off (gax.WithRetry is not set on the calls).
package gcpkms

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyflow/keyflow/cloud"
)

// Connector is one Cloud KMS key ring.
type Connector struct {
	c          *kmsapi.KeyManagementClient
	ring       string // projects/P/locations/L/keyRings/R
	protection kmspb.ProtectionLevel
	// ImportWait bounds how long Import waits for an import job to be
	// ACTIVE and for the imported version to leave PENDING_IMPORT.
	ImportWait time.Duration
}

var _ cloud.Connector = (*Connector)(nil)

// Settings name a key ring. Credentials come from Application Default
// Credentials, or CredentialsFile.
type Settings struct {
	Project, Location, KeyRing string
	Endpoint                   string // optional
	CredentialsFile            string // optional
	// ProtectionLevel is HSM (the default) or SOFTWARE.
	ProtectionLevel string
}

// Open connects with the SDK's credential chain.
func Open(ctx context.Context, s Settings, extra ...option.ClientOption) (*Connector, error) {
	opts := extra
	if s.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(s.Endpoint))
	}
	if s.CredentialsFile != "" {
		opts = append(opts, option.WithCredentialsFile(s.CredentialsFile))
	}
	c, err := kmsapi.NewKeyManagementClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to open the Cloud KMS client: %w", err)
	}
	pl := kmspb.ProtectionLevel_HSM
	if strings.EqualFold(s.ProtectionLevel, "SOFTWARE") {
		pl = kmspb.ProtectionLevel_SOFTWARE
	}
	return &Connector{c: c, ring: fmt.Sprintf("projects/%s/locations/%s/keyRings/%s", s.Project, s.Location, s.KeyRing), protection: pl, ImportWait: 2 * time.Minute}, nil
}

// Close closes the client.
func (g *Connector) Close() error { return g.c.Close() }

// KeyName is the CryptoKey of a keyflow key.
func (g *Connector) KeyName(keyID string) string { return g.ring + "/cryptoKeys/keyflow-" + keyID }

func (g *Connector) jobName(keyID string, version uint32) string {
	return fmt.Sprintf("%s/importJobs/keyflow-%s-v%d", g.ring, keyID, version)
}

// note records a call and maps its error.
func note(ctx context.Context, op, resource string, err error) error {
	c := cloud.Call{Operation: op, Resource: resource}
	if err == nil {
		cloud.Note(ctx, c)
		return nil
	}
	ce := &cloud.Error{Operation: op, Code: cloud.CodeUnavailable, Retryable: true, Err: err}
	if st, ok := status.FromError(err); ok {
		ce.Code = st.Code().String()
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Aborted:
			ce.Retryable = true
		case codes.ResourceExhausted:
			ce.Retryable = false // a quota: a person must act
		default:
			ce.Retryable = false
		}
	}
	c.ErrorCode = ce.Code
	cloud.Note(ctx, c)
	return ce
}

func isNotFound(err error) bool {
	e, ok := cloud.AsError(err)
	return ok && e.Code == codes.NotFound.String()
}

// gcpSpec is how Cloud KMS holds one keyflow spec: the CryptoKey's
// purpose and its versions' algorithm. Cloud KMS fixes one signing
// algorithm per key; keyflow's RSA signing keys go as PKCS#1 v1.5 with
// SHA-256, the one every verifier has (keyflow itself signs with PSS or
// PKCS#1 and SHA-256/384/512).
type gcpSpec struct {
	purpose kmspb.CryptoKey_CryptoKeyPurpose
	alg     kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm
}

var gcpSpecs = map[string]gcpSpec{
	cloud.SpecAES256:         {kmspb.CryptoKey_ENCRYPT_DECRYPT, kmspb.CryptoKeyVersion_GOOGLE_SYMMETRIC_ENCRYPTION},
	cloud.SpecRSA3072Sign:    {kmspb.CryptoKey_ASYMMETRIC_SIGN, kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_3072_SHA256},
	cloud.SpecRSA3072Decrypt: {kmspb.CryptoKey_ASYMMETRIC_DECRYPT, kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_3072_SHA256},
	cloud.SpecRSA4096Sign:    {kmspb.CryptoKey_ASYMMETRIC_SIGN, kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA256},
	cloud.SpecRSA4096Decrypt: {kmspb.CryptoKey_ASYMMETRIC_DECRYPT, kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_4096_SHA256},
	cloud.SpecECP256Sign:     {kmspb.CryptoKey_ASYMMETRIC_SIGN, kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256},
	cloud.SpecECP384Sign:     {kmspb.CryptoKey_ASYMMETRIC_SIGN, kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384},
}

// Algorithm is the CryptoKeyVersion algorithm a keyflow spec becomes.
func Algorithm(spec string) (kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm, bool) {
	s, ok := gcpSpecs[spec]
	return s.alg, ok
}

func (g *Connector) ensureKey(ctx context.Context, keyID string, spec gcpSpec) error {
	name := g.KeyName(keyID)
	_, err := g.c.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: name})
	if err = note(ctx, "GetCryptoKey", name, err); !isNotFound(err) {
		return err
	}
	_, err = g.c.CreateCryptoKey(ctx, &kmspb.CreateCryptoKeyRequest{
		Parent: g.ring, CryptoKeyId: "keyflow-" + keyID, SkipInitialVersionCreation: true,
		CryptoKey: &kmspb.CryptoKey{
			Purpose:         spec.purpose,
			ImportOnly:      true,
			Labels:          map[string]string{"keyflow-key-id": keyID},
			VersionTemplate: &kmspb.CryptoKeyVersionTemplate{ProtectionLevel: g.protection, Algorithm: spec.alg},
		},
	})
	return note(ctx, "CreateCryptoKey", name, err)
}

// poll calls f until it reports done or ImportWait passes.
func (g *Connector) poll(ctx context.Context, f func() (bool, error)) error {
	deadline := time.Now().Add(g.ImportWait)
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, 5*time.Second) {
		done, err := f()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return &cloud.Error{Operation: "poll", Code: "Timeout", Retryable: true, Err: errors.New("the provider did not finish in time")}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// importVersion imports one keyflow version (or finds the version an
// earlier attempt imported) and returns the CryptoKeyVersion name.
func (g *Connector) importVersion(ctx context.Context, keyID string, version uint32, spec string, wrap cloud.Wrapper) (string, error) {
	gs, ok := gcpSpecs[spec]
	if !ok {
		return "", fmt.Errorf("%w: Cloud KMS takes no %s keys from keyflow", cloud.ErrUnsupported, spec)
	}
	if err := g.ensureKey(ctx, keyID, gs); err != nil {
		return "", err
	}
	key, jobName := g.KeyName(keyID), g.jobName(keyID, version)
	if v, err := g.findVersion(ctx, key, jobName); err != nil || v != "" {
		return v, err
	}
	job, err := g.c.GetImportJob(ctx, &kmspb.GetImportJobRequest{Name: jobName})
	if err = note(ctx, "GetImportJob", jobName, err); isNotFound(err) {
		job, err = g.c.CreateImportJob(ctx, &kmspb.CreateImportJobRequest{
			Parent: g.ring, ImportJobId: fmt.Sprintf("keyflow-%s-v%d", keyID, version),
			ImportJob: &kmspb.ImportJob{ImportMethod: kmspb.ImportJob_RSA_OAEP_3072_SHA256_AES_256, ProtectionLevel: g.protection},
		})
		err = note(ctx, "CreateImportJob", jobName, err)
	}
	if err != nil {
		return "", err
	}
	if err := g.poll(ctx, func() (bool, error) {
		if job.GetState() == kmspb.ImportJob_ACTIVE {
			return true, nil
		}
		var err error
		job, err = g.c.GetImportJob(ctx, &kmspb.GetImportJobRequest{Name: jobName})
		return false, note(ctx, "GetImportJob", jobName, err)
	}); err != nil {
		return "", err
	}
	block, _ := pem.Decode([]byte(job.GetPublicKey().GetPem()))
	if block == nil {
		return "", &cloud.Error{Operation: "GetImportJob", Code: "InvalidPublicKey", Err: errors.New("the import job's public key is not PEM")}
	}
	wrapped, err := wrap(ctx, cloud.WrappingKey{Scheme: cloud.SchemeRSAAESKeyWrapSHA256, PublicKey: block.Bytes})
	if err != nil {
		return "", err
	}
	v, err := g.c.ImportCryptoKeyVersion(ctx, &kmspb.ImportCryptoKeyVersionRequest{
		Parent: key, Algorithm: gs.alg, ImportJob: jobName, WrappedKey: wrapped,
	})
	if err := note(ctx, "ImportCryptoKeyVersion", key, err); err != nil {
		return "", err
	}
	name := v.GetName()
	err = g.poll(ctx, func() (bool, error) {
		if v.GetState() != kmspb.CryptoKeyVersion_PENDING_IMPORT {
			return true, nil
		}
		var err error
		v, err = g.c.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
		return false, note(ctx, "GetCryptoKeyVersion", name, err)
	})
	if err != nil {
		return "", err
	}
	if v.GetState() == kmspb.CryptoKeyVersion_IMPORT_FAILED {
		return "", &cloud.Error{Operation: "ImportCryptoKeyVersion", Code: "IMPORT_FAILED", Err: errors.New(v.GetImportFailureReason())}
	}
	return name, nil
}

// findVersion returns the version that jobName imported, if any.
func (g *Connector) findVersion(ctx context.Context, key, jobName string) (string, error) {
	it := g.c.ListCryptoKeyVersions(ctx, &kmspb.ListCryptoKeyVersionsRequest{Parent: key})
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return "", note(ctx, "ListCryptoKeyVersions", key, nil)
		}
		if err != nil {
			return "", note(ctx, "ListCryptoKeyVersions", key, err)
		}
		if v.GetImportJob() == jobName && v.GetState() != kmspb.CryptoKeyVersion_IMPORT_FAILED {
			cloud.Note(ctx, cloud.Call{Operation: "ListCryptoKeyVersions", Resource: key})
			return v.GetName(), nil
		}
	}
}

func (g *Connector) makePrimary(ctx context.Context, keyID, version string) error {
	_, err := g.c.UpdateCryptoKeyPrimaryVersion(ctx, &kmspb.UpdateCryptoKeyPrimaryVersionRequest{
		Name: g.KeyName(keyID), CryptoKeyVersionId: version[strings.LastIndexByte(version, '/')+1:],
	})
	return note(ctx, "UpdateCryptoKeyPrimaryVersion", g.KeyName(keyID), err)
}

// Import implements cloud.Connector.
func (g *Connector) Import(ctx context.Context, p cloud.ImportParams) (*cloud.ImportResult, error) {
	v, err := g.importVersion(ctx, p.KeyID, p.KeyVersion, p.Spec, p.Wrap)
	if err != nil {
		return nil, err
	}
	// Only symmetric CryptoKeys have a primary; an asymmetric key's
	// users name the version (keyflow's newest is the one to use).
	if p.Spec == cloud.SpecAES256 {
		if err := g.makePrimary(ctx, p.KeyID, v); err != nil {
			return nil, err
		}
	}
	return &cloud.ImportResult{Resource: g.KeyName(p.KeyID), ProviderVersion: v}, nil
}

// Rotate implements cloud.Connector: a new imported version, made primary.
func (g *Connector) Rotate(ctx context.Context, p cloud.RotateParams) (*cloud.ImportResult, error) {
	return g.Import(ctx, cloud.ImportParams{KeyID: p.Key.KeyID, KeyVersion: p.KeyVersion, Spec: p.Spec, Wrap: p.Wrap})
}

func (g *Connector) setState(ctx context.Context, p cloud.KeyRef, st kmspb.CryptoKeyVersion_CryptoKeyVersionState) error {
	for _, name := range p.Versions {
		_, err := g.c.UpdateCryptoKeyVersion(ctx, &kmspb.UpdateCryptoKeyVersionRequest{
			CryptoKeyVersion: &kmspb.CryptoKeyVersion{Name: name, State: st},
			UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"state"}},
		})
		if err := note(ctx, "UpdateCryptoKeyVersion", name, err); err != nil {
			return err
		}
	}
	return nil
}

// Enable implements cloud.Connector.
func (g *Connector) Enable(ctx context.Context, p cloud.KeyRef) error {
	return g.setState(ctx, p, kmspb.CryptoKeyVersion_ENABLED)
}

// Disable implements cloud.Connector.
func (g *Connector) Disable(ctx context.Context, p cloud.KeyRef) error {
	return g.setState(ctx, p, kmspb.CryptoKeyVersion_DISABLED)
}

// ScheduleDeletion implements cloud.Connector: every version is destroyed
// after the key's destroy_scheduled_duration (Days is not Cloud KMS's to
// take per call).
func (g *Connector) ScheduleDeletion(ctx context.Context, p cloud.DeletionParams) error {
	for _, name := range p.Key.Versions {
		v, err := g.c.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
		if err = note(ctx, "GetCryptoKeyVersion", name, err); isNotFound(err) {
			continue
		} else if err != nil {
			return err
		}
		switch v.GetState() {
		case kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmspb.CryptoKeyVersion_DESTROYED:
			continue
		}
		_, err = g.c.DestroyCryptoKeyVersion(ctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: name})
		if err := note(ctx, "DestroyCryptoKeyVersion", name, err); err != nil {
			return err
		}
	}
	return nil
}

// Describe implements cloud.Connector. State is the primary version's.
func (g *Connector) Describe(ctx context.Context, p cloud.KeyRef) (*cloud.Description, error) {
	name := g.KeyName(p.KeyID)
	d := &cloud.Description{Resource: name, State: cloud.StateMissing, Versions: map[string]string{}}
	k, err := g.c.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: name})
	if err = note(ctx, "GetCryptoKey", name, err); isNotFound(err) {
		return d, nil
	} else if err != nil {
		return nil, err
	}
	d.Primary = k.GetPrimary().GetName()
	if k.GetPrimary() != nil {
		d.State = state(k.GetPrimary().GetState())
	}
	asymmetric := k.GetPurpose() != kmspb.CryptoKey_ENCRYPT_DECRYPT
	it := g.c.ListCryptoKeyVersions(ctx, &kmspb.ListCryptoKeyVersionsRequest{Parent: name})
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, note(ctx, "ListCryptoKeyVersions", name, err)
		}
		d.Versions[v.GetName()] = state(v.GetState())
	}
	if n := len(p.Versions); asymmetric && n > 0 {
		// No primary in Cloud KMS: keyflow's newest version stands
		// for it, with its state (or missing).
		d.Primary, d.State = "", cloud.StateMissing
		if st, ok := d.Versions[p.Versions[n-1]]; ok {
			d.Primary, d.State = p.Versions[n-1], st
		}
	}
	return d, note(ctx, "ListCryptoKeyVersions", name, nil)
}

func state(s kmspb.CryptoKeyVersion_CryptoKeyVersionState) string {
	switch s {
	case kmspb.CryptoKeyVersion_ENABLED:
		return cloud.StateEnabled
	case kmspb.CryptoKeyVersion_DISABLED:
		return cloud.StateDisabled
	case kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmspb.CryptoKeyVersion_DESTROYED:
		return cloud.StatePendingDeletion
	case kmspb.CryptoKeyVersion_PENDING_IMPORT:
		return cloud.StatePendingImport
	}
	return s.String()
}
