package events

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"sync"
)

// HeaderRecordMAC is the NATS header that carries a record's authenticator
// (base64, standard encoding).
const HeaderRecordMAC = "Kf-Record-Mac"

// recordMACLabel separates record authenticators from every other use of
// HMAC in keyflow.
const recordMACLabel = "keyflow.audit.record.v1\x00"

// RecordKeySize is the size of a record key.
const RecordKeySize = 32

// RecordKey computes and checks record authenticators. It is safe for
// concurrent use. It never prints its key.
//
// Anyone holding a NATS credential that may publish on kf.audit.> (a
// worker's, or a full keyflow-account user's) can store a record that no
// keyflow code wrote. The hash chain seals such a record like any other, so
// chaining alone cannot tell it apart. Records written by keyflow's own code
// therefore carry an authenticator: HMAC-SHA256 under the deployment's
// record key over the stream subject and the stored body, byte for byte.
// The record key is derived in the HSM (kms: Service.RecordKey) and kept in
// memory by the processes that publish records (the KMS's audit sink) and
// by the sealer, which checks every record before chaining it and flags
// those without a valid authenticator in its signed digest.
type RecordKey struct {
	pool sync.Pool // of hash.Hash
}

// NewRecordKey returns a RecordKey for key (RecordKeySize bytes). The key
// is copied.
func NewRecordKey(key []byte) (*RecordKey, error) {
	if len(key) != RecordKeySize {
		return nil, errors.New("events: a record key is 32 bytes")
	}
	k := append([]byte(nil), key...)
	rk := &RecordKey{}
	rk.pool.New = func() any { return hmac.New(sha256.New, k) }
	return rk, nil
}

// String hides the key.
func (k *RecordKey) String() string { return "events.RecordKey{…}" }

func (k *RecordKey) sum(subject string, body []byte, out []byte) []byte {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(recordMACLabel))
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(body)
	out = h.Sum(out)
	k.pool.Put(h)
	return out
}

// Sum returns the authenticator of a record stored on subject with body,
// base64-encoded for HeaderRecordMAC.
func (k *RecordKey) Sum(subject string, body []byte) string {
	var buf [sha256.Size]byte
	return base64.StdEncoding.EncodeToString(k.sum(subject, body, buf[:0]))
}

// Check reports whether mac (the HeaderRecordMAC value) is the
// authenticator of the record, in constant time.
func (k *RecordKey) Check(subject string, body []byte, mac string) bool {
	if len(mac) != base64.StdEncoding.EncodedLen(sha256.Size) {
		return false
	}
	var got [sha256.Size + 2]byte
	n, err := base64.StdEncoding.Decode(got[:], []byte(mac))
	if err != nil || n != sha256.Size {
		return false
	}
	var buf [sha256.Size]byte
	return hmac.Equal(got[:n], k.sum(subject, body, buf[:0]))
}

// Authenticating is a Sink that can authenticate the records it stores.
// The KMS gives it the deployment's record key when it starts.
type Authenticating interface {
	Sink
	SetRecordKey(*RecordKey)
}
