package kms

// External Key Store (XKS): the domain half of keyflow's AWS KMS External
// Key Store proxy (aws/aws-kms-xksproxy-api-spec, v1). AWS KMS (or any
// client of that spec) sends GetKeyMetadata, Encrypt, Decrypt and
// GetHealthStatus; the HTTP adapter (workers/xks) authenticates the
// request (SigV4) and calls the methods below, which do the cryptography
// under a keyflow SYMMETRIC_DEFAULT key in the HSM and record each call.
//
// What the spec fixes, and how keyflow meets it:
//
//   - Encrypt is raw AES-256-GCM: ciphertext, IV and tag are returned
//     apart, and AWS KMS builds its own ciphertext blob from them. The
//     12-byte IV is drawn in Go (newIV), never by the HSM.
//   - XKS has no key versions, so keyflow returns a 5-byte
//     ciphertextMetadata (format byte 0x01, then the key version,
//     big-endian). AWS KMS stores it opaquely and hands it back to
//     Decrypt, which so finds the version in O(1) after a rotation.
//   - The AAD given to the HSM is, as the spec's Encrypt section says:
//     2-byte big-endian length of additionalAuthenticatedData || AAD ||
//     1-byte length of ciphertextMetadata || ciphertextMetadata. The
//     lengths stop an AAD from passing for metadata and back; the tag
//     then covers the metadata, so a changed key version fails.
//   - The ciphertext data integrity value (Appendix C) is SHA-256 over
//     AAD || ciphertextMetadata || IV || ciphertext || tag, computed as
//     soon as the HSM returns, then checked by decrypting once more, so a
//     result that would not decrypt is never returned.
//   - Decrypt accepts a 12- or 16-byte IV (an external key manager may
//     have used 16 bytes; hsm.GCMLongIVDecrypter) and reports every
//     failure of the ciphertext as one InvalidCiphertextException.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// Limits of the XKS proxy API v1 that keyflow serves exactly: the spec's
// minimums, which keyflow does not exceed (UnsupportedOperationException
// beyond them, as the spec's error table says).
const (
	XKSMaxPlaintext         = 4300
	XKSMaxAAD               = 8192
	XKSMaxCiphertextMeta    = 20
	XKSMaxARN               = 2048
	xksCiphertextMetaFormat = 0x01
	xksCiphertextMetaSize   = 5
)

// XKS values defined by the spec.
const (
	XKSAlgorithmAESGCM   = "AES_GCM"
	XKSIntegritySHA256   = "SHA_256"
	XKSKeyStatusEnabled  = "ENABLED"
	XKSKeyStatusDisabled = "DISABLED"
	XKSHealthActive      = "ACTIVE"
	XKSHealthUnavailable = "UNAVAILABLE"
	XKSKeySpecAES256     = "AES_256"
	xksOperationHealth   = "health"
	xksOperationMetadata = "metadata"
	xksOperationEncrypt  = "encrypt"
	xksOperationDecrypt  = "decrypt"
)

// XKSRequestMetadata is the requestMetadata object AWS KMS puts in every
// XKS request: who called AWS KMS, on which KMS key, through which API.
// The proxy does not verify it beyond the request signature; keyflow logs
// it in the audit record and lets XKSPolicy decide on it.
type XKSRequestMetadata struct {
	AWSPrincipalARN string `json:"awsPrincipalArn,omitempty"`
	AWSSourceVPC    string `json:"awsSourceVpc,omitempty"`
	AWSSourceVPCE   string `json:"awsSourceVpce,omitempty"`
	KMSKeyARN       string `json:"kmsKeyArn,omitempty"`
	KMSOperation    string `json:"kmsOperation,omitempty"`
	KMSRequestID    string `json:"kmsRequestId,omitempty"`
	KMSViaService   string `json:"kmsViaService,omitempty"`
}

// validate checks the fields the spec requires. kmsOperation is not
// checked against a list: the spec forbids rejecting unknown operations.
func (m XKSRequestMetadata) validate(needPrincipal bool) error {
	if m.KMSRequestID == "" || m.KMSOperation == "" {
		return newError(CodeValidation, "requestMetadata.kmsRequestId and requestMetadata.kmsOperation are required")
	}
	if needPrincipal && m.AWSPrincipalARN == "" {
		return newError(CodeValidation, "requestMetadata.awsPrincipalArn is required")
	}
	for _, f := range []string{m.AWSPrincipalARN, m.AWSSourceVPC, m.AWSSourceVPCE, m.KMSKeyARN, m.KMSOperation, m.KMSRequestID, m.KMSViaService} {
		if len(f) > XKSMaxARN {
			return newError(CodeValidation, "a requestMetadata field is longer than %d characters", XKSMaxARN)
		}
	}
	return nil
}

// auditData is the metadata as recorded: every field the spec asks a
// proxy to log, bounded in size, never anything from the payload.
func (m XKSRequestMetadata) auditData(data map[string]any) {
	for k, v := range map[string]string{
		"awsPrincipalArn": m.AWSPrincipalARN, "awsSourceVpc": m.AWSSourceVPC, "awsSourceVpce": m.AWSSourceVPCE,
		"kmsKeyArn": m.KMSKeyARN, "kmsOperation": m.KMSOperation, "kmsRequestId": m.KMSRequestID,
		"kmsViaService": m.KMSViaService,
	} {
		if v != "" {
			data[k] = truncate(v, XKSMaxARN)
		}
	}
}

// XKSPolicy is keyflow's secondary authorization of XKS requests, decided
// on the request metadata (the spec's "Authorization" section). An empty
// list allows everything; an entry ending in "*" matches by prefix.
type XKSPolicy struct {
	// AllowedPrincipals are the AWS principal ARNs (awsPrincipalArn)
	// allowed to use the key, e.g. "arn:aws:iam::111122223333:role/app".
	AllowedPrincipals []string `json:"allowedPrincipals,omitempty"`
	// AllowedKMSKeyARNs binds the external key to these AWS KMS keys
	// (kmsKeyArn), so no other AWS account can put a KMS key of its own
	// over it. GetKeyMetadata for CreateKey carries no kmsKeyArn and is
	// allowed; Encrypt and Decrypt always carry one.
	AllowedKMSKeyARNs []string `json:"allowedKmsKeyArns,omitempty"`
}

func matchAny(patterns []string, v string) bool {
	for _, p := range patterns {
		if p == v || (strings.HasSuffix(p, "*") && strings.HasPrefix(v, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// allow decides one request. The refusal names the field, not the policy.
func (p XKSPolicy) allow(m XKSRequestMetadata, op string) error {
	if len(p.AllowedPrincipals) > 0 && !matchAny(p.AllowedPrincipals, m.AWSPrincipalARN) {
		return newError(CodeAccessDenied, "the AWS principal is not allowed to use this external key")
	}
	if len(p.AllowedKMSKeyARNs) > 0 {
		if m.KMSKeyARN == "" && op == xksOperationMetadata {
			return nil
		}
		if !matchAny(p.AllowedKMSKeyARNs, m.KMSKeyARN) {
			return newError(CodeAccessDenied, "the AWS KMS key is not allowed to use this external key")
		}
	}
	return nil
}

// XKSKey is one external key of one XKS key store, as the proxy's
// configuration exposes it: the keyflow key behind it (in the caller's
// tenant) and the policy that guards it.
type XKSKey struct {
	KeyStore      string // the URI path prefix of the key store
	ExternalKeyID string
	KeyRef        string // keyflow key ID or alias
	Policy        XKSPolicy
}

func (k XKSKey) auditData(m XKSRequestMetadata) map[string]any {
	data := map[string]any{"keyStore": truncate(k.KeyStore, 128), "externalKeyId": truncate(k.ExternalKeyID, 128)}
	m.auditData(data)
	return data
}

// xksKey resolves the keyflow key behind an external key and applies the
// policy. A key that does not exist is KeyNotFound to XKS.
func (s *Service) xksKey(ctx context.Context, c Caller, p XKSKey, m XKSRequestMetadata, op string) (*Key, error) {
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := m.validate(true); err != nil {
		return nil, err
	}
	if err := p.Policy.allow(m, op); err != nil {
		return nil, err
	}
	if p.KeyRef == "" {
		return nil, newError(CodeNotFound, "external key %q is not configured", truncate(p.ExternalKeyID, 128))
	}
	return s.cachedKey(ctx, c.Tenant, p.KeyRef)
}

// XKSKeyStatus maps a keyflow key state to the spec's keyStatus: only an
// ACTIVE key is ENABLED (AWS KMS then encrypts with it). A SUSPENDED or
// DEACTIVATED key is DISABLED but still decrypts, as keyflow keys do.
func XKSKeyStatus(s KeyState) string {
	if s == StateActive {
		return XKSKeyStatusEnabled
	}
	return XKSKeyStatusDisabled
}

// XKSKeyMetadataParams are the inputs of XKSGetKeyMetadata.
type XKSKeyMetadataParams struct {
	Key      XKSKey
	Metadata XKSRequestMetadata
}

// XKSKeyMetadataResult is the GetKeyMetadata response.
type XKSKeyMetadataResult struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

// XKSGetKeyMetadata describes an external key: AES_256, ENCRYPT and
// DECRYPT, and its status. A keyflow key of another kind is described as
// what it is, and AWS KMS refuses to create a key over it.
func (s *Service) XKSGetKeyMetadata(ctx context.Context, c Caller, p XKSKeyMetadataParams) (res *XKSKeyMetadataResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeXKSMetadata, &err, func() (string, map[string]any) {
		data := p.Key.auditData(p.Metadata)
		if res != nil {
			data["keyStatus"] = res.KeyStatus
		}
		return xksSubject(k), data
	}, func() { res = nil })
	if k, err = s.xksKey(ctx, c, p.Key, p.Metadata, xksOperationMetadata); err != nil {
		return nil, err
	}
	res = &XKSKeyMetadataResult{KeySpec: XKSKeySpecAES256, KeyUsage: []string{"ENCRYPT", "DECRYPT"}, KeyStatus: XKSKeyStatus(k.State)}
	if k.Spec != SpecSymmetricDefault || k.Usage != UsageEncryptDecrypt {
		res.KeySpec = string(k.Spec)
		res.KeyUsage = xksUsage(k.Usage)
	}
	return res, nil
}

func xksUsage(u KeyUsage) []string {
	switch u {
	case UsageEncryptDecrypt:
		return []string{"ENCRYPT", "DECRYPT"}
	case "":
		return []string{}
	default:
		return []string{string(u)}
	}
}

func xksSubject(k *Key) string {
	if k == nil {
		return ""
	}
	return k.ResourceName()
}

// checkXKSKey refuses a key that cannot do raw AES-GCM.
func checkXKSKey(k *Key) error {
	if k.Spec != SpecSymmetricDefault || k.Usage != UsageEncryptDecrypt {
		return newError(CodeInvalidKeyUsage, "key %s (%s, %s) is not an AES-256 ENCRYPT_DECRYPT key", k.ID, k.Spec, k.Usage)
	}
	return nil
}

// XKSEncryptParams are the inputs of XKSEncrypt.
type XKSEncryptParams struct {
	Key       XKSKey
	Metadata  XKSRequestMetadata
	Plaintext []byte
	AAD       []byte // additionalAuthenticatedData; optional
	// Algorithm must be AES_GCM.
	Algorithm string
	// IntegrityAlgorithm, when set, must be SHA_256 and asks for the
	// ciphertext data integrity value.
	IntegrityAlgorithm string
}

// XKSEncryptResult is the Encrypt response, each field raw (the adapter
// encodes them in Base64).
type XKSEncryptResult struct {
	Ciphertext         []byte
	CiphertextMetadata []byte
	IV                 []byte
	AuthenticationTag  []byte
	IntegrityValue     []byte // nil unless asked for
	KeyVersion         uint32
}

// xksAAD is the AAD given to the HSM (see the package comment above).
func xksAAD(aad, meta []byte) []byte {
	out := make([]byte, 0, 3+len(aad)+len(meta))
	out = binary.BigEndian.AppendUint16(out, uint16(len(aad)))
	out = append(out, aad...)
	out = append(out, byte(len(meta)))
	return append(out, meta...)
}

// XKSIntegrityValue is the spec's ciphertextDataIntegrityValue: SHA-256
// over AAD || ciphertextMetadata || IV || ciphertext || tag (Appendix C).
func XKSIntegrityValue(aad, meta, iv, ciphertext, tag []byte) []byte {
	h := sha256.New()
	for _, b := range [][]byte{aad, meta, iv, ciphertext, tag} {
		h.Write(b)
	}
	return h.Sum(nil)
}

func xksCiphertextMeta(version uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{xksCiphertextMetaFormat}, version)
}

func parseXKSCiphertextMeta(b []byte) (uint32, bool) {
	if len(b) != xksCiphertextMetaSize || b[0] != xksCiphertextMetaFormat {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[1:]), true
}

// XKSEncrypt encrypts up to 4300 bytes under the key's primary version.
func (s *Service) XKSEncrypt(ctx context.Context, c Caller, p XKSEncryptParams) (res *XKSEncryptResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeXKSEncrypt, &err, func() (string, map[string]any) {
		data := p.Key.auditData(p.Metadata)
		data["plaintextBytes"], data["aadBytes"] = len(p.Plaintext), len(p.AAD)
		data["integrityValue"] = p.IntegrityAlgorithm != ""
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return xksSubject(k), data
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := p.Metadata.validate(true); err != nil {
		return nil, err
	}
	switch {
	case p.Algorithm != XKSAlgorithmAESGCM:
		return nil, newError(CodeValidation, "encryptionAlgorithm must be %s", XKSAlgorithmAESGCM)
	case p.IntegrityAlgorithm != "" && p.IntegrityAlgorithm != XKSIntegritySHA256:
		return nil, newError(CodeValidation, "ciphertextDataIntegrityValueAlgorithm must be %s", XKSIntegritySHA256)
	case len(p.Plaintext) == 0:
		return nil, newError(CodeValidation, "plaintext is required")
	case len(p.Plaintext) > XKSMaxPlaintext:
		return nil, newError(CodeUnsupportedOperation, "plaintext is %d bytes; this proxy takes up to %d", len(p.Plaintext), XKSMaxPlaintext)
	case len(p.AAD) > XKSMaxAAD:
		return nil, newError(CodeUnsupportedOperation, "additionalAuthenticatedData is %d bytes; this proxy takes up to %d", len(p.AAD), XKSMaxAAD)
	}
	if k, err = s.xksKey(ctx, c, p.Key, p.Metadata, xksOperationEncrypt); err != nil {
		return nil, err
	}
	if err := checkXKSKey(k); err != nil {
		return nil, err
	}
	if !k.State.CanEncrypt() {
		return nil, newError(CodeInvalidState, "key %s is %s; only an ACTIVE key encrypts", k.ID, k.State)
	}
	v, ok := k.Version(k.PrimaryVersion)
	if !ok || !v.State.CanEncrypt() {
		return nil, newError(CodeInvalidState, "key %s has no active primary version", k.ID)
	}
	iv, err := newIV()
	if err != nil {
		return nil, wrapError(CodeInternal, err, "failed to encrypt")
	}
	meta := xksCiphertextMeta(v.Number)
	aad := xksAAD(p.AAD, meta)
	out := &XKSEncryptResult{CiphertextMetadata: meta, IV: iv, KeyVersion: v.Number}
	err = s.withHandle(ctx, k, v.Number, false, func(h hsm.KeyHandle) error {
		sealed, err := s.hsm.EncryptGCM(ctx, h, iv, p.Plaintext, aad)
		if err != nil {
			return wrapError(CodeInternal, err, "the HSM failed to encrypt")
		}
		if len(sealed) != len(p.Plaintext)+hsm.GCMTagSize {
			return newError(CodeInternal, "the HSM returned %d bytes for %d bytes of plaintext", len(sealed), len(p.Plaintext))
		}
		n := len(p.Plaintext)
		out.Ciphertext, out.AuthenticationTag = sealed[:n:n], sealed[n:]
		if p.IntegrityAlgorithm == "" {
			return nil
		}
		// Appendix C: the value first, over what the HSM returned; then
		// proof that exactly that decrypts to the plaintext.
		out.IntegrityValue = XKSIntegrityValue(p.AAD, meta, iv, out.Ciphertext, out.AuthenticationTag)
		check, err := s.hsm.DecryptGCM(ctx, h, iv, sealed, aad)
		if err != nil {
			return wrapError(CodeInternal, err, "the ciphertext did not decrypt right after encryption")
		}
		same := string(check) == string(p.Plaintext)
		clear(check)
		if !same {
			return newError(CodeInternal, "the ciphertext did not decrypt to the plaintext right after encryption")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// XKSDecryptParams are the inputs of XKSDecrypt.
type XKSDecryptParams struct {
	Key                XKSKey
	Metadata           XKSRequestMetadata
	Ciphertext         []byte
	CiphertextMetadata []byte
	IV                 []byte
	AuthenticationTag  []byte
	AAD                []byte
	Algorithm          string // must be AES_GCM
}

// XKSDecryptResult is the Decrypt response. The caller zeroes Plaintext.
type XKSDecryptResult struct {
	Plaintext  []byte
	KeyVersion uint32
}

// XKSDecrypt opens a ciphertext made by XKSEncrypt (or, under a 16-byte
// IV, by another external key manager holding the same key). Every
// failure of the ciphertext, its metadata, IV, tag or AAD is one
// InvalidCiphertextException.
func (s *Service) XKSDecrypt(ctx context.Context, c Caller, p XKSDecryptParams) (res *XKSDecryptResult, err error) {
	var k *Key
	defer s.finish(ctx, c, events.TypeXKSDecrypt, &err, func() (string, map[string]any) {
		data := p.Key.auditData(p.Metadata)
		data["ciphertextBytes"], data["aadBytes"], data["ivBytes"] = len(p.Ciphertext), len(p.AAD), len(p.IV)
		if res != nil {
			data["keyVersion"] = res.KeyVersion
		}
		return xksSubject(k), data
	}, func() {
		if res != nil {
			clear(res.Plaintext)
			res = nil
		}
	})
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := p.Metadata.validate(true); err != nil {
		return nil, err
	}
	switch {
	case p.Algorithm != XKSAlgorithmAESGCM:
		return nil, newError(CodeValidation, "encryptionAlgorithm must be %s", XKSAlgorithmAESGCM)
	case len(p.Ciphertext) > XKSMaxPlaintext:
		return nil, newError(CodeUnsupportedOperation, "ciphertext is %d bytes; this proxy takes up to %d", len(p.Ciphertext), XKSMaxPlaintext)
	case len(p.AAD) > XKSMaxAAD:
		return nil, newError(CodeUnsupportedOperation, "additionalAuthenticatedData is %d bytes; this proxy takes up to %d", len(p.AAD), XKSMaxAAD)
	}
	if k, err = s.xksKey(ctx, c, p.Key, p.Metadata, xksOperationDecrypt); err != nil {
		return nil, err
	}
	if err := checkXKSKey(k); err != nil {
		return nil, err
	}
	version, ok := parseXKSCiphertextMeta(p.CiphertextMetadata)
	if !ok {
		return nil, errDecrypt(errors.New("ciphertextMetadata is not keyflow's"))
	}
	v, ok := k.Version(version)
	if !ok || v.Algorithm != AlgAES256GCM {
		return nil, errDecrypt(errors.New("unknown key version"))
	}
	if len(p.AuthenticationTag) != hsm.GCMTagSize || (len(p.IV) != hsm.GCMIVSize && len(p.IV) != hsm.GCMLongIVSize) {
		return nil, errDecrypt(errors.New("bad IV or tag length"))
	}
	if !k.State.CanDecrypt() {
		return nil, newError(CodeInvalidState, "key %s is %s and cannot decrypt", k.ID, k.State)
	}
	if !v.State.CanDecrypt() {
		return nil, newError(CodeInvalidState, "version %d of key %s is %s and cannot decrypt", v.Number, k.ID, v.State)
	}
	open := s.hsm.DecryptGCM
	if len(p.IV) == hsm.GCMLongIVSize {
		long, ok := s.hsm.(hsm.GCMLongIVDecrypter)
		if !ok {
			return nil, newError(CodeUnsupportedOperation, "this HSM cannot decrypt under a 16-byte IV")
		}
		open = long.DecryptGCMLongIV
	}
	sealed := make([]byte, 0, len(p.Ciphertext)+len(p.AuthenticationTag))
	sealed = append(append(sealed, p.Ciphertext...), p.AuthenticationTag...)
	aad := xksAAD(p.AAD, p.CiphertextMetadata)
	var pt []byte
	err = s.withHandle(ctx, k, v.Number, false, func(h hsm.KeyHandle) error {
		var err error
		pt, err = open(ctx, h, p.IV, sealed, aad)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, hsm.ErrAuthFailed) || errors.Is(err, hsm.ErrInvalidInput):
			return errDecrypt(err)
		default:
			return wrapError(CodeInternal, err, "the HSM failed to decrypt")
		}
	})
	if err != nil {
		return nil, err
	}
	return &XKSDecryptResult{Plaintext: pt, KeyVersion: v.Number}, nil
}

// XKSHealthParams are the inputs of XKSGetHealthStatus.
type XKSHealthParams struct {
	KeyStore string
	Metadata XKSRequestMetadata
}

// XKSHealthResult is the keyflow part of the GetHealthStatus response.
type XKSHealthResult struct {
	// Status is ACTIVE when the HSM just ran a GCM round trip, else
	// UNAVAILABLE.
	Status string
}

// XKSGetHealthStatus runs the spec's deep health check: a throwaway AES
// key generated in the HSM, one encryption and one decryption under it,
// and the key destroyed. It never touches a customer key (the spec asks
// for a test key, so health checks do not show up as key use), and it is
// exempt from XKSPolicy. An HSM failure is a result (UNAVAILABLE), not an
// error: AWS KMS reads it from a 200 response.
func (s *Service) XKSGetHealthStatus(ctx context.Context, c Caller, p XKSHealthParams) (res *XKSHealthResult, err error) {
	defer s.finish(ctx, c, events.TypeXKSHealth, &err, func() (string, map[string]any) {
		data := map[string]any{"keyStore": truncate(p.KeyStore, 128)}
		p.Metadata.auditData(data)
		if res != nil {
			data["healthStatus"] = res.Status
		}
		return "", data
	}, func() { res = nil })
	if err := checkCaller(c); err != nil {
		return nil, err
	}
	if err := p.Metadata.validate(false); err != nil {
		return nil, err
	}
	if herr := s.healthRoundTrip(ctx); herr != nil {
		if errors.Is(herr, context.DeadlineExceeded) || errors.Is(herr, context.Canceled) {
			return nil, wrapError(CodeDependencyTimeout, herr, "the HSM health check timed out")
		}
		s.log.Warn("XKS health check failed", "err", herr)
		return &XKSHealthResult{Status: XKSHealthUnavailable}, nil
	}
	return &XKSHealthResult{Status: XKSHealthActive}, nil
}

func (s *Service) healthRoundTrip(ctx context.Context) error {
	blob, err := s.hsm.GenerateWrappedAESKey(ctx, s.root, 32)
	if err != nil {
		return err
	}
	h, err := s.hsm.UnwrapAESKey(ctx, s.root, blob)
	if err != nil {
		return err
	}
	defer func() { _ = s.hsm.DestroyKey(context.WithoutCancel(ctx), h) }()
	iv, err := newIV()
	if err != nil {
		return err
	}
	probe := []byte("keyflow xks health check")
	ct, err := s.hsm.EncryptGCM(ctx, h, iv, probe, nil)
	if err != nil {
		return err
	}
	pt, err := s.hsm.DecryptGCM(ctx, h, iv, ct, nil)
	if err != nil {
		return err
	}
	if string(pt) != string(probe) {
		return errors.New("the HSM round trip returned other bytes")
	}
	return nil
}

// XKSRejectParams describe a request the XKS adapter refused before it
// reached an operation.
type XKSRejectParams struct {
	KeyStore      string
	Operation     string // metadata, encrypt, decrypt, health, or "" if unknown
	ExternalKeyID string
	AccessKeyID   string // as the request claimed it; not a secret
	Metadata      XKSRequestMetadata
}

// XKSReject records a refused XKS request (bad signature, unknown path,
// throttled, malformed body, disabled key store) and returns the error to
// send back. The record names what was asked, never the body.
func (s *Service) XKSReject(ctx context.Context, c Caller, p XKSRejectParams, reason error) error {
	if !ValidTenant(c.Tenant) {
		c.Tenant = "-"
	}
	data := map[string]any{"keyStore": truncate(p.KeyStore, 128), "operation": p.Operation}
	switch p.Operation {
	case xksOperationHealth, xksOperationMetadata, xksOperationEncrypt, xksOperationDecrypt:
	default:
		data["operation"] = "unknown"
	}
	if p.ExternalKeyID != "" {
		data["externalKeyId"] = truncate(p.ExternalKeyID, 128)
	}
	if p.AccessKeyID != "" {
		data["accessKeyId"] = truncate(p.AccessKeyID, 64)
	}
	p.Metadata.auditData(data)
	if reason == nil {
		reason = newError(CodeValidation, "request refused")
	}
	return s.emit(ctx, c, events.TypeXKSRejected, "", data, reason)
}
