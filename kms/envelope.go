package kms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Algorithm identifies how a ciphertext was made. Its one-byte ID is in
// every ciphertext header.
type Algorithm string

// Algorithms.
const (
	AlgAES256GCM Algorithm = "AES_256_GCM"
)

var algIDs = map[Algorithm]byte{AlgAES256GCM: 0x01}

func algorithmByID(id byte) (Algorithm, bool) {
	for a, b := range algIDs {
		if b == id {
			return a, true
		}
	}
	return "", false
}

// Ciphertext envelope, format version 1:
//
//	offset  size  field
//	0       1     format version (0x01)
//	1       1     algorithm ID
//	2       1     key ID length L (36 for a UUID)
//	3       L     key ID (ASCII)
//	3+L     4     key version, big-endian
//	7+L     12    IV
//	19+L    ...   ciphertext || 16-byte tag
//
// The header names the key and version so that decryption finds the version
// in O(1) without trial decryption, as tink's output prefix does. The header
// is authenticated: it is part of the AAD (see aad).
const (
	envelopeV1      = 0x01
	envelopeIVSize  = 12
	envelopeTagSize = 16
	// MaxPlaintext is the largest plaintext Encrypt accepts. AWS's 4 KiB is
	// too small for many users; 64 KiB keeps NATS messages well under the
	// default 1 MiB payload limit once base64 and JSON are added.
	MaxPlaintext = 64 * 1024
)

var errMalformedEnvelope = errors.New("malformed ciphertext envelope")

type envelope struct {
	alg     Algorithm
	keyID   string
	version uint32
	iv      []byte
	body    []byte // ciphertext || tag
	header  []byte // bytes [0, 3+L+4): authenticated via AAD
}

func (e *envelope) marshal() []byte {
	out := make([]byte, 0, 3+len(e.keyID)+4+len(e.iv)+len(e.body))
	out = append(out, e.headerBytes()...)
	out = append(out, e.iv...)
	return append(out, e.body...)
}

func (e *envelope) headerBytes() []byte {
	h := make([]byte, 0, 3+len(e.keyID)+4)
	h = append(h, envelopeV1, algIDs[e.alg], byte(len(e.keyID)))
	h = append(h, e.keyID...)
	return binary.BigEndian.AppendUint32(h, e.version)
}

func parseEnvelope(b []byte) (*envelope, error) {
	if len(b) < 3 || b[0] != envelopeV1 {
		return nil, errMalformedEnvelope
	}
	alg, ok := algorithmByID(b[1])
	if !ok {
		return nil, errMalformedEnvelope
	}
	l := int(b[2])
	hdrLen := 3 + l + 4
	if len(b) < hdrLen+envelopeIVSize+envelopeTagSize {
		return nil, errMalformedEnvelope
	}
	keyID := string(b[3 : 3+l])
	if !ValidKeyID(keyID) {
		return nil, errMalformedEnvelope
	}
	if alg != AlgAES256GCM {
		// HPKE envelopes: enc || ciphertext follow the header; no IV.
		return &envelope{
			alg: alg, keyID: keyID, version: binary.BigEndian.Uint32(b[3+l : hdrLen]),
			body: b[hdrLen:], header: b[:hdrLen],
		}, nil
	}
	return &envelope{
		alg:     alg,
		keyID:   keyID,
		version: binary.BigEndian.Uint32(b[3+l : hdrLen]),
		iv:      b[hdrLen : hdrLen+envelopeIVSize],
		body:    b[hdrLen+envelopeIVSize:],
		header:  b[:hdrLen],
	}, nil
}

// EncryptionContext is the caller's non-secret key/value pairs bound to a
// ciphertext, as in AWS KMS. The same context must be given to decrypt.
type EncryptionContext map[string]string

// aad builds the additional authenticated data: a domain label, the
// envelope header, the tenant and the encryption context in a canonical,
// length-prefixed encoding with keys sorted. Length prefixes make the
// encoding injective, so {"a":"bc"} and {"ab":"c"} differ; including the
// tenant makes a ciphertext moved to another tenant fail.
func aad(header []byte, tenant string, ec EncryptionContext) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]byte, 0, 64+len(header))
	out = appendLP(out, []byte("keyflow/aad/v1"))
	out = appendLP(out, header)
	out = appendLP(out, []byte(tenant))
	out = binary.BigEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		out = appendLP(out, []byte(k))
		out = appendLP(out, []byte(ec[k]))
	}
	return out
}

func appendLP(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

const (
	maxContextPairs = 64
	maxContextBytes = 8 * 1024
)

// contextText reports whether s may appear in an encryption context:
// valid UTF-8, no NUL, and no U+FFFD, which is what JSON decoders make of
// invalid bytes (so two different byte strings would name one context).
func contextText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0) && !strings.ContainsRune(s, utf8.RuneError)
}

// PrintableText reports whether s is valid UTF-8 free of control
// characters (C0, DEL and C1: NUL, newlines, the ESC of ANSI sequences),
// as free text that terminals and logs show must be.
func PrintableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (ec EncryptionContext) validate() error {
	if len(ec) > maxContextPairs {
		return newError(CodeValidation, "encryption context has %d pairs; the limit is %d", len(ec), maxContextPairs)
	}
	n := 0
	for k, v := range ec {
		if k == "" {
			return newError(CodeValidation, "encryption context keys must not be empty")
		}
		if !contextText(k) || !contextText(v) {
			return newError(CodeValidation, "encryption context keys and values must be valid UTF-8 without NUL or U+FFFD")
		}
		n += len(k) + len(v)
	}
	if n > maxContextBytes {
		return newError(CodeValidation, "encryption context is %d bytes; the limit is %d", n, maxContextBytes)
	}
	return nil
}

// EnvelopeKeyID returns the key ID and version named in a ciphertext header,
// without decrypting. It lets routers and audit tools find the key.
func EnvelopeKeyID(ciphertext []byte) (keyID string, version uint32, err error) {
	e, err := parseEnvelope(ciphertext)
	if err != nil {
		return "", 0, fmt.Errorf("failed to parse ciphertext: %w", err)
	}
	return e.keyID, e.version, nil
}
