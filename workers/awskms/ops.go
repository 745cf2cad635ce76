package awskms

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// An opFunc answers one AWS operation: decode AWS's request, call keyflow's
// operation through the Invoker, encode AWS's reply.
type opFunc func(s *Server, ctx context.Context, c kms.Caller, body []byte) (any, error)

// operations are the AWS KMS operations keyflow serves.
var operations = map[string]opFunc{
	"CreateKey": (*Server).createKey, "DescribeKey": (*Server).describeKey, "ListKeys": (*Server).listKeys,
	"EnableKey": (*Server).enableKey, "DisableKey": (*Server).disableKey,
	"ScheduleKeyDeletion": (*Server).scheduleKeyDeletion, "CancelKeyDeletion": (*Server).cancelKeyDeletion,
	"Encrypt": (*Server).encrypt, "Decrypt": (*Server).decrypt, "ReEncrypt": (*Server).reEncrypt,
	"GenerateDataKey": (*Server).generateDataKey, "GenerateDataKeyWithoutPlaintext": (*Server).generateDataKeyWithoutPlaintext,
	"GenerateDataKeyPair": (*Server).generateDataKeyPair, "GenerateDataKeyPairWithoutPlaintext": (*Server).generateDataKeyPairWithoutPlaintext,
	"GenerateRandom": (*Server).generateRandom,
	"Sign":           (*Server).sign, "Verify": (*Server).verify, "GetPublicKey": (*Server).getPublicKey,
	"GenerateMac": (*Server).generateMac, "VerifyMac": (*Server).verifyMac,
	"EnableKeyRotation": (*Server).enableKeyRotation, "DisableKeyRotation": (*Server).disableKeyRotation,
	"GetKeyRotationStatus": (*Server).getKeyRotationStatus, "RotateKeyOnDemand": (*Server).rotateKeyOnDemand,
	"ListKeyRotations":       (*Server).listKeyRotations,
	"GetParametersForImport": (*Server).getParametersForImport, "ImportKeyMaterial": (*Server).importKeyMaterial,
	"DeleteImportedKeyMaterial": (*Server).deleteImportedKeyMaterial,
	"ListAliases":               (*Server).listAliases,
	"CreateAlias":               (*Server).createAlias, "UpdateAlias": (*Server).updateAlias, "DeleteAlias": (*Server).deleteAlias,
	"GetKeyPolicy": (*Server).getKeyPolicy, "PutKeyPolicy": (*Server).putKeyPolicy, "ListKeyPolicies": (*Server).listKeyPolicies,
	"ListGrants": (*Server).listGrants, "RetireGrant": (*Server).retireGrant, "RevokeGrant": (*Server).revokeGrant,
	"CreateGrant": (*Server).createGrant, "ListRetirableGrants": (*Server).listRetirableGrants,
	"TagResource": (*Server).tagResource, "UntagResource": (*Server).untagResource, "ListResourceTags": (*Server).listResourceTags,
	"UpdateKeyDescription": (*Server).updateKeyDescription,
}

// unsupported are the AWS KMS operations keyflow does not serve; they
// answer UnsupportedOperationException naming the operation (any other
// target is UnknownOperationException).
var unsupported = map[string]bool{}

func init() {
	for _, op := range []string{
		"ConnectCustomKeyStore", "CreateCustomKeyStore", "DeleteCustomKeyStore", "DescribeCustomKeyStores",
		"DisconnectCustomKeyStore", "UpdateCustomKeyStore",
		"DeriveSharedSecret",
	} {
		unsupported[op] = true
	}
}

// Operations lists the AWS operations served and those refused as
// unsupported, sorted (for docs and tests).
func Operations() (served, refused []string) {
	for op := range operations {
		served = append(served, op)
	}
	for op := range unsupported {
		refused = append(refused, op)
	}
	slices.Sort(served)
	slices.Sort(refused)
	return served, refused
}

// decodeAWS reads an AWS request. Unknown members are ignored, as AWS's
// own service does for members a newer SDK may send.
func decodeAWS(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return clientError("SerializationException", "the request body is not a JSON object of this operation's shape")
	}
	return nil
}

// call runs a keyflow operation with req as its body.
func (s *Server) call(ctx context.Context, c kms.Caller, op string, req any) (any, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, kms.ErrInternal
	}
	defer clear(b) // it may hold plaintext
	return s.inv.Invoke(ctx, c, op, b)
}

// callAs is call with the reply's type checked.
func callAs[T any](s *Server, ctx context.Context, c kms.Caller, op string, req any) (T, error) {
	var zero T
	out, err := s.call(ctx, c, op, req)
	if err != nil {
		return zero, err
	}
	t, ok := out.(T)
	if !ok {
		return zero, kms.ErrInternal
	}
	return t, nil
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func epochPtr(t *time.Time) *float64 {
	if t == nil || t.IsZero() {
		return nil
	}
	e := epoch(*t)
	return &e
}

// keyState maps keyflow's NIST SP 800-57 states (and the pending-deletion
// flag) to AWS's KeyState (docs/aws-api.md).
func keyState(m api.KeyMetadata) string {
	if m.PendingDeletion {
		return "PendingDeletion"
	}
	switch kms.KeyState(m.KeyState) {
	case kms.StateActive:
		return "Enabled"
	case kms.StatePendingImport:
		return "PendingImport"
	case kms.StateDestroyed, kms.StateDestroyedCompromised:
		return "Unavailable"
	default: // PRE_ACTIVE, SUSPENDED, DEACTIVATED, COMPROMISED
		return "Disabled"
	}
}

// KeyMetadata is AWS's KeyMetadata structure.
type KeyMetadata struct {
	AWSAccountID          string   `json:"AWSAccountId"`
	KeyID                 string   `json:"KeyId"`
	Arn                   string   `json:"Arn"`
	CreationDate          float64  `json:"CreationDate"`
	Enabled               bool     `json:"Enabled"`
	Description           string   `json:"Description"`
	KeyUsage              string   `json:"KeyUsage"`
	KeyState              string   `json:"KeyState"`
	DeletionDate          *float64 `json:"DeletionDate,omitempty"`
	ValidTo               *float64 `json:"ValidTo,omitempty"`
	Origin                string   `json:"Origin"`
	ExpirationModel       string   `json:"ExpirationModel,omitempty"`
	KeyManager            string   `json:"KeyManager"`
	CustomerMasterKeySpec string   `json:"CustomerMasterKeySpec"`
	KeySpec               string   `json:"KeySpec"`
	EncryptionAlgorithms  []string `json:"EncryptionAlgorithms,omitempty"`
	SigningAlgorithms     []string `json:"SigningAlgorithms,omitempty"`
	MacAlgorithms         []string `json:"MacAlgorithms,omitempty"`
	MultiRegion           bool     `json:"MultiRegion"`
	// MultiRegionConfiguration describes a multi-Region key (multiregion.go).
	MultiRegionConfiguration *MultiRegionConfiguration `json:"MultiRegionConfiguration,omitempty"`
}

func (s *Server) metadata(c kms.Caller, m api.KeyMetadata) KeyMetadata {
	out := KeyMetadata{
		AWSAccountID: AccountID(c.Tenant), KeyID: m.KeyID, Arn: s.keyARN(c.Tenant, m.KeyID),
		CreationDate: epoch(m.CreationDate), Description: m.Description, KeyUsage: m.KeyUsage,
		KeyState: keyState(m), DeletionDate: epochPtr(m.DeletionDate), ValidTo: epochPtr(m.ValidTo),
		Origin: m.Origin, ExpirationModel: m.ExpirationModel, KeyManager: "CUSTOMER",
		CustomerMasterKeySpec: m.KeySpec, KeySpec: m.KeySpec,
	}
	out.Enabled = out.KeyState == "Enabled"
	out.MultiRegion, out.MultiRegionConfiguration = m.MultiRegion, s.multiRegionConfig(c, m)
	if out.Origin == "" {
		out.Origin = "AWS_KMS"
	}
	enc, sign, mac := kms.SpecAlgorithms(kms.KeySpec(m.KeySpec))
	switch m.KeyUsage {
	case string(kms.UsageEncryptDecrypt):
		for _, a := range enc {
			out.EncryptionAlgorithms = append(out.EncryptionAlgorithms, string(a))
		}
		if len(out.EncryptionAlgorithms) == 0 {
			out.EncryptionAlgorithms = []string{string(kms.EncSymmetricDefault)}
		}
	case string(kms.UsageSignVerify):
		for _, a := range sign {
			out.SigningAlgorithms = append(out.SigningAlgorithms, string(a))
		}
	case string(kms.UsageGenerateVerifyMAC):
		for _, a := range mac {
			out.MacAlgorithms = append(out.MacAlgorithms, string(a))
		}
	}
	return out
}

type keyIDReq struct {
	KeyID       string   `json:"KeyId"`
	GrantTokens []string `json:"GrantTokens"`
}

// ref reads and translates the KeyId member.
func (s *Server) ref(c kms.Caller, keyID string) (string, error) {
	if keyID == "" {
		return "", clientError("ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
	}
	return s.keyRef(c, keyID)
}

// keyIDOf reads a request whose only member of note is KeyId, and
// translates it.
func (s *Server) keyIDOf(c kms.Caller, body []byte) (string, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return "", err
	}
	return s.ref(c, req.KeyID)
}

// encAlg is the EncryptionAlgorithm a reply names: the request's, by
// default SYMMETRIC_DEFAULT.
func encAlg(a string) string {
	if a == "" {
		return string(kms.EncSymmetricDefault)
	}
	return a
}

type tag struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

func (s *Server) createKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		Description           string `json:"Description"`
		KeyUsage              string `json:"KeyUsage"`
		KeySpec               string `json:"KeySpec"`
		CustomerMasterKeySpec string `json:"CustomerMasterKeySpec"`
		Origin                string `json:"Origin"`
		Policy                string `json:"Policy"`
		Tags                  []tag  `json:"Tags"`
		MultiRegion           bool   `json:"MultiRegion"`
		CustomKeyStoreID      string `json:"CustomKeyStoreId"`
		XksKeyID              string `json:"XksKeyId"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	switch {
	case req.CustomKeyStoreID != "" || req.XksKeyID != "" || req.Origin == "AWS_CLOUDHSM" || req.Origin == "EXTERNAL_KEY_STORE":
		return nil, clientError("UnsupportedOperationException", "keyflow has no custom key stores: every key is in keyflow's HSM")
	}
	spec := req.KeySpec
	if spec == "" {
		spec = req.CustomerMasterKeySpec
	}
	m, err := callAs[api.KeyMetadata](s, ctx, c, api.OpKeyCreate, api.CreateKeyRequest{
		Description: req.Description, KeySpec: spec, KeyUsage: req.KeyUsage, Origin: req.Origin,
		Tags: tagsToAPI(req.Tags), MultiRegion: req.MultiRegion, // multiregion.go
	})
	if err != nil {
		return nil, err
	}
	if req.Policy != "" {
		if _, err := s.call(ctx, c, api.OpKeySetPolicy, api.SetKeyPolicyRequest{KeyID: m.KeyID, Policy: json.RawMessage(req.Policy)}); err != nil {
			return nil, err
		}
	}
	return map[string]any{"KeyMetadata": s.metadata(c, m)}, nil
}

func (s *Server) describe(ctx context.Context, c kms.Caller, keyID string) (api.KeyMetadata, error) {
	ref, err := s.ref(c, keyID)
	if err != nil {
		return api.KeyMetadata{}, err
	}
	return callAs[api.KeyMetadata](s, ctx, c, api.OpKeyDescribe, api.KeyRequest{KeyID: ref})
}

func (s *Server) describeKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	m, err := s.describe(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyMetadata": s.metadata(c, m)}, nil
}

type pageReq struct {
	Limit  int    `json:"Limit"`
	Marker string `json:"Marker"`
}

// page cuts a sorted list as AWS paginates: Limit 1 to 1000 (default
// 100), Marker the opaque position returned as NextMarker.
func page[T any](req pageReq, all []T) ([]T, string, bool, error) {
	limit := req.Limit
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		return nil, "", false, clientError("ValidationException", "Limit must be between 1 and 1000")
	}
	start := 0
	if req.Marker != "" {
		n, err := strconv.Atoi(req.Marker)
		if err != nil || n < 0 || n > len(all) {
			return nil, "", false, clientError("InvalidMarkerException", "the Marker is not one this API returned")
		}
		start = n
	}
	end := min(start+limit, len(all))
	if end < len(all) {
		return all[start:end], strconv.Itoa(end), true, nil
	}
	return all[start:end], "", false, nil
}

func (s *Server) listKeys(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req pageReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	r, err := callAs[api.ListKeysReply](s, ctx, c, api.OpKeyList, struct{}{})
	if err != nil {
		return nil, err
	}
	keys := r.Keys
	slices.SortFunc(keys, func(a, b api.KeyMetadata) int {
		if d := a.CreationDate.Compare(b.CreationDate); d != 0 {
			return d
		}
		return compareStrings(a.KeyID, b.KeyID)
	})
	pg, next, more, err := page(req, keys)
	if err != nil {
		return nil, err
	}
	type entry struct {
		KeyID  string `json:"KeyId"`
		KeyArn string `json:"KeyArn"`
	}
	out := struct {
		Keys       []entry `json:"Keys"`
		NextMarker string  `json:"NextMarker,omitempty"`
		Truncated  bool    `json:"Truncated"`
	}{Keys: []entry{}, NextMarker: next, Truncated: more}
	for _, k := range pg {
		out.Keys = append(out.Keys, entry{k.KeyID, s.keyARN(c.Tenant, k.KeyID)})
	}
	return out, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *Server) listAliases(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		pageReq
		KeyID string `json:"KeyId"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	var keys []api.KeyMetadata
	if req.KeyID != "" {
		m, err := s.describe(ctx, c, req.KeyID)
		if err != nil {
			return nil, err
		}
		keys = []api.KeyMetadata{m}
	} else {
		r, err := callAs[api.ListKeysReply](s, ctx, c, api.OpKeyList, struct{}{})
		if err != nil {
			return nil, err
		}
		keys = r.Keys
	}
	type entry struct {
		AliasName    string  `json:"AliasName"`
		AliasArn     string  `json:"AliasArn"`
		TargetKeyID  string  `json:"TargetKeyId"`
		CreationDate float64 `json:"CreationDate"`
	}
	var all []entry
	for _, k := range keys {
		if k.Alias != "" {
			all = append(all, entry{aliasName(k.Alias), s.aliasARN(c.Tenant, k.Alias), k.KeyID, epoch(k.CreationDate)})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return compareStrings(a.AliasName, b.AliasName) })
	pg, next, more, err := page(req.pageReq, all)
	if err != nil {
		return nil, err
	}
	if pg == nil {
		pg = []entry{}
	}
	return map[string]any{"Aliases": pg, "NextMarker": next, "Truncated": more}, nil
}

func (s *Server) setState(ctx context.Context, c kms.Caller, body []byte, state kms.KeyState) (any, error) {
	ref, err := s.keyIDOf(c, body)
	if err != nil {
		return nil, err
	}
	if _, err := s.call(ctx, c, api.OpKeySetState, api.SetKeyStateRequest{KeyID: ref, State: string(state)}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) enableKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.setState(ctx, c, body, kms.StateActive)
}

func (s *Server) disableKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.setState(ctx, c, body, kms.StateSuspended)
}

func (s *Server) scheduleKeyDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID               string `json:"KeyId"`
		PendingWindowInDays int    `json:"PendingWindowInDays"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if id, region, ok := s.otherRegionKey(c, req.KeyID); ok {
		return s.replicaDeletion(ctx, c, id, region, req.PendingWindowInDays, false)
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.ScheduleDeletionReply](s, ctx, c, api.OpKeyScheduleDeletion, api.ScheduleDeletionRequest{KeyID: ref, PendingWindowInDays: req.PendingWindowInDays})
	if err != nil {
		return nil, err
	}
	window := req.PendingWindowInDays
	if window == 0 {
		window = 30
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyID), "DeletionDate": epoch(r.DeletionDate),
		"KeyState": "PendingDeletion", "PendingWindowInDays": window}, nil
}

func (s *Server) cancelKeyDeletion(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if id, region, ok := s.otherRegionKey(c, req.KeyID); ok {
		return s.replicaDeletion(ctx, c, id, region, 0, true)
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	m, err := callAs[api.KeyMetadata](s, ctx, c, api.OpKeyCancelDeletion, api.KeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, m.KeyID)}, nil
}

type encryptReq struct {
	KeyID               string            `json:"KeyId"`
	Plaintext           []byte            `json:"Plaintext"`
	EncryptionContext   map[string]string `json:"EncryptionContext"`
	EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
	GrantTokens         []string          `json:"GrantTokens"`
	DryRun              bool              `json:"DryRun"`
}

func dryRun(dry bool) error {
	if dry {
		return clientError("UnsupportedOperationException", "keyflow does not support DryRun")
	}
	return nil
}

func (s *Server) encrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req encryptReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	defer clear(req.Plaintext)
	if err := dryRun(req.DryRun); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.EncryptReply](s, ctx, c, api.OpEncrypt, api.EncryptRequest{KeyID: ref, Plaintext: req.Plaintext,
		EncryptionContext: req.EncryptionContext, EncryptionAlgorithm: req.EncryptionAlgorithm})
	if err != nil {
		return nil, err
	}
	return encryptReply{CiphertextBlob: r.CiphertextBlob, KeyID: s.keyARN(c.Tenant, r.KeyID), EncryptionAlgorithm: encAlg(req.EncryptionAlgorithm)}, nil
}

func (s *Server) decrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		CiphertextBlob      []byte            `json:"CiphertextBlob"`
		KeyID               string            `json:"KeyId"`
		EncryptionContext   map[string]string `json:"EncryptionContext"`
		EncryptionAlgorithm string            `json:"EncryptionAlgorithm"`
		GrantTokens         []string          `json:"GrantTokens"`
		DryRun              bool              `json:"DryRun"`
		Recipient           json.RawMessage   `json:"Recipient"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := dryRun(req.DryRun); err != nil {
		return nil, err
	}
	if len(req.Recipient) > 0 {
		return nil, clientError("UnsupportedOperationException", "keyflow does not support Recipient (Nitro Enclaves attestation)")
	}
	ref := ""
	if req.KeyID != "" {
		var err error
		if ref, err = s.keyRef(c, req.KeyID); err != nil {
			return nil, err
		}
	}
	r, err := callAs[api.DecryptReply](s, ctx, c, api.OpDecrypt, api.DecryptRequest{CiphertextBlob: req.CiphertextBlob, KeyID: ref,
		EncryptionContext: req.EncryptionContext, EncryptionAlgorithm: req.EncryptionAlgorithm})
	if err != nil {
		return nil, err
	}
	return decryptReply{Plaintext: r.Plaintext, KeyID: s.keyARN(c.Tenant, r.KeyID), EncryptionAlgorithm: encAlg(req.EncryptionAlgorithm)}, nil
}

func (s *Server) reEncrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		CiphertextBlob                 []byte            `json:"CiphertextBlob"`
		SourceEncryptionContext        map[string]string `json:"SourceEncryptionContext"`
		SourceKeyID                    string            `json:"SourceKeyId"`
		DestinationKeyID               string            `json:"DestinationKeyId"`
		DestinationEncryptionContext   map[string]string `json:"DestinationEncryptionContext"`
		SourceEncryptionAlgorithm      string            `json:"SourceEncryptionAlgorithm"`
		DestinationEncryptionAlgorithm string            `json:"DestinationEncryptionAlgorithm"`
		GrantTokens                    []string          `json:"GrantTokens"`
		DryRun                         bool              `json:"DryRun"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := dryRun(req.DryRun); err != nil {
		return nil, err
	}
	for _, a := range []string{req.SourceEncryptionAlgorithm, req.DestinationEncryptionAlgorithm} {
		if a != "" && a != string(kms.EncSymmetricDefault) {
			return nil, clientError("UnsupportedOperationException", "keyflow re-encrypts SYMMETRIC_DEFAULT ciphertexts only")
		}
	}
	src := ""
	var err error
	if req.SourceKeyID != "" {
		if src, err = s.keyRef(c, req.SourceKeyID); err != nil {
			return nil, err
		}
	}
	dst, err := s.ref(c, req.DestinationKeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.ReEncryptReply](s, ctx, c, api.OpReEncrypt, api.ReEncryptRequest{CiphertextBlob: req.CiphertextBlob,
		SourceEncryptionContext: req.SourceEncryptionContext, SourceKeyID: src, DestinationKeyID: dst, DestinationEncryptionContext: req.DestinationEncryptionContext})
	if err != nil {
		return nil, err
	}
	return map[string]any{"CiphertextBlob": r.CiphertextBlob, "SourceKeyId": s.keyARN(c.Tenant, r.SourceKeyID), "KeyId": s.keyARN(c.Tenant, r.KeyID),
		"SourceEncryptionAlgorithm": kms.EncSymmetricDefault, "DestinationEncryptionAlgorithm": kms.EncSymmetricDefault}, nil
}

type dataKeyReq struct {
	KeyID             string            `json:"KeyId"`
	EncryptionContext map[string]string `json:"EncryptionContext"`
	NumberOfBytes     int               `json:"NumberOfBytes"`
	KeySpec           string            `json:"KeySpec"`
	GrantTokens       []string          `json:"GrantTokens"`
	DryRun            bool              `json:"DryRun"`
}

func (s *Server) dataKey(ctx context.Context, c kms.Caller, body []byte, without bool) (any, error) {
	var req dataKeyReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := dryRun(req.DryRun); err != nil {
		return nil, err
	}
	n := req.NumberOfBytes
	switch {
	case n != 0 && req.KeySpec != "":
		return nil, clientError("ValidationException", "give KeySpec or NumberOfBytes, not both")
	case req.KeySpec == "AES_256":
		n = 32
	case req.KeySpec == "AES_128":
		n = 16
	case req.KeySpec != "":
		return nil, clientError("ValidationException", "KeySpec must be AES_256 or AES_128")
	case n == 0:
		return nil, clientError("ValidationException", "give KeySpec or NumberOfBytes")
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.DataKeyReply](s, ctx, c, api.OpDataKey, api.DataKeyRequest{KeyID: ref, NumberOfBytes: n, EncryptionContext: req.EncryptionContext, WithoutPlaintext: without})
	if err != nil {
		return nil, err
	}
	out := dataKeyReply{CiphertextBlob: r.CiphertextBlob, KeyID: s.keyARN(c.Tenant, r.KeyID)}
	if !without {
		out.Plaintext = r.Plaintext
	}
	return out, nil
}

func (s *Server) generateDataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.dataKey(ctx, c, body, false)
}

func (s *Server) generateDataKeyWithoutPlaintext(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.dataKey(ctx, c, body, true)
}

func (s *Server) dataKeyPair(ctx context.Context, c kms.Caller, body []byte, without bool) (any, error) {
	var req struct {
		KeyID             string            `json:"KeyId"`
		KeyPairSpec       string            `json:"KeyPairSpec"`
		EncryptionContext map[string]string `json:"EncryptionContext"`
		GrantTokens       []string          `json:"GrantTokens"`
		DryRun            bool              `json:"DryRun"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := dryRun(req.DryRun); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.DataKeyPairReply](s, ctx, c, api.OpDataKeyPair, api.DataKeyPairRequest{KeyID: ref, KeyPairSpec: req.KeyPairSpec, EncryptionContext: req.EncryptionContext, WithoutPlaintext: without})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"PrivateKeyCiphertextBlob": r.PrivateKeyCiphertextBlob, "PublicKey": r.PublicKey,
		"KeyId": s.keyARN(c.Tenant, r.KeyID), "KeyPairSpec": r.KeyPairSpec}
	if !without {
		out["PrivateKeyPlaintext"] = r.PrivateKeyPlaintext
	}
	return out, nil
}

func (s *Server) generateDataKeyPair(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.dataKeyPair(ctx, c, body, false)
}

func (s *Server) generateDataKeyPairWithoutPlaintext(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.dataKeyPair(ctx, c, body, true)
}

func (s *Server) generateRandom(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		NumberOfBytes    int             `json:"NumberOfBytes"`
		CustomKeyStoreID string          `json:"CustomKeyStoreId"`
		Recipient        json.RawMessage `json:"Recipient"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if req.CustomKeyStoreID != "" || len(req.Recipient) > 0 {
		return nil, clientError("UnsupportedOperationException", "keyflow does not support CustomKeyStoreId or Recipient")
	}
	r, err := callAs[api.RandomReply](s, ctx, c, api.OpRandom, api.RandomRequest{NumberOfBytes: req.NumberOfBytes})
	if err != nil {
		return nil, err
	}
	return map[string]any{"Plaintext": r.Plaintext}, nil
}

type signReq struct {
	KeyID            string   `json:"KeyId"`
	Message          []byte   `json:"Message"`
	MessageType      string   `json:"MessageType"`
	SigningAlgorithm string   `json:"SigningAlgorithm"`
	Signature        []byte   `json:"Signature"`
	GrantTokens      []string `json:"GrantTokens"`
	DryRun           bool     `json:"DryRun"`
}

func (s *Server) readSign(c kms.Caller, body []byte) (signReq, string, error) {
	var req signReq
	if err := decodeAWS(body, &req); err != nil {
		return req, "", err
	}
	if err := dryRun(req.DryRun); err != nil {
		return req, "", err
	}
	if req.MessageType == "EXTERNAL_MU" {
		return req, "", clientError("UnsupportedOperationException", "keyflow does not support MessageType EXTERNAL_MU")
	}
	ref, err := s.ref(c, req.KeyID)
	return req, ref, err
}

func (s *Server) sign(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	req, ref, err := s.readSign(c, body)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.SignReply](s, ctx, c, api.OpSign, api.SignRequest{KeyID: ref, Message: req.Message, MessageType: req.MessageType, SigningAlgorithm: req.SigningAlgorithm})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyID), "Signature": r.Signature, "SigningAlgorithm": r.SigningAlgorithm}, nil
}

func (s *Server) verify(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	req, ref, err := s.readSign(c, body)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.VerifyReply](s, ctx, c, api.OpVerify, api.VerifyRequest{KeyID: ref, Message: req.Message, MessageType: req.MessageType,
		SigningAlgorithm: req.SigningAlgorithm, Signature: req.Signature})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyID), "SignatureValid": r.SignatureValid, "SigningAlgorithm": r.SigningAlgorithm}, nil
}

func (s *Server) getPublicKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	ref, err := s.keyIDOf(c, body)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.PublicKeyReply](s, ctx, c, api.OpGetPublicKey, api.PublicKeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	out := map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyID), "PublicKey": r.PublicKey, "KeySpec": r.KeySpec,
		"CustomerMasterKeySpec": r.KeySpec, "KeyUsage": r.KeyUsage}
	if len(r.SigningAlgorithms) > 0 {
		out["SigningAlgorithms"] = r.SigningAlgorithms
	}
	if len(r.EncryptionAlgorithms) > 0 {
		out["EncryptionAlgorithms"] = r.EncryptionAlgorithms
	}
	return out, nil
}

type macReq struct {
	KeyID        string   `json:"KeyId"`
	Message      []byte   `json:"Message"`
	MacAlgorithm string   `json:"MacAlgorithm"`
	Mac          []byte   `json:"Mac"`
	GrantTokens  []string `json:"GrantTokens"`
	DryRun       bool     `json:"DryRun"`
}

func (s *Server) mac(ctx context.Context, c kms.Caller, body []byte, op string) (api.MacReply, error) {
	var req macReq
	if err := decodeAWS(body, &req); err != nil {
		return api.MacReply{}, err
	}
	if err := dryRun(req.DryRun); err != nil {
		return api.MacReply{}, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return api.MacReply{}, err
	}
	return callAs[api.MacReply](s, ctx, c, op, api.MacRequest{KeyID: ref, Message: req.Message, MacAlgorithm: req.MacAlgorithm, Mac: req.Mac})
}

func (s *Server) generateMac(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	r, err := s.mac(ctx, c, body, api.OpGenerateMac)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Mac": r.Mac, "MacAlgorithm": r.MacAlgorithm, "KeyId": s.keyARN(c.Tenant, r.KeyID)}, nil
}

func (s *Server) verifyMac(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	r, err := s.mac(ctx, c, body, api.OpVerifyMac)
	if err != nil {
		return nil, err
	}
	return map[string]any{"MacValid": r.MacValid, "MacAlgorithm": r.MacAlgorithm, "KeyId": s.keyARN(c.Tenant, r.KeyID)}, nil
}

func (s *Server) setRotation(ctx context.Context, c kms.Caller, keyID string, days int) error {
	ref, err := s.ref(c, keyID)
	if err != nil {
		return err
	}
	_, err = s.call(ctx, c, api.OpKeySetRotation, api.SetRotationRequest{KeyID: ref, RotationPeriodInDays: days})
	return err
}

func (s *Server) enableKeyRotation(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID                string `json:"KeyId"`
		RotationPeriodInDays int    `json:"RotationPeriodInDays"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	days := req.RotationPeriodInDays
	if days == 0 {
		days = 365 // AWS's default
	}
	if days < 90 || days > 2560 {
		return nil, clientError("ValidationException", "RotationPeriodInDays must be between 90 and 2560")
	}
	return struct{}{}, s.setRotation(ctx, c, req.KeyID, days)
}

func (s *Server) disableKeyRotation(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	return struct{}{}, s.setRotation(ctx, c, req.KeyID, 0)
}

func (s *Server) getKeyRotationStatus(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	m, err := s.describe(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"KeyId": m.KeyID, "KeyRotationEnabled": m.RotationPeriodInDays > 0}
	if m.RotationPeriodInDays > 0 {
		out["RotationPeriodInDays"] = m.RotationPeriodInDays
		base := m.CreationDate
		if m.LastRotationDate != nil {
			base = *m.LastRotationDate
		}
		out["NextRotationDate"] = epoch(base.Add(time.Duration(m.RotationPeriodInDays) * kms.Day))
	}
	return out, nil
}

func (s *Server) rotateKeyOnDemand(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	ref, err := s.keyIDOf(c, body)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.RotateKeyReply](s, ctx, c, api.OpKeyRotate, api.RotateKeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": r.KeyID}, nil
}

func (s *Server) listKeyRotations(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		pageReq
		KeyID string `json:"KeyId"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	m, err := s.describe(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	type rotation struct {
		KeyID        string  `json:"KeyId"`
		RotationDate float64 `json:"RotationDate"`
		RotationType string  `json:"RotationType"`
	}
	var all []rotation
	for _, v := range m.Versions {
		if v.Version > 1 { // version 1 is the key's creation, not a rotation
			all = append(all, rotation{m.KeyID, epoch(v.CreationDate), "ON_DEMAND"})
		}
	}
	pg, next, more, err := page(req.pageReq, all)
	if err != nil {
		return nil, err
	}
	if pg == nil {
		pg = []rotation{}
	}
	return map[string]any{"Rotations": pg, "NextMarker": next, "Truncated": more}, nil
}

func (s *Server) getParametersForImport(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID             string `json:"KeyId"`
		WrappingAlgorithm string `json:"WrappingAlgorithm"`
		WrappingKeySpec   string `json:"WrappingKeySpec"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.ImportParamsReply](s, ctx, c, api.OpKeyImportParams, api.ImportParamsRequest{KeyID: ref, WrappingAlgorithm: req.WrappingAlgorithm, WrappingKeySpec: req.WrappingKeySpec})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyID), "ImportToken": r.ImportToken, "PublicKey": r.PublicKey, "ParametersValidTo": epoch(r.ParametersValidTo)}, nil
}

func (s *Server) importKeyMaterial(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID                string   `json:"KeyId"`
		ImportToken          []byte   `json:"ImportToken"`
		EncryptedKeyMaterial []byte   `json:"EncryptedKeyMaterial"`
		ValidTo              *float64 `json:"ValidTo"`
		ExpirationModel      string   `json:"ExpirationModel"`
		ImportType           string   `json:"ImportType"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	in := api.ImportRequest{KeyID: ref, EncryptedKeyMaterial: req.EncryptedKeyMaterial, ImportToken: req.ImportToken}
	switch req.ExpirationModel {
	case "", "KEY_MATERIAL_DOES_NOT_EXPIRE":
		if req.ValidTo != nil && req.ExpirationModel != "" {
			return nil, clientError("ValidationException", "ValidTo needs ExpirationModel KEY_MATERIAL_EXPIRES")
		}
	case "KEY_MATERIAL_EXPIRES":
		if req.ValidTo == nil {
			return nil, clientError("ValidationException", "KEY_MATERIAL_EXPIRES needs ValidTo")
		}
	default:
		return nil, clientError("ValidationException", "unknown ExpirationModel")
	}
	if req.ValidTo != nil {
		t := time.Unix(0, int64(*req.ValidTo*1e9)).UTC()
		in.ValidTo = &t
	}
	r, err := callAs[api.ImportReply](s, ctx, c, api.OpKeyImport, in)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, r.KeyMetadata.KeyID)}, nil
}

func (s *Server) deleteImportedKeyMaterial(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	ref, err := s.keyIDOf(c, body)
	if err != nil {
		return nil, err
	}
	m, err := callAs[api.KeyMetadata](s, ctx, c, api.OpKeyDeleteImport, api.KeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": s.keyARN(c.Tenant, m.KeyID)}, nil
}

func policyName(name string) error {
	if name != "" && name != "default" {
		return clientError("NotFoundException", "a key has one policy, named default")
	}
	return nil
}

func (s *Server) getKeyPolicy(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID      string `json:"KeyId"`
		PolicyName string `json:"PolicyName"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := policyName(req.PolicyName); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.KeyPolicyReply](s, ctx, c, api.OpKeyGetPolicy, api.KeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	doc := string(r.Policy)
	if r.Default {
		doc = `{"Version":"keyflow-default","Statement":[]}`
	}
	return map[string]any{"Policy": doc, "PolicyName": "default"}, nil
}

func (s *Server) putKeyPolicy(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		KeyID      string `json:"KeyId"`
		PolicyName string `json:"PolicyName"`
		Policy     string `json:"Policy"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if err := policyName(req.PolicyName); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	if !json.Valid([]byte(req.Policy)) {
		return nil, clientError("MalformedPolicyDocumentException", "the policy is not JSON")
	}
	_, err = s.call(ctx, c, api.OpKeySetPolicy, api.SetKeyPolicyRequest{KeyID: ref, Policy: json.RawMessage(req.Policy)})
	if kms.CodeOf(err) == kms.CodeValidation { // recorded by the domain already
		return nil, &awsError{status: 400, name: "MalformedPolicyDocumentException", msg: kms.PublicMessage(err), audited: true}
	}
	return struct{}{}, err
}

func (s *Server) listKeyPolicies(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req keyIDReq
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if _, err := s.describe(ctx, c, req.KeyID); err != nil {
		return nil, err
	}
	return map[string]any{"PolicyNames": []string{"default"}, "Truncated": false}, nil
}

func (s *Server) listGrants(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct {
		pageReq
		KeyID string `json:"KeyId"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	r, err := callAs[api.ListGrantsReply](s, ctx, c, api.OpGrantList, api.KeyRequest{KeyID: ref})
	if err != nil {
		return nil, err
	}
	return s.grantPage(c, req.pageReq, r.Grants)
}

// grantPage is one page of grants as AWS's ListGrants and
// ListRetirableGrants reply.
func (s *Server) grantPage(c kms.Caller, req pageReq, grants []api.Grant) (any, error) {
	type grant struct {
		KeyID             string   `json:"KeyId"`
		GrantID           string   `json:"GrantId"`
		GranteePrincipal  string   `json:"GranteePrincipal"`
		RetiringPrincipal string   `json:"RetiringPrincipal,omitempty"`
		IssuingAccount    string   `json:"IssuingAccount"`
		Operations        []string `json:"Operations"`
		CreationDate      float64  `json:"CreationDate"`
	}
	all := make([]grant, 0, len(grants))
	for _, g := range grants {
		all = append(all, grant{s.keyARN(c.Tenant, g.KeyID), g.GrantID, g.Grantee, g.RetiringPrincipal, AccountID(c.Tenant), g.Operations, epoch(g.CreationDate)})
	}
	pg, next, more, err := page(req, all)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Grants": pg, "NextMarker": next, "Truncated": more}, nil
}

func (s *Server) grantOp(ctx context.Context, c kms.Caller, body []byte, op string) (any, error) {
	var req struct {
		KeyID      string `json:"KeyId"`
		GrantID    string `json:"GrantId"`
		GrantToken string `json:"GrantToken"`
	}
	if err := decodeAWS(body, &req); err != nil {
		return nil, err
	}
	if req.GrantID == "" {
		return nil, clientError("ValidationException", "keyflow needs KeyId and GrantId (grant tokens are accepted but do not name grants)")
	}
	ref, err := s.ref(c, req.KeyID)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, op, api.GrantRequest{KeyID: ref, GrantID: req.GrantID})
	return struct{}{}, err
}

func (s *Server) retireGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.grantOp(ctx, c, body, api.OpGrantRetire)
}

func (s *Server) revokeGrant(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.grantOp(ctx, c, body, api.OpGrantRevoke)
}

type aliasReq struct {
	AliasName   string `json:"AliasName"`
	TargetKeyID string `json:"TargetKeyId"`
}

// readAlias reads AliasName (alias/NAME; alias/aws/ is AWS's own and
// reserved) and, with target, TargetKeyId.
func (s *Server) readAlias(c kms.Caller, body []byte, target bool) (aliasReq, error) {
	var req aliasReq
	if err := decodeAWS(body, &req); err != nil {
		return req, err
	}
	switch {
	case !strings.HasPrefix(req.AliasName, "alias/"):
		return req, clientError("ValidationException", "AliasName must begin with alias/")
	case strings.HasPrefix(req.AliasName, "alias/aws/"):
		return req, clientError("NotAuthorizedException", "alias/aws/ is reserved for AWS managed keys")
	}
	if target {
		ref, err := s.ref(c, req.TargetKeyID)
		if err != nil {
			return req, err
		}
		req.TargetKeyID = ref
	}
	return req, nil
}

func (s *Server) setAlias(ctx context.Context, c kms.Caller, body []byte, create bool) (any, error) {
	req, err := s.readAlias(c, body, true)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, api.OpKeySetAlias, api.SetAliasRequest{Alias: req.AliasName, KeyID: req.TargetKeyID, Create: create})
	return struct{}{}, err
}

func (s *Server) createAlias(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.setAlias(ctx, c, body, true)
}

func (s *Server) updateAlias(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.setAlias(ctx, c, body, false)
}

func (s *Server) deleteAlias(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	req, err := s.readAlias(c, body, false)
	if err != nil {
		return nil, err
	}
	_, err = s.call(ctx, c, api.OpKeyDeleteAlias, api.AliasRequest{Alias: req.AliasName})
	return struct{}{}, err
}
