package rpc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Audit tail cursors.
//
// A tenant pages through its trail with opaque cursors, never with the
// audit stream's sequence numbers: the stream holds every tenant's
// records, so the gaps between one tenant's sequences would tell it how
// busy the others are. A cursor is the stream sequence sealed with
// AES-256-GCM under a key of the workers (Config.CursorKey), with the
// tenant as additional data, so it is unreadable, cannot be forged or
// altered, and is refused for another tenant.

// CursorKeySize is the size of Config.CursorKey.
const CursorKeySize = 32

type cursors struct{ aead cipher.AEAD }

// errCursor is the one error of a cursor that does not open.
var errCursor = errors.New("invalid cursor")

func newCursors(key []byte) (*cursors, error) {
	if key == nil {
		key = make([]byte, CursorKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("failed to generate the cursor key: %w", err)
		}
	}
	if len(key) != CursorKeySize {
		return nil, fmt.Errorf("rpc: the cursor key must be %d bytes, not %d", CursorKeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("rpc: cursor key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("rpc: cursor key: %w", err)
	}
	return &cursors{aead: aead}, nil
}

func (c *cursors) seal(tenant string, seq uint64) string {
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+8+c.aead.Overhead())
	_, _ = rand.Read(nonce)
	out := c.aead.Seal(nonce, nonce, binary.BigEndian.AppendUint64(nil, seq), []byte(tenant))
	return base64.RawURLEncoding.EncodeToString(out)
}

func (c *cursors) open(tenant, cur string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(cur)
	n := c.aead.NonceSize()
	if err != nil || len(b) != n+8+c.aead.Overhead() {
		return 0, errCursor
	}
	pt, err := c.aead.Open(nil, b[:n], b[n:], []byte(tenant))
	if err != nil {
		return 0, errCursor
	}
	return binary.BigEndian.Uint64(pt), nil
}
