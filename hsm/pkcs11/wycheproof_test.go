//go:build cgo

package pkcs11_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyflow/keyflow/hsm"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
)

// wycheproofModule holds the C2SP Wycheproof vectors. Tests fetch it with
// the go command into the module cache, as Go's own crypto tests do,
// rather than vendoring megabytes of JSON.
const wycheproofModule = "github.com/c2sp/wycheproof@v0.0.0-20260902155932-3fa63dd0344a"

var wycheproof struct {
	once sync.Once
	dir  string
	err  error
}

// wycheproofFile returns the path of a file in testvectors_v1, or skips
// the test if the module cannot be had.
func wycheproofFile(t *testing.T, name string) string {
	t.Helper()
	wycheproof.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			wycheproof.err = err
			return
		}
		out, err := exec.Command(goTool, "mod", "download", "-json", wycheproofModule).Output()
		var info struct{ Dir, Error string }
		if jerr := json.Unmarshal(out, &info); err == nil && jerr != nil {
			err = jerr
		}
		switch {
		case err != nil:
			wycheproof.err = err
		case info.Error != "":
			wycheproof.err = errors.New(info.Error)
		default:
			wycheproof.dir = filepath.Join(info.Dir, "testvectors_v1")
		}
	})
	if wycheproof.err != nil {
		t.Skipf("Wycheproof vectors unavailable: go mod download %s: %v", wycheproofModule, wycheproof.err)
	}
	return filepath.Join(wycheproof.dir, name)
}

func loadJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("failed to parse %s: %v", path, err)
	}
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	*h = v
	return err
}

// TestWycheproofAESGCM runs the AES-GCM vectors that keyflow can meet:
// 12-byte IVs and 16-byte tags. Keys are imported, since a known answer
// needs a known key.
func TestWycheproofAESGCM(t *testing.T) {
	var file struct {
		TestGroups []struct {
			IVSize  int `json:"ivSize"`
			KeySize int `json:"keySize"`
			TagSize int `json:"tagSize"`
			Tests   []struct {
				TcID   int `json:"tcId"`
				Key    hexBytes
				IV     hexBytes
				AAD    hexBytes
				Msg    hexBytes
				CT     hexBytes
				Tag    hexBytes
				Result string
			}
		}
	}
	loadJSON(t, wycheproofFile(t, "aes_gcm_test.json"), &file)
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()

	keys := map[string]hsm.KeyHandle{}
	var valid, invalid int
	for _, g := range file.TestGroups {
		if g.IVSize != 8*hsm.GCMIVSize || g.TagSize != 8*hsm.GCMTagSize {
			continue
		}
		if g.KeySize != 128 && g.KeySize != 192 && g.KeySize != 256 {
			continue
		}
		for _, tc := range g.Tests {
			k, ok := keys[string(tc.Key)]
			if !ok {
				var err error
				if k, err = tok.ImportAESKeyForTesting(ctx, tc.Key, false); err != nil {
					t.Fatalf("tcId %d: %v", tc.TcID, err)
				}
				keys[string(tc.Key)] = k
			}
			sealed := append(bytes.Clone(tc.CT), tc.Tag...)
			switch tc.Result {
			case "valid":
				valid++
				ct, err := tok.EncryptGCM(ctx, k, tc.IV, tc.Msg, tc.AAD)
				if err != nil || !bytes.Equal(ct, sealed) {
					t.Errorf("tcId %d: EncryptGCM = %x, %v; want %x", tc.TcID, ct, err, sealed)
				}
				pt, err := tok.DecryptGCM(ctx, k, tc.IV, sealed, tc.AAD)
				if err != nil || !bytes.Equal(pt, tc.Msg) {
					t.Errorf("tcId %d: DecryptGCM = %x, %v; want %x", tc.TcID, pt, err, tc.Msg)
				}
			case "invalid":
				invalid++
				pt, err := tok.DecryptGCM(ctx, k, tc.IV, sealed, tc.AAD)
				if !errors.Is(err, hsm.ErrAuthFailed) || pt != nil {
					t.Errorf("tcId %d: DecryptGCM of an invalid vector = %x, %v; want ErrAuthFailed", tc.TcID, pt, err)
				}
			default:
				t.Fatalf("tcId %d: unexpected result %q", tc.TcID, tc.Result)
			}
		}
	}
	t.Logf("ran %d Wycheproof AES-GCM vectors through the HSM: %d valid, %d invalid", valid+invalid, valid, invalid)
	if valid == 0 || invalid == 0 {
		t.Fatalf("ran %d valid and %d invalid vectors; want some of each", valid, invalid)
	}
}

// TestWycheproofAESKWP runs the AES-KWP (RFC 5649) vectors through
// UnwrapAESKey. An unwrapped key cannot be read back, so each is checked
// by what it does: it must encrypt exactly as the expected key does in
// Go's crypto/aes. Valid vectors that wrap something other than an AES
// key must be refused, and so must every invalid one.
func TestWycheproofAESKWP(t *testing.T) {
	var file struct {
		TestGroups []struct {
			KeySize int `json:"keySize"`
			Tests   []struct {
				TcID   int `json:"tcId"`
				Key    hexBytes
				Msg    hexBytes
				CT     hexBytes
				Result string
				Flags  []string
			}
		}
	}
	loadJSON(t, wycheproofFile(t, "aes_kwp_test.json"), &file)
	tok := pkcs11test.NewToken(t)
	ctx := t.Context()

	nonce := []byte("wycheproof12")
	probe := []byte("known block, encrypted by both")
	var unwrapped, notAES, invalid int
	for _, g := range file.TestGroups {
		for _, tc := range g.Tests {
			kek, err := tok.ImportAESKeyForTesting(ctx, tc.Key, false)
			if err != nil {
				t.Fatalf("tcId %d: %v", tc.TcID, err)
			}
			k, err := tok.UnwrapAESKey(ctx, kek, tc.CT)
			isAES := len(tc.Msg) == 16 || len(tc.Msg) == 24 || len(tc.Msg) == 32
			switch {
			case tc.Result == "valid" && isAES:
				unwrapped++
				if err != nil {
					t.Errorf("tcId %d: UnwrapAESKey of a valid %d-byte key: %v", tc.TcID, len(tc.Msg), err)
					break
				}
				got, err := tok.EncryptGCM(ctx, k, nonce, probe, nil)
				if err != nil {
					t.Fatalf("tcId %d: EncryptGCM under the unwrapped key: %v", tc.TcID, err)
				}
				if want := goSeal(t, tc.Msg, nonce, probe); !bytes.Equal(got, want) {
					t.Errorf("tcId %d: the unwrapped key encrypts to %x, the expected key to %x", tc.TcID, got, want)
				}
				checkWrap(t, tok, tc.TcID, kek, tc.Msg, tc.CT)
			case tc.Result == "valid":
				notAES++
				// It authenticates, so the refusal is about what it holds.
				if !errors.Is(err, hsm.ErrInvalidInput) {
					t.Errorf("tcId %d: UnwrapAESKey of a wrapped %d-byte value = %v; want ErrInvalidInput", tc.TcID, len(tc.Msg), err)
				}
			default:
				invalid++
				if !errors.Is(err, hsm.ErrAuthFailed) && !errors.Is(err, hsm.ErrInvalidInput) {
					t.Errorf("tcId %d (%v): UnwrapAESKey of an invalid blob = %v; want ErrAuthFailed or ErrInvalidInput", tc.TcID, tc.Flags, err)
				}
			}
			if err == nil {
				_ = tok.DestroyKey(ctx, k)
			}
			_ = tok.DestroyKey(ctx, kek)
		}
	}
	t.Logf("ran %d Wycheproof AES-KWP vectors through the HSM: %d valid AES keys unwrapped and checked, %d valid non-AES lengths refused, %d invalid refused",
		unwrapped+notAES+invalid, unwrapped, notAES, invalid)
	if unwrapped == 0 || invalid == 0 {
		t.Fatalf("ran %d unwrap and %d invalid vectors; want some of each", unwrapped, invalid)
	}
}

// checkWrap checks the other direction: KWP is deterministic, so wrapping
// the expected key under the KEK must give the vector's blob.
func checkWrap(t *testing.T, tok *pkcs11.Token, id int, kek hsm.KeyHandle, key, want []byte) {
	t.Helper()
	ctx := t.Context()
	k, err := tok.ImportAESKeyForTesting(ctx, key, true)
	if err != nil {
		t.Fatalf("tcId %d: %v", id, err)
	}
	defer tok.DestroyKey(ctx, k)
	got, err := tok.WrapKey(ctx, kek, k)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("tcId %d: WrapKey = %x, %v; want %x", id, got, err, want)
	}
}

func goSeal(t *testing.T, key, nonce, pt []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead.Seal(nil, nonce, pt, nil)
}
