package kmip_test

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/schemas"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// hdr is an item header.
func hdr(tag uint32, typ byte, n uint32) []byte {
	b := []byte{byte(tag >> 16), byte(tag >> 8), byte(tag), typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], n)
	return b
}

// nestingBomb is a message of depth structures inside each other.
func nestingBomb(depth int) []byte {
	b := []byte{}
	for i := depth - 1; i >= 0; i-- {
		b = append(hdr(0x420078, 0x01, uint32(len(b))), b...)
	}
	return b
}

// TestBadInput sends broken messages: each gets an Invalid Message
// response or a closed connection, the server's memory stays bounded, and
// the server keeps serving.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	tc := f.principal(t, "alpha", "app")
	good := ttlv.Encode(request([2]int32{1, 4}, batch(opQuery, ttlv.Enum(tQueryFunction, 3))))

	wrongLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(wrongLen[4:], uint32(len(good))) // 8 bytes longer than it is
	innerWrong := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(innerWrong[12:], 0xFFFF) // the request header claims 64 KiB
	badType := append(hdr(0x420078, 0x01, 16), hdr(0x420077, 0x0B, 0)...)
	badType = append(badType, make([]byte, 8)...)
	shortInt := append(hdr(0x420078, 0x01, 16), hdr(0x42000D, 0x02, 3)...)
	shortInt = append(shortInt, 0, 0, 1, 0, 0, 0, 0, 0)
	unknownTags := ttlv.Encode(ttlv.Struct(0x54FFFF, ttlv.Int(0x54FFFE, 1)))
	v2 := ttlv.Encode(request([2]int32{2, 0}, batch(opQuery)))
	noItems := ttlv.Encode(request([2]int32{1, 4}))

	cases := []struct {
		name  string
		msg   []byte
		close bool // the server answers and closes
	}{
		{"huge declared length", hdr(0x420078, 0x01, 0xFFFFFFF8), true},
		{"length not a multiple of 8", hdr(0x420078, 0x01, 13), true},
		{"not a structure", hdr(0x420078, 0x07, 8), true},
		{"outer length too long", wrongLen, false}, // the server waits for the rest: the test stops waiting
		{"inner length too long", innerWrong, true},
		{"unknown type", badType, true},
		{"integer of 3 bytes", shortInt, true},
		{"nesting bomb", nestingBomb(4000), true},
		{"unknown tags", unknownTags, false},
		{"KMIP 2.0", v2, false},
		{"no batch items", noItems, false},
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, tc2 := range cases {
		t.Run(tc2.name, func(t *testing.T) {
			c := f.dial(t, tc)
			if tc2.name == "outer length too long" {
				_ = c.conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
				_, _ = c.conn.Write(tc2.msg)
				buf := make([]byte, 1)
				if _, err := c.conn.Read(buf); err == nil {
					t.Error("the server answered a message it had not fully received")
				}
				return
			}
			resp, err := c.raw(tc2.msg)
			if err != nil {
				t.Fatalf("no KMIP error response: %v", err)
			}
			if r := firstResult(t, resp); r.ok() || r.reason != reasonInvalidMessage {
				t.Errorf("got %v, want Invalid Message", r)
			}
			if tc2.close {
				_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.raw(good); err == nil {
					t.Error("the connection stayed open after a malformed message")
				}
			}
		})
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<20 {
		t.Errorf("the heap grew by %d MiB over the bad messages", grown>>20)
	}
	// Still up, and every refusal is on the record.
	c := f.dial(t, tc)
	c.must(opQuery, ttlv.Enum(tQueryFunction, 3))
	rejected := f.bed.EventsOfType("alpha", events.TypeRequestRejected)
	if len(rejected) < 7 {
		t.Errorf("%d request.rejected records for the malformed messages", len(rejected))
	}
	for _, e := range rejected {
		if err := schemas.ValidateEvent(e.Raw); err != nil {
			t.Error(err)
		}
	}
}

// TestClientCertificateRequired: no certificate, or one from another CA,
// fails the handshake.
func TestClientCertificateRequired(t *testing.T) {
	f := newFixture(t)
	tc := f.principal(t, "alpha", "app")
	noCert := tc.Clone()
	noCert.Certificates = nil
	c := f.dial(t, noCert)
	if _, err := c.raw(ttlv.Encode(request([2]int32{1, 4}, batch(opQuery)))); err == nil {
		t.Error("a client without a certificate was served")
	}
	// A certificate from the right CA for a principal the directory does
	// not know.
	dir := t.TempDir()
	cert, key, err := f.ca.IssueClient(dir, "ghost", "alpha", "ghost", false)
	if err != nil {
		t.Fatal(err)
	}
	ghost, err := f.ca.ClientTLS(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	c = f.dial(t, ghost)
	if _, err := c.raw(ttlv.Encode(request([2]int32{1, 4}, batch(opQuery)))); err == nil {
		t.Error("a certificate for an unknown principal was served")
	}
	// A certificate from another CA.
	f2 := newFixture(t)
	stranger := f2.principal(t, "alpha", "stranger")
	stranger.RootCAs = tc.RootCAs
	c = f.dial(t, stranger)
	if _, err := c.raw(ttlv.Encode(request([2]int32{1, 4}, batch(opQuery)))); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
}
