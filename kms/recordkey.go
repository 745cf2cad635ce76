package kms

import (
	"context"

	"github.com/keyflow/keyflow/events"
)

// recordKeyID is the system HMAC key the audit record key is derived from.
const recordKeyID = "00000000-0000-0000-0000-000000006172"

var recordKeyLabel = []byte("keyflow.audit.record-key.v1\x00")

// RecordKey returns the deployment's audit record key (events.RecordKey):
// HMAC-SHA256, computed in the HSM under a system HMAC key wrapped by the
// root key, of a fixed label. Every process with the HSM derives the same
// key; nothing without it can. The key lives in memory only, so a record
// costs a software HMAC (about 1 µs) instead of an HSM call. The KMS gives
// it to its audit sink when it starts; the audit sealer uses it to check
// records before chaining them.
func (s *Service) RecordKey(ctx context.Context) (*events.RecordKey, error) {
	k, err := s.systemMAC(ctx, recordKeyID, recordKeyLabel, nil)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	return events.NewRecordKey(k)
}

// authenticateAudit gives the audit sink the record key, if it can use it.
// An HSM that cannot compute HMACs leaves records unauthenticated (the
// sealer then flags every record; the log says why).
func (s *Service) authenticateAudit(ctx context.Context) error {
	sink, ok := s.audit.(events.Authenticating)
	if !ok {
		return nil
	}
	k, err := s.RecordKey(ctx)
	if CodeOf(err) == CodeUnsupportedOperation {
		s.log.Warn("audit records are not authenticated: this HSM cannot compute HMACs")
		return nil
	}
	if err != nil {
		return err
	}
	sink.SetRecordKey(k)
	return nil
}
