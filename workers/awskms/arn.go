package awskms

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keyflow/keyflow/kms"
)

// AccountID is the 12-digit AWS-style account ID of a tenant: stable,
// derived from the tenant name, so it needs no table and every gateway
// agrees on it.
func AccountID(tenant string) string {
	if id, ok := accountIDs.Load(tenant); ok {
		return id.(string)
	}
	id := accountID(tenant)
	if accountIDsHeld.Add(1) <= 4096 {
		accountIDs.Store(tenant, id)
	}
	return id
}

// accountIDs caches AccountID (bounded; the gateway's tenants are the
// authenticated ones, a small set).
var (
	accountIDs     sync.Map // tenant -> account ID
	accountIDsHeld atomic.Int64
)

func accountID(tenant string) string {
	sum := sha256.Sum256([]byte("keyflow-aws-account-v1:" + tenant))
	return fmt.Sprintf("%012d", binary.BigEndian.Uint64(sum[:8])%1_000_000_000_000)
}

func (s *Server) keyARN(tenant, keyID string) string {
	return regionKeyARN(s.region, tenant, keyID)
}

// regionKeyARN is the ARN of key keyID of tenant in region (a multi-region
// key has the same ID in every region).
func regionKeyARN(region, tenant, keyID string) string {
	return "arn:aws:kms:" + region + ":" + AccountID(tenant) + ":key/" + keyID
}

func (s *Server) aliasARN(tenant, alias string) string {
	return "arn:aws:kms:" + s.region + ":" + AccountID(tenant) + ":" + aliasName(alias)
}

// aliasName is alias/NAME for a keyflow alias (stored with or without
// the prefix).
func aliasName(a string) string {
	if a == "" || strings.HasPrefix(a, "alias/") {
		return a
	}
	return "alias/" + a
}

// arnFields splits an ARN into its partition, service, region, account
// and resource (five fields when well formed); ok is false for a ref that
// is not an ARN.
func arnFields(ref string) (f []string, ok bool) {
	rest, ok := strings.CutPrefix(ref, "arn:")
	if !ok {
		return nil, false
	}
	return strings.SplitN(rest, ":", 5), true
}

// otherRegionKey returns the key ID and region of ref when ref is a key
// ARN of the caller's account for another region than this gateway's:
// possibly a replica of a multi-region key whose primary is here
// (replicaDeletion).
func (s *Server) otherRegionKey(c kms.Caller, ref string) (keyID, region string, ok bool) {
	f, ok := arnFields(ref)
	if !ok || len(f) != 5 || f[1] != "kms" || f[2] == s.region || f[3] != AccountID(c.Tenant) {
		return "", "", false
	}
	keyID, ok = strings.CutPrefix(f[4], "key/")
	return keyID, f[2], ok && kms.ValidKeyID(keyID) && kms.ValidRegion(f[2])
}

// keyRef turns what an AWS caller may send as KeyId (a key ID, a key ARN,
// alias/NAME or an alias ARN) into a keyflow key reference. An ARN of
// another account or region names no key of the caller's: NotFound, as
// AWS answers for a key the caller cannot see.
func (s *Server) keyRef(c kms.Caller, ref string) (string, error) {
	f, ok := arnFields(ref)
	if !ok {
		return ref, nil
	}
	if len(f) != 5 || f[1] != "kms" || (!strings.HasPrefix(f[4], "key/") && !strings.HasPrefix(f[4], "alias/")) {
		return "", clientError("ValidationException", "the key ARN is malformed")
	}
	if f[2] != s.region || f[3] != AccountID(c.Tenant) {
		return "", clientError("NotFoundException", "the key ARN names no key of this account and region")
	}
	if id, ok := strings.CutPrefix(f[4], "key/"); ok {
		return id, nil
	}
	return f[4], nil
}
