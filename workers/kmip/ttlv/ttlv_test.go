package ttlv_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// vectors re-encode the requests of the OASIS KMIP 1.x Baseline Server
// test cases (BL-M-1 .. BL-M-13: create, register, get, locate, activate,
// revoke, destroy, get attributes, query, discover versions) with this
// package's encoder; they are the fuzz seeds (testdata/fuzz/FuzzDecode).
func vectors() map[string][]byte {
	req := func(minor int32, op uint32, payload ...ttlv.Item) []byte {
		return ttlv.Encode(ttlv.Struct(0x420078,
			ttlv.Struct(0x420077, ttlv.Struct(0x420069, ttlv.Int(0x42006A, 1), ttlv.Int(0x42006B, minor)), ttlv.Int(0x42000D, 1)),
			ttlv.Struct(0x42000F, ttlv.Enum(0x42005C, op), ttlv.Struct(0x420079, payload...))))
	}
	attr := func(name string, v ttlv.Item) ttlv.Item {
		v.Tag = 0x42000B
		return ttlv.Struct(0x420008, ttlv.Text(0x42000A, name), v)
	}
	uid := ttlv.Text(0x420094, "1f165d65-cbbd-4bd6-9867-80e0b390acf9")
	name := attr("Name", ttlv.Struct(0, ttlv.Text(0x420055, "BL-M-1-14"), ttlv.Enum(0x420054, 1)))
	return map[string][]byte{
		"create": req(4, 0x01, ttlv.Enum(0x420057, 2), ttlv.Struct(0x420091,
			attr("Cryptographic Algorithm", ttlv.Enum(0, 3)), attr("Cryptographic Length", ttlv.Int(0, 256)),
			attr("Cryptographic Usage Mask", ttlv.Int(0, 12)), name)),
		"register_secret": req(3, 0x03, ttlv.Enum(0x420057, 7), ttlv.Struct(0x420091),
			ttlv.Struct(0x420085, ttlv.Enum(0x420086, 1), ttlv.Struct(0x420040, ttlv.Enum(0x420042, 2),
				ttlv.Struct(0x420045, ttlv.Bytes(0x420043, []byte("53656372657450617373776f7264")))))),
		"get":            req(4, 0x0A, uid),
		"locate":         req(3, 0x08, ttlv.Int(0x42004F, 1), ttlv.Int(0x4200D4, 0), name, attr("Object Type", ttlv.Enum(0, 2))),
		"activate":       req(4, 0x12, uid),
		"revoke":         req(4, 0x13, uid, ttlv.Struct(0x420081, ttlv.Enum(0x420082, 2)), ttlv.DateTime(0x420021, time.Unix(6, 0))),
		"destroy":        req(0, 0x14, uid),
		"get_attributes": req(1, 0x0B, uid, ttlv.Text(0x42000A, "State"), ttlv.Text(0x42000A, "Cryptographic Length")),
		"query":          req(2, 0x18, ttlv.Enum(0x420074, 1), ttlv.Enum(0x420074, 2)),
		"discover":       req(4, 0x1E, ttlv.Struct(0x420069, ttlv.Int(0x42006A, 1), ttlv.Int(0x42006B, 4))),
		"encrypt":        req(2, 0x1F, uid, ttlv.Bytes(0x4200C2, []byte("01020304050607080910111213141516"))),
		"bool_long_big":  ttlv.Encode(ttlv.Struct(0x420078, ttlv.Bool(0x420008, true), ttlv.Long(0x420009, -1), ttlv.Item{Tag: 0x42000A, Type: ttlv.TypeBigInteger, Bytes: make([]byte, 16)}, ttlv.Item{Tag: 0x42000B, Type: ttlv.TypeInterval, Int: 10})),
	}
}

// TestWriteSeeds refreshes the committed fuzz seeds (KMIP_WRITE_SEEDS=1).
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("KMIP_WRITE_SEEDS") == "" {
		t.Skip("set KMIP_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	for name, b := range vectors() {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzDecode", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for name, b := range vectors() {
		it, err := ttlv.Decode(b, ttlv.DefaultLimits)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := ttlv.Encode(it); !bytes.Equal(got, b) {
			t.Errorf("%s: re-encoding differs", name)
		}
	}
}

func TestLimits(t *testing.T) {
	small := ttlv.Limits{MaxMessage: 1 << 10, MaxDepth: 3, MaxItems: 4}
	deep := ttlv.Encode(ttlv.Struct(1, ttlv.Struct(2, ttlv.Struct(3, ttlv.Struct(4)))))
	if _, err := ttlv.Decode(deep, small); !errors.Is(err, ttlv.ErrLimit) {
		t.Errorf("depth 4 with MaxDepth 3: %v", err)
	}
	wide := ttlv.Encode(ttlv.Struct(1, ttlv.Int(2, 1), ttlv.Int(2, 1), ttlv.Int(2, 1), ttlv.Int(2, 1)))
	if _, err := ttlv.Decode(wide, small); !errors.Is(err, ttlv.ErrLimit) {
		t.Errorf("5 items with MaxItems 4: %v", err)
	}
	if _, err := ttlv.MessageLen([]byte{0x42, 0, 0x78, 1, 0x7f, 0xff, 0xff, 0xf8}, small); !errors.Is(err, ttlv.ErrLimit) {
		t.Errorf("a 2 GiB declared length: %v", err)
	}
	bad := ttlv.Encode(ttlv.Struct(1, ttlv.Text(2, "abc")))
	bad[len(bad)-1] = 'x' // padding
	if _, err := ttlv.Decode(bad, ttlv.DefaultLimits); !errors.Is(err, ttlv.ErrMalformed) {
		t.Errorf("non-zero padding: %v", err)
	}
	boolTwo := ttlv.Encode(ttlv.Struct(1, ttlv.Item{Tag: 2, Type: ttlv.TypeBoolean, Int: 2}))
	if _, err := ttlv.Decode(boolTwo, ttlv.DefaultLimits); !errors.Is(err, ttlv.ErrMalformed) {
		t.Errorf("boolean 2: %v", err)
	}
}

// FuzzDecode: the decoder never panics, never exceeds its limits, and
// whatever it accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, b := range vectors() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := ttlv.Decode(b, ttlv.DefaultLimits)
		if err != nil {
			if !errors.Is(err, ttlv.ErrLimit) && !errors.Is(err, ttlv.ErrMalformed) {
				t.Fatalf("an error of neither kind: %v", err)
			}
			return
		}
		if got := ttlv.Encode(it); !bytes.Equal(got, b) {
			t.Fatalf("accepted bytes do not re-encode identically")
		}
	})
}
