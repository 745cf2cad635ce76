package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// authorize asks the domain, once per request and before the handler runs,
// whether the caller may perform op on the keys the body names (roles,
// deny list, key policies, grants). kms records every denial.
func (s *Server) authorize(ctx context.Context, op string, c kms.Caller, body []byte) error {
	return s.cfg.KMS.Authorize(ctx, c, kms.AuthorizeParams{Operation: op, Targets: accessTargets(op, body)})
}

// targetShape is the union of the fields that name keys in any request.
// It is decoded leniently: when the body is malformed, the handler's
// strict decoding refuses it, and no key is touched; when the body is
// well-formed, both decodings read the same fields.
type targetShape struct {
	KeyID                        string            `json:"keyId"`
	CiphertextBlob               []byte            `json:"ciphertextBlob"`
	EncryptionContext            map[string]string `json:"encryptionContext"`
	SourceKeyID                  string            `json:"sourceKeyId"`
	SourceEncryptionContext      map[string]string `json:"sourceEncryptionContext"`
	DestinationKeyID             string            `json:"destinationKeyId"`
	DestinationEncryptionContext map[string]string `json:"destinationEncryptionContext"`
	Items                        []targetShape     `json:"items"`
}

// accessTargets lists the keys a request touches, with the encryption
// context each access uses. Decrypt's key comes from the ciphertext header
// (kms parses it); re-encryption touches the source key (ReEncryptFrom)
// and the destination key (ReEncryptTo).
func accessTargets(op string, body []byte) []kms.AccessTarget {
	perm, ok := keypolicy.PermissionOf(op)
	if !ok || (perm.Action == "" && op != api.OpReEncrypt) {
		return nil
	}
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}") // as decode reads it (found by FuzzDecode)
	}
	var t targetShape
	if json.Unmarshal(body, &t) != nil {
		return nil
	}
	one := func(t targetShape) kms.AccessTarget {
		return kms.AccessTarget{KeyRef: t.KeyID, Ciphertext: t.CiphertextBlob, Context: t.EncryptionContext}
	}
	switch op {
	case api.OpReEncrypt:
		src := kms.AccessTarget{KeyRef: t.SourceKeyID, Ciphertext: t.CiphertextBlob, Context: t.SourceEncryptionContext, Action: keypolicy.ActionReEncryptFrom}
		dst := kms.AccessTarget{KeyRef: t.DestinationKeyID, Context: t.DestinationEncryptionContext, Action: keypolicy.ActionReEncryptTo}
		if dst.KeyRef == "" { // the destination defaults to the source key
			dst.KeyRef, dst.Ciphertext = src.KeyRef, src.Ciphertext
		}
		return []kms.AccessTarget{src, dst}
	case api.OpBatchEncrypt, api.OpBatchDecrypt, api.OpBatchDataKey:
		out := make([]kms.AccessTarget, 0, len(t.Items))
		for _, it := range t.Items {
			out = append(out, one(it))
		}
		return out
	}
	return []kms.AccessTarget{one(t)}
}

// Operations lists the operations this server answers ("crypto.encrypt",
// ...), sorted: every one must have a row in kms's operation table, or
// it is refused to everyone.
func (s *Server) Operations() []string {
	var out []string
	for _, svc := range s.services {
		for _, e := range svc.Info().Endpoints {
			parts := strings.SplitN(e.Subject, ".", 4) // kf.v1.*.<group>.<op>
			if len(parts) == 4 {
				out = append(out, parts[3])
			}
		}
	}
	slices.Sort(out)
	return out
}
