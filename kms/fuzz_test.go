package kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyflow/keyflow/internal/fuzzseed"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
)

// Fuzz targets for the inputs kms opens with the HSM: ciphertexts, import
// tokens with wrapped key material, and backup files. Each runs over a
// real testbed (SoftHSM, NATS audit). The fuzzer's input is a mutation of
// a genuine value made in the run (mutate), so the committed seeds mean
// the same on every fresh token. The property is the one a caller relies
// on: the genuine value opens, and every changed one is refused with the
// one error of its kind (no oracle telling which check failed).

// mutate XORs mask into genuine (appending mask bytes past its end) and
// then cuts cut bytes off the end.
func mutate(genuine, mask []byte, cut uint16) []byte {
	out := bytes.Clone(genuine)
	for i, m := range mask {
		if i < len(out) {
			out[i] ^= m
		} else {
			out = append(out, m)
		}
	}
	return out[:max(0, len(out)-int(cut))]
}

// flipAt is a mask that flips the low bit of byte i.
func flipAt(i int) []byte { m := make([]byte, i+1); m[i] = 1; return m }

// oddContext reports whether an encryption context pair may be refused as
// invalid input before any decryption.
func oddContext(k, v string) bool {
	return len(k)+len(v) > 8*1024 || !utf8.ValidString(k+v) || strings.ContainsRune(k+v, utf8.RuneError) || strings.ContainsFunc(k+v, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// FuzzDecrypt: the genuine ciphertext with its context decrypts; any
// other ciphertext or context is the one InvalidCiphertext error, with
// the same message.
func FuzzDecrypt(f *testing.F) {
	ctx := context.Background()
	b := testbed.New(f)
	k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{})
	if err != nil {
		f.Fatal(err)
	}
	pt := []byte("attack at dawn")
	enc, err := b.KMS.Encrypt(ctx, alice, kms.EncryptParams{KeyRef: k.ID, Plaintext: pt, Context: kms.EncryptionContext{"app": "billing"}})
	if err != nil {
		f.Fatal(err)
	}
	_, refusal := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: []byte("not a ciphertext")})
	want := kms.PublicMessage(refusal)
	n := len(enc.Ciphertext)
	fuzzseed.Add(f, []byte(nil), uint16(0), "app", "billing")
	for _, i := range []int{0, 1, 2, 3, 3 + 35, 3 + 36, 3 + 36 + 3, 3 + 36 + 4, 3 + 36 + 4 + 11, n - 17, n - 16, n - 1} {
		fuzzseed.Add(f, flipAt(i), uint16(0), "app", "billing")
	}
	for _, cut := range []int{1, 16, 17, n - 43, n} {
		fuzzseed.Add(f, []byte(nil), uint16(cut), "app", "billing")
	}
	fuzzseed.Add(f, make([]byte, n+1), uint16(0), "app", "billing")
	fuzzseed.Add(f, []byte(nil), uint16(0), "app", "Billing")
	fuzzseed.Add(f, []byte(nil), uint16(0), "", "")
	fuzzseed.Add(f, []byte(nil), uint16(0), "app\x00", "billing")
	f.Fuzz(func(t *testing.T, mask []byte, cut uint16, ck, cv string) {
		ct := mutate(enc.Ciphertext, mask, cut)
		var ec kms.EncryptionContext
		if ck != "" {
			ec = kms.EncryptionContext{ck: cv}
		}
		res, err := b.KMS.Decrypt(ctx, alice, kms.DecryptParams{Ciphertext: ct, Context: ec})
		if bytes.Equal(ct, enc.Ciphertext) && ck == "app" && cv == "billing" {
			if err != nil || !bytes.Equal(res.Plaintext, pt) {
				t.Fatalf("the genuine ciphertext did not decrypt: %v", err)
			}
			return
		}
		switch {
		case err == nil:
			t.Fatalf("decrypted a changed ciphertext or context (%x, %q=%q)", ct, ck, cv)
		case kms.CodeOf(err) == kms.CodeValidation && oddContext(ck, cv):
		case !errors.Is(err, kms.ErrInvalidCiphertext) || kms.PublicMessage(err) != want:
			t.Fatalf("refusal %s %q, want the one decryption error %q", kms.CodeOf(err), kms.PublicMessage(err), want)
		}
	})
}

// FuzzImportKeyMaterial: for every wrapping algorithm, the genuine import
// token with the genuine wrapped material imports; a changed token is the
// one InvalidImportToken error, and changed wrapped material (of a
// permitted size) the one InvalidCiphertext error: an import is no
// padding oracle.
func FuzzImportKeyMaterial(f *testing.F) {
	ctx := context.Background()
	b := testbed.New(f)
	algs := kms.WrappingAlgorithms()
	type fixture struct {
		key     *kms.Key
		token   []byte
		wrapped []byte
	}
	var fx []fixture
	for _, alg := range algs {
		k, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Origin: kms.OriginExternal})
		if err != nil {
			f.Fatal(err)
		}
		p, err := b.KMS.GetParametersForImport(ctx, alice, kms.GetImportParamsParams{KeyRef: k.ID, Algorithm: alg})
		if err != nil {
			f.Fatal(err)
		}
		material := make([]byte, 32)
		rand.Read(material)
		fx = append(fx, fixture{k, p.ImportToken, customerWrap(f, p, material)})
	}
	// The messages of the two refusals, from a first try of each.
	_, tokErr := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: fx[0].key.ID, ImportToken: []byte("KFIT"), WrappedMaterial: fx[0].wrapped})
	_, wrapErr := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: fx[0].key.ID, ImportToken: fx[0].token, WrappedMaterial: []byte("x")})
	if kms.CodeOf(tokErr) != kms.CodeInvalidImportToken || kms.CodeOf(wrapErr) != kms.CodeInvalidCiphertext {
		f.Fatalf("reference refusals: %v; %v", tokErr, wrapErr)
	}
	for i := range algs {
		a := byte(i)
		fuzzseed.Add(f, a, []byte(nil), uint16(0), []byte(nil), uint16(0))
		fuzzseed.Add(f, a, flipAt(4), uint16(0), []byte(nil), uint16(0))   // token version byte
		fuzzseed.Add(f, a, flipAt(10), uint16(0), []byte(nil), uint16(0))  // token payload
		fuzzseed.Add(f, a, []byte(nil), uint16(1), []byte(nil), uint16(0)) // token MAC cut
		fuzzseed.Add(f, a, []byte(nil), uint16(0), flipAt(0), uint16(0))
		fuzzseed.Add(f, a, []byte(nil), uint16(0), flipAt(300), uint16(0))
		fuzzseed.Add(f, a, []byte(nil), uint16(0), flipAt(len(fx[i].wrapped)-1), uint16(0))
		fuzzseed.Add(f, a, []byte(nil), uint16(0), []byte(nil), uint16(1))
		fuzzseed.Add(f, a, []byte(nil), uint16(0), []byte(nil), uint16(8))
		fuzzseed.Add(f, a, []byte(nil), uint16(0), make([]byte, len(fx[i].wrapped)+8), uint16(0))
	}
	f.Fuzz(func(t *testing.T, alg byte, tokMask []byte, tokCut uint16, wrapMask []byte, wrapCut uint16) {
		x := fx[int(alg)%len(fx)]
		tok, wrapped := mutate(x.token, tokMask, tokCut), mutate(x.wrapped, wrapMask, wrapCut)
		_, err := b.KMS.ImportKeyMaterial(ctx, alice, kms.ImportParams{KeyRef: x.key.ID, ImportToken: tok, WrappedMaterial: wrapped})
		tokSame, wrapSame := bytes.Equal(tok, x.token), bytes.Equal(wrapped, x.wrapped)
		switch {
		case tokSame && wrapSame:
			if err != nil {
				t.Fatalf("the genuine import failed: %v", err)
			}
		case err == nil:
			t.Fatalf("imported with a changed token (%v) or wrapped material (%v)", !tokSame, !wrapSame)
		case len(wrapped) == 0 || len(wrapped) > 8192:
			if kms.CodeOf(err) != kms.CodeValidation {
				t.Fatalf("%d bytes of wrapped material: %v", len(wrapped), err)
			}
		case !tokSame:
			if kms.CodeOf(err) != kms.CodeInvalidImportToken || kms.PublicMessage(err) != kms.PublicMessage(tokErr) {
				t.Fatalf("changed token: %s %q, want the one invalid-token error", kms.CodeOf(err), kms.PublicMessage(err))
			}
		default:
			if kms.CodeOf(err) != kms.CodeInvalidCiphertext || kms.PublicMessage(err) != kms.PublicMessage(wrapErr) {
				t.Fatalf("changed wrapped material: %s %q, want the one wrapped-material error", kms.CodeOf(err), kms.PublicMessage(err))
			}
		}
	})
}

// FuzzRestoreBackup: the genuine backup file restores; a changed file is
// refused before anything is written, as "not a backup file", as made
// under another root key, or with the one integrity error.
func FuzzRestoreBackup(f *testing.F) {
	ctx := context.Background()
	b := testbed.New(f)
	for _, alias := range []string{"app", "billing"} {
		if _, err := b.KMS.CreateKey(ctx, alice, kms.CreateKeyParams{Alias: alias}); err != nil {
			f.Fatal(err)
		}
	}
	bk, err := b.KMS.CreateBackup(ctx, alice)
	if err != nil {
		f.Fatal(err)
	}
	file := bk.File
	_, corrupt := b.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: append(bytes.Clone(file), 0), Overwrite: true})
	if kms.CodeOf(corrupt) != kms.CodeInvalidCiphertext {
		f.Fatalf("reference refusal: %v", corrupt)
	}
	hdrEnd := bytes.Index(file, []byte("}")) + 1
	fuzzseed.Add(f, []byte(nil), uint16(0))
	for _, i := range []int{0, 8, 9, 12, 14, 30, hdrEnd - 2, hdrEnd, hdrEnd + 3, hdrEnd + 4, hdrEnd + 16, len(file) - 17, len(file) - 1} {
		fuzzseed.Add(f, flipAt(i), uint16(0))
	}
	for _, cut := range []int{1, 16, len(file) - hdrEnd, len(file) - hdrEnd - 4} {
		fuzzseed.Add(f, []byte(nil), uint16(cut))
	}
	fuzzseed.Add(f, make([]byte, len(file)+4), uint16(0))
	f.Fuzz(func(t *testing.T, mask []byte, cut uint16) {
		in := mutate(file, mask, cut)
		_, err := b.KMS.RestoreBackup(ctx, alice, kms.RestoreBackupParams{File: in, Overwrite: true})
		if bytes.Equal(in, file) {
			if err != nil {
				t.Fatalf("the genuine backup did not restore: %v", err)
			}
			return
		}
		switch kms.CodeOf(err) {
		case kms.CodeValidation, kms.CodeInvalidState:
		case kms.CodeInvalidCiphertext:
			if kms.PublicMessage(err) != kms.PublicMessage(corrupt) {
				t.Fatalf("integrity refusal %q is not the one backup integrity error", kms.PublicMessage(err))
			}
		default:
			t.Fatalf("changed backup: %v (code %q)", err, kms.CodeOf(err))
		}
	})
}
