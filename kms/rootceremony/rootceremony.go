// Package rootceremony moves keyflow's root key between HSMs as M-of-N
// custodian shares: the root key ceremony.
//
// The root key never leaves an HSM in the clear. Export draws a fresh
// 256-bit ceremony key-encryption key (KEK) from the HSM, has the HSM wrap
// the root key under it (AES-KWP; only a KEK the security officer marks
// trusted may wrap the root key, see hsm.RootKeyCeremony), splits the KEK
// with Shamir's scheme over GF(2^8) (package kms/shamir) into N shares of
// which any M rebuild it, and zeroes it. What it produces:
//
//   - one share file per custodian (share-<i>-of-<N>.json): the share, its
//     index, M, N, the ceremony ID and a checksum that catches a corrupted
//     or mistyped file;
//   - the wrapped root key file (root-wrapped.json): the wrapped root key,
//     the ceremony ID, M and N, and a key check value of the KEK (an
//     HMAC-SHA-256 under the KEK of a fixed label: it tells a wrong KEK
//     from the right one and reveals nothing usable about it). It is
//     safe to keep next to the backups: without M shares it is useless.
//
// Import reads M (or more) share files and the wrapped root key file,
// checks that the shares belong to that ceremony, that there are enough of
// them and that none is corrupt, rebuilds the KEK, checks it against the
// key check value, and has the new HSM unwrap the root key into a token
// object under the same label. Fewer than M shares are refused before any
// arithmetic; shares that were tampered with to claim a lower threshold
// rebuild a wrong KEK, which the key check value (and, behind it, the
// AES-KWP integrity check in the HSM) refuses. Every failure is a
// *kms.Error with a stable code and a message that says what to do.
package rootceremony

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/shamir"
)

// File formats.
const (
	ShareFormat   = "keyflow-root-share/v1"
	WrappedFormat = "keyflow-root-wrapped/v1"
)

// Defaults: 3 of 5 custodians.
const (
	DefaultM = 3
	DefaultN = 5
)

// ShareFile is one custodian's share.
type ShareFile struct {
	Format     string    `json:"format"`
	CeremonyID string    `json:"ceremonyId"`
	Index      int       `json:"index"`
	M          int       `json:"m"`
	N          int       `json:"n"`
	CreatedAt  time.Time `json:"createdAt"`
	Share      string    `json:"share"`    // hex
	Checksum   string    `json:"checksum"` // hex, see shareChecksum
}

// WrappedRootFile is the root key wrapped under the ceremony KEK.
type WrappedRootFile struct {
	Format       string    `json:"format"`
	CeremonyID   string    `json:"ceremonyId"`
	RootKeyLabel string    `json:"rootKeyLabel"`
	M            int       `json:"m"`
	N            int       `json:"n"`
	CreatedAt    time.Time `json:"createdAt"`
	WrappedRoot  []byte    `json:"wrappedRoot"`
	KEKCheck     string    `json:"kekCheck"` // hex HMAC-SHA-256(KEK, label || ceremony ID)
}

// Ceremony is the output of Export, ready to be written out: the share
// files go one to each custodian.
type Ceremony struct {
	ID      string
	Wrapped WrappedRootFile
	Shares  []ShareFile
}

// Backend is what the ceremony needs of an HSM.
type Backend interface {
	hsm.RootKeyCeremony
	hsm.Random
}

// ExportParams are the inputs of Export.
type ExportParams struct {
	RootKeyLabel string
	M, N         int
	SOPIN        string // the security officer's PIN: only the SO may export
	Now          time.Time
}

// Export runs the export half of the ceremony.
func Export(ctx context.Context, b Backend, p ExportParams) (*Ceremony, error) {
	if p.M == 0 && p.N == 0 {
		p.M, p.N = DefaultM, DefaultN
	}
	if !possibleThreshold(p.M, p.N) {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("need 2 <= m <= n <= 255 custodians, got m=%d n=%d", p.M, p.N)}
	}
	if p.Now.IsZero() {
		p.Now = time.Now()
	}
	kek, err := b.GenerateRandom(ctx, hsm.CeremonyKEKSize)
	if err != nil {
		return nil, fmt.Errorf("failed to draw the ceremony key: %w", err)
	}
	defer clear(kek)
	wrapped, err := b.ExportRootKey(ctx, p.RootKeyLabel, kek, p.SOPIN)
	switch {
	case errors.Is(err, hsm.ErrNotExportable):
		return nil, &kms.Error{Code: kms.CodeInvalidState, Message: "the root key was created non-extractable (before the ceremony existed), so it can never leave this HSM, not even wrapped; back up by keeping this token, or move the keys to a new deployment whose root key is exportable"}
	case errors.Is(err, hsm.ErrNotFound):
		return nil, &kms.Error{Code: kms.CodeNotFound, Message: fmt.Sprintf("the HSM has no root key %q", p.RootKeyLabel)}
	case err != nil:
		return nil, fmt.Errorf("failed to export the root key: %w", err)
	}
	shares, err := shamir.Split(kek, p.N, p.M)
	if err != nil {
		return nil, fmt.Errorf("failed to split the ceremony key: %w", err)
	}
	defer shamir.Zero(shares)
	c := &Ceremony{ID: uuid.NewString()}
	now := p.Now.UTC().Truncate(time.Second)
	c.Wrapped = WrappedRootFile{
		Format: WrappedFormat, CeremonyID: c.ID, RootKeyLabel: p.RootKeyLabel, M: p.M, N: p.N,
		CreatedAt: now, WrappedRoot: wrapped, KEKCheck: kekCheck(kek, c.ID),
	}
	for _, s := range shares {
		f := ShareFile{Format: ShareFormat, CeremonyID: c.ID, Index: int(s.X), M: p.M, N: p.N, CreatedAt: now, Share: hex.EncodeToString(s.Y)}
		f.Checksum = shareChecksum(f)
		c.Shares = append(c.Shares, f)
	}
	return c, nil
}

func kekCheck(kek []byte, ceremonyID string) string {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("keyflow root ceremony KEK check\x00" + ceremonyID))
	return hex.EncodeToString(m.Sum(nil))
}

// shareChecksum covers every field of a share file but the checksum. It
// catches corruption and typing mistakes, not forgery (that is what the
// KEK check is for).
func shareChecksum(f ShareFile) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00%d\x00%s", f.Format, f.CeremonyID, f.Index, f.M, f.N, f.Share)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// ParseShareFile decodes and checks one share file; name is for messages.
func ParseShareFile(name string, b []byte) (*ShareFile, error) {
	var f ShareFile
	if err := json.Unmarshal(b, &f); err != nil || f.Format != ShareFormat {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s is not a keyflow root key share file", name)}
	}
	if !hmac.Equal([]byte(shareChecksum(f)), []byte(f.Checksum)) {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("share file %s is corrupt (its checksum does not match); ask its custodian for an intact copy", name)}
	}
	// N is at most 255: Combine's share index is a byte, and an index of
	// 256 or more would wrap onto another share's (found by fuzzing).
	if !possibleThreshold(f.M, f.N) || f.Index < 1 || f.Index > f.N {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("share file %s has impossible parameters", name)}
	}
	return &f, nil
}

// ParseWrappedRootFile decodes a wrapped root key file.
func ParseWrappedRootFile(name string, b []byte) (*WrappedRootFile, error) {
	var f WrappedRootFile
	if err := json.Unmarshal(b, &f); err != nil || f.Format != WrappedFormat || f.CeremonyID == "" || f.RootKeyLabel == "" {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s is not a keyflow wrapped root key file", name)}
	}
	if !possibleThreshold(f.M, f.N) {
		return nil, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("wrapped root key file %s has impossible parameters (%d of %d)", name, f.M, f.N)}
	}
	return &f, nil
}

// possibleThreshold reports whether m of n is a threshold Export can make.
func possibleThreshold(m, n int) bool {
	return m >= shamir.MinShares && n >= m && n <= shamir.MaxShares
}

// ImportParams are the inputs of Import: the wrapped root key file and the
// custodians' share files (parsed, with their names for messages).
type ImportParams struct {
	Wrapped    *WrappedRootFile
	Shares     []*ShareFile
	ShareNames []string
}

// Import runs the import half: M shares rebuild the KEK, and the HSM
// unwraps the root key under it into a token object labelled as before.
func Import(ctx context.Context, b hsm.RootKeyCeremony, p ImportParams) error {
	w := p.Wrapped
	name := func(i int) string {
		if i < len(p.ShareNames) {
			return p.ShareNames[i]
		}
		return fmt.Sprintf("share %d", i+1)
	}
	var parts []shamir.Share
	defer func() { shamir.Zero(parts) }()
	seen := map[int]string{}
	for i, s := range p.Shares {
		if s.CeremonyID != w.CeremonyID {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s belongs to ceremony %s, not to ceremony %s of the wrapped root key; use shares of one ceremony", name(i), s.CeremonyID, w.CeremonyID)}
		}
		if s.M != w.M || s.N != w.N {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s says %d of %d, the wrapped root key file %d of %d", name(i), s.M, s.N, w.M, w.N)}
		}
		if prev, dup := seen[s.Index]; dup {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s and %s are the same share (index %d); each custodian's share counts once", prev, name(i), s.Index)}
		}
		seen[s.Index] = name(i)
		y, err := hex.DecodeString(s.Share)
		if err != nil || len(y) != hsm.CeremonyKEKSize {
			return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("%s does not hold a share of a 256-bit key", name(i))}
		}
		parts = append(parts, shamir.Share{X: byte(s.Index), Y: y})
	}
	if len(parts) < w.M {
		return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("this ceremony needs %d of its %d shares; %d given. Fewer than %d shares reveal nothing about the root key, so nothing was imported", w.M, w.N, len(parts), w.M)}
	}
	slices.SortFunc(parts, func(a, b shamir.Share) int { return int(a.X) - int(b.X) })
	kek, err := shamir.Combine(parts)
	if err != nil {
		return &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("the shares cannot be combined: %v", err)}
	}
	defer clear(kek)
	if !hmac.Equal([]byte(kekCheck(kek, w.CeremonyID)), []byte(w.KEKCheck)) {
		return &kms.Error{Code: kms.CodeInvalidCiphertext, Message: "the shares do not rebuild this ceremony's key (a share was altered, or too few genuine shares were given); nothing was imported"}
	}
	err = b.ImportRootKey(ctx, w.RootKeyLabel, kek, w.WrappedRoot)
	switch {
	case errors.Is(err, hsm.ErrExists):
		return &kms.Error{Code: kms.CodeAlreadyExists, Message: fmt.Sprintf("this HSM already has a root key %q; import into a fresh token (a new --data-dir)", w.RootKeyLabel)}
	case errors.Is(err, hsm.ErrAuthFailed):
		return &kms.Error{Code: kms.CodeInvalidCiphertext, Message: "the rebuilt key does not open the wrapped root key (the wrapped root key file was altered); nothing was imported"}
	case err != nil:
		return fmt.Errorf("failed to import the root key: %w", err)
	}
	return nil
}
