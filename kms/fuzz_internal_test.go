package kms

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// Fuzz targets for kms's byte formats that need no HSM. The targets that
// need one (decryption, import tokens and wrapped material, backup files)
// are in fuzz_test.go. `go test` replays the seeds in testdata/fuzz;
// `go tool task fuzz` explores.

// fuzzKeyID is a well-formed key ID for seeds.
const fuzzKeyID = "0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b"

// FuzzParseEnvelope: a ciphertext envelope that parses re-encodes to the
// very same bytes (no two encodings of one envelope, nothing ignored), and
// every refusal is the one malformed-envelope error.
func FuzzParseEnvelope(f *testing.F) {
	genuine := (&envelope{alg: AlgAES256GCM, keyID: fuzzKeyID, version: 7, iv: bytes.Repeat([]byte{1}, envelopeIVSize), body: bytes.Repeat([]byte{2}, 5+envelopeTagSize)}).marshal()
	fuzzseed.Add(f, genuine)
	fuzzseed.Add(f, genuine[:len(genuine)-1])
	fuzzseed.Add(f, genuine[:3+36+4])
	for id := range 8 {
		b := bytes.Clone(genuine)
		b[1] = byte(id)
		fuzzseed.Add(f, b)
	}
	fuzzseed.Add(f, []byte{envelopeV1, 0x01, 0xff})
	fuzzseed.Add(f, []byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseEnvelope(b)
		id, v, err2 := EnvelopeKeyID(b)
		if err != nil {
			if err != errMalformedEnvelope || !errors.Is(err2, errMalformedEnvelope) {
				t.Fatalf("refusal %v / %v, want the one malformed-envelope error", err, err2)
			}
			return
		}
		if err2 != nil || id != e.keyID || v != e.version {
			t.Fatalf("EnvelopeKeyID = %q %d %v, parse = %q %d", id, v, err2, e.keyID, e.version)
		}
		if !ValidKeyID(e.keyID) {
			t.Fatalf("accepted key ID %q", e.keyID)
		}
		if got := e.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, got)
		}
		if !bytes.Equal(e.header, e.headerBytes()) {
			t.Fatalf("authenticated header %x is not the header %x", e.header, e.headerBytes())
		}
		if e.alg == AlgAES256GCM && (len(e.iv) != envelopeIVSize || len(e.body) < envelopeTagSize) {
			t.Fatalf("AES envelope with IV %d and body %d bytes", len(e.iv), len(e.body))
		}
	})
}

// FuzzParseBackupHeader: a backup file's clear header that parses encodes
// back to a header that parses to the same fields, its fields are in
// range, and every refusal is "not a backup" (validation) or the one
// integrity error.
func FuzzParseBackupHeader(f *testing.F) {
	h := backupHeader{
		Format: backupFormatV1, BackupID: fuzzKeyID, Tenant: "alpha", CreatedAt: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC),
		CreatedBy: "alice", RootKeyLabel: "keyflow-root", WrappedDataKey: bytes.Repeat([]byte{9}, 40), Chunks: 1, PayloadBytes: 100, Keys: 1, Versions: 1,
	}
	prefix, err := encodeBackupPrefix(h)
	if err != nil {
		f.Fatal(err)
	}
	chunk := binary.BigEndian.AppendUint32(nil, envelopeIVSize+envelopeTagSize+100)
	fuzzseed.Add(f, append(bytes.Clone(prefix), append(chunk, make([]byte, envelopeIVSize+envelopeTagSize+100)...)...))
	fuzzseed.Add(f, prefix)
	fuzzseed.Add(f, prefix[:len(prefix)-1])
	fuzzseed.Add(f, []byte(backupMagic+"\x02\x00\x00\x00\x02{}"))
	fuzzseed.Add(f, []byte(backupMagic+"\x01\xff\xff\xff\xff{}"))
	fuzzseed.Add(f, []byte(backupMagic+"\x01\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, file []byte) {
		h, off, err := parseBackupHeader(file)
		if err != nil {
			code := CodeOf(err)
			if code != CodeValidation && code != CodeInvalidCiphertext {
				t.Fatalf("refusal with code %s: %v", code, err)
			}
			if code == CodeInvalidCiphertext && PublicMessage(err) != PublicMessage(errBackupCorrupt(nil)) {
				t.Fatalf("integrity refusal %q is not the one backup integrity error", PublicMessage(err))
			}
			return
		}
		if off > len(file) || off <= len(backupMagic)+5 {
			t.Fatalf("first chunk at %d of %d bytes", off, len(file))
		}
		if h.Format != backupFormatV1 || h.Chunks < 1 || h.PayloadBytes < 0 || !ValidTenant(h.Tenant) {
			t.Fatalf("accepted header %+v", h)
		}
		again, err := encodeBackupPrefix(*h)
		if err != nil {
			t.Fatal(err)
		}
		h2, off2, err := parseBackupHeader(again)
		if err != nil || off2 != len(again) {
			t.Fatalf("re-encoded header does not parse: %v", err)
		}
		j1, _ := json.Marshal(h)
		j2, _ := json.Marshal(h2)
		if !bytes.Equal(j1, j2) {
			t.Fatalf("header changed through encode and parse:\n %s\n %s", j1, j2)
		}
	})
}
