package rpc

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
)

// rejectWith records a refused request (malformed body and the like) and
// returns the error for the reply.
func (s *Server) rejectWith(ctx context.Context, c kms.Caller, op string, err error) error {
	return s.cfg.KMS.Reject(ctx, c, op, err)
}

func (s *Server) encrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.EncryptRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpEncrypt, err)
	}
	defer clear(req.Plaintext)
	res, err := s.cfg.KMS.Encrypt(ctx, c, kms.EncryptParams{KeyRef: req.KeyID, Plaintext: req.Plaintext, Context: req.EncryptionContext, Algorithm: kms.EncryptionAlgorithm(req.EncryptionAlgorithm)})
	if err != nil {
		return nil, err
	}
	return api.EncryptReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, CiphertextBlob: res.Ciphertext}, nil
}

func (s *Server) decrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.DecryptRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDecrypt, err)
	}
	res, err := s.cfg.KMS.Decrypt(ctx, c, kms.DecryptParams{KeyRef: req.KeyID, Ciphertext: req.CiphertextBlob, Context: req.EncryptionContext, Algorithm: kms.EncryptionAlgorithm(req.EncryptionAlgorithm),
		AllowCompromised: req.AllowCompromised})
	if err != nil {
		return nil, err
	}
	return api.DecryptReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Plaintext: res.Plaintext}, nil
}

func (s *Server) dataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.DataKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKey, err)
	}
	res, err := s.cfg.KMS.GenerateDataKey(ctx, c, kms.GenerateDataKeyParams{KeyRef: req.KeyID, NumberOfBytes: req.NumberOfBytes, Context: req.EncryptionContext})
	if err != nil {
		return nil, err
	}
	if req.WithoutPlaintext {
		clear(res.Plaintext)
		res.Plaintext = nil
	}
	return api.DataKeyReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Plaintext: res.Plaintext, CiphertextBlob: res.CiphertextBlob}, nil
}

func (s *Server) createKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CreateKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyCreate, err)
	}
	p := kms.CreateKeyParams{
		Alias: req.Alias, Description: req.Description,
		Spec: kms.KeySpec(req.KeySpec), Usage: kms.KeyUsage(req.KeyUsage), Origin: kms.Origin(req.Origin),
		Tags: tagsFromWire(req.Tags),
	}
	createLifecycle(&p, req)
	p.MultiRegion, p.Exportable = req.MultiRegion, req.Exportable
	k, err := s.cfg.KMS.CreateKey(ctx, c, p)
	if err != nil {
		return nil, err
	}
	if err := s.keyChanged(ctx, c, k); err != nil {
		return nil, err
	}
	m := Metadata(k)
	if w := s.cfg.KMS.KeySpecWarning(ctx, c.Tenant, k.Spec); w != "" {
		m.Warnings = []string{w}
	}
	return m, nil
}

func (s *Server) describeKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.KeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyDescribe, err)
	}
	k, err := s.cfg.KMS.DescribeKey(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	m := Metadata(k)
	s.cloudMetadata(ctx, c, &m)
	return m, nil
}

func (s *Server) listKeys(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyList, err)
	}
	keys, err := s.cfg.KMS.ListKeys(ctx, c)
	if err != nil {
		return nil, err
	}
	out := api.ListKeysReply{Keys: make([]api.KeyMetadata, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, Metadata(k))
	}
	return out, nil
}

func (s *Server) rotateKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RotateKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyRotate, err)
	}
	if s.cfg.Rotator == nil {
		return nil, s.rejectWith(ctx, c, api.OpKeyRotate, &kms.Error{Code: kms.CodeInternal, Message: "rotation is not available on this worker"})
	}
	keyID, err := s.cfg.KMS.RequestRotation(ctx, c, req.KeyID)
	if err != nil {
		return nil, err
	}
	if err := s.approvalGate(ctx, c, kms.ApprovalRotate, keyID); err != nil {
		return nil, err
	}
	res, err := s.runRotation(ctx, c, keyID, req.Rewrap)
	if errors.Is(err, ErrRotationNotStarted) {
		return nil, s.cfg.KMS.RefuseRotation(ctx, c, keyID, err)
	}
	if err != nil {
		// The workflow ran and recorded its own outcome.
		return nil, err
	}
	if !res.Running {
		s.rotated(ctx, c, keyID)
	}
	return rotateReply(res), nil
}

func (s *Server) auditTail(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.AuditTailRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAuditTail, err)
	}
	if s.cfg.JS == nil {
		return nil, &kms.Error{Code: kms.CodeInternal, Message: "audit reading is not available on this worker"}
	}
	// A principal reads its own tenant's trail only (the auditor role is
	// checked at dispatch, kms.Authorize).
	if req.Tenant != "" && req.Tenant != c.Tenant {
		return nil, s.rejectWith(ctx, c, api.OpAuditTail, &kms.Error{Code: kms.CodeAccessDenied, Message: "a principal may read its own tenant's audit trail only"})
	}
	// The filters are subject filters evaluated by the server; a pattern
	// that is not expressible as one is refused, never filtered here.
	if req.Type != "" {
		if _, err := jsaudit.TypeFilter(req.Type); err != nil {
			return nil, s.rejectWith(ctx, c, api.OpAuditTail, &kms.Error{Code: kms.CodeValidation, Message: strings.TrimPrefix(err.Error(), jsaudit.ErrInvalidFilter.Error()+": ")})
		}
	}
	keyID := req.KeyID
	if keyID != "" && !kms.ValidKeyID(keyID) {
		// An alias: resolve it (DescribeKey records the lookup). A key
		// ID is used as it is, so the trail of a key that no longer
		// resolves stays readable.
		k, err := s.cfg.KMS.DescribeKey(ctx, c, keyID)
		if err != nil {
			return nil, err
		}
		keyID = k.ID
	}
	var after uint64
	if req.After != "" {
		var err error
		if after, err = s.cursors.open(c.Tenant, req.After); err != nil {
			return nil, s.rejectWith(ctx, c, api.OpAuditTail, &kms.Error{Code: kms.CodeValidation,
				Message: "after is not a cursor of this tenant's trail (cursors come from audit.tail replies; one from before a worker restart may no longer open: start again without after)"})
		}
	}
	wait, err := tailWait(req.WaitMillis)
	if err != nil {
		return nil, s.rejectWith(ctx, c, api.OpAuditTail, err)
	}
	// A filtered read may find nothing for a long stretch of the stream;
	// the reply then says how far it looked, so the next page starts
	// there.
	var last uint64
	filtered := keyID != "" || req.Type != ""
	if filtered {
		str, err := s.cfg.JS.Stream(ctx, jsaudit.StreamName)
		if err != nil {
			return nil, &kms.Error{Code: kms.CodeInternal, Message: "failed to read the audit trail"}
		}
		last = str.CachedInfo().State.LastSeq
	}
	evs, err := jsaudit.Read(ctx, s.cfg.JS, jsaudit.ReadParams{Tenant: c.Tenant, AfterSeq: after, Limit: req.Limit, Wait: wait, KeyID: keyID, Type: req.Type})
	if err != nil {
		return nil, &kms.Error{Code: kms.CodeInternal, Message: "failed to read the audit trail"}
	}
	// Every read that returns events is on the record, with what it
	// returned, before the reply: no record, no reply.
	if err := s.recordRead(ctx, c, evs, keyID, req.Type); err != nil {
		return nil, err
	}
	out := api.AuditTailReply{Events: make([]api.AuditEvent, 0, len(evs))}
	if req.KeyID != "" {
		out.KeyID = keyID
	}
	for _, e := range evs {
		out.Events = append(out.Events, api.AuditEvent{Cursor: s.cursors.seal(c.Tenant, e.Seq), Event: e.Event})
	}
	switch {
	case len(evs) > 0:
		out.Next = out.Events[len(out.Events)-1].Cursor
	case filtered && last > after:
		out.Next = s.cursors.seal(c.Tenant, last)
	}
	return out, nil
}

// recordRead records one audit read naming what it returned. A page of
// nothing, or of only the caller's own earlier audit-read records (a
// follow waiting for news, which would otherwise record its own records
// for ever), is not recorded again.
func (s *Server) recordRead(ctx context.Context, c kms.Caller, evs []jsaudit.Stored, keyID, typ string) error {
	own := true
	for _, e := range evs {
		if !strings.HasSuffix(e.Subject, "."+events.TypeAuditRead) || chain.ParseFields(e.Event).Principal != c.Principal {
			own = false
			break
		}
	}
	if own {
		return nil
	}
	p := kms.AuditReadParams{Events: len(evs), FirstEventID: chain.ParseFields(evs[0].Event).ID, LastEventID: chain.ParseFields(evs[len(evs)-1].Event).ID}
	if keyID != "" || typ != "" {
		p.Filter, _ = jsaudit.FilterSubject(c.Tenant, keyID, typ)
	}
	return s.cfg.KMS.RecordAuditRead(ctx, c, p)
}

// Metadata converts a domain key to its wire form.
func Metadata(k *kms.Key) api.KeyMetadata {
	m := api.KeyMetadata{
		KeyID: k.ID, Arn: k.ResourceName(), Alias: k.Alias, Description: k.Description,
		KeySpec: string(k.Spec), KeyUsage: string(k.Usage), KeyState: string(k.State),
		CreationDate: k.CreatedAt, CreatedBy: k.CreatedBy, PrimaryVersion: k.PrimaryVersion,
		Tags: tagsToWire(k.Tags), Exportable: k.Exportable,
	}
	if !k.RotatedAt.IsZero() {
		t := k.RotatedAt
		m.LastRotationDate = &t
	}
	for _, v := range k.Versions {
		m.Versions = append(m.Versions, api.KeyVersion{Version: v.Number, State: string(v.State), Algorithm: string(v.Algorithm), CreationDate: v.CreatedAt})
	}
	importMetadata(k, &m)
	lifecycleMetadata(&m, k)
	replicaMetadata(&m, k)
	return m
}

// maxTailWait bounds how long one audit.tail request waits for records.
const maxTailWait = 10 * time.Second

// tailWait converts a request's waitMillis, capped at maxTailWait before
// the conversion (2^62 ms as a Duration would overflow to 0).
func tailWait(ms int) (time.Duration, error) {
	if ms < 0 {
		return 0, &kms.Error{Code: kms.CodeValidation, Message: "waitMillis must not be negative"}
	}
	return time.Duration(min(ms, int(maxTailWait/time.Millisecond))) * time.Millisecond, nil
}
