package chain

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/pqc"
)

// softKeys is a sealer key pair held in memory (the real sealer signs with
// HSM-wrapped KMS keys; the chain package only sees signatures).
type softKeys struct {
	edPriv  ed25519.PrivateKey
	mlPriv  []byte
	ed, ml  PublicKey
	version uint32
}

func newSoftKeys(t testing.TB, idPrefix string) *softKeys {
	t.Helper()
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKIXPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pqc.SignerByName(SpecMLDSA65)
	if err != nil {
		t.Fatal(err)
	}
	mlPub, mlPriv, err := s.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	mlDER, err := pqc.PublicKeyDER(SpecMLDSA65, mlPub)
	if err != nil {
		t.Fatal(err)
	}
	return &softKeys{
		edPriv: edPriv, mlPriv: mlPriv,
		ed: PublicKey{KeyID: idPrefix + "-ed", KeyVersion: 1, KeySpec: SpecEd25519, PublicKey: edDER},
		ml: PublicKey{KeyID: idPrefix + "-ml", KeyVersion: 1, KeySpec: SpecMLDSA65, PublicKey: mlDER},
	}
}

func (k *softKeys) public() []PublicKey { return []PublicKey{k.ed, k.ml} }

func (k *softKeys) identities() []Signature { return []Signature{k.ed.Identity(), k.ml.Identity()} }

// sign fills in d's signatures (whose headers must already be set).
func (k *softKeys) sign(t testing.TB, d *Digest) {
	t.Helper()
	msg := d.SignedMessage()
	s, _ := pqc.SignerByName(SpecMLDSA65)
	for i := range d.Signatures {
		switch d.Signatures[i].KeySpec {
		case SpecEd25519:
			d.Signatures[i].Signature = ed25519.Sign(k.edPriv, msg)
		case SpecMLDSA65:
			sig, err := s.Sign(k.mlPriv, msg, pqc.SignOptions{Context: MLDSAContext, Randomized: true})
			if err != nil {
				t.Fatal(err)
			}
			d.Signatures[i].Signature = sig
		}
	}
}

type rec struct {
	seq  uint64
	body []byte
}

// event returns a realistic stored CloudEvent body.
func event(t testing.TB, i int) []byte {
	t.Helper()
	e, err := events.Record{
		Type: events.TypeEncrypt, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeSuccess,
		Subject: "kf:alpha:key/0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11", RequestID: fmt.Sprintf("req-%d", i),
		Source: "/keyflow/worker/test", Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32, "algorithm": "SYMMETRIC_DEFAULT"},
	}.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sealed builds n records sealed every `every`, then `tail` unsealed
// records.
func sealed(t testing.TB, k *softKeys, n, every, tail int) ([]rec, []*Digest) {
	t.Helper()
	b := NewBuilder("KF_AUDIT", nil)
	var recs []rec
	var ds []*Digest
	for i := 1; i <= n+tail; i++ {
		r := rec{uint64(i), event(t, i)}
		recs = append(recs, r)
		if _, err := b.Add(r.seq, r.body); err != nil {
			t.Fatal(err)
		}
		if i <= n && (b.Len() == every || i == n) {
			d := b.Digest(time.Now(), k.identities())
			k.sign(t, d)
			if err := b.Commit(d); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	return recs, ds
}

func verify(t testing.TB, opts Options, ds []*Digest, recs []rec) *Report {
	t.Helper()
	v, err := NewVerifier(opts, ds)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		v.Add(r.seq, r.body)
	}
	return v.Finish()
}

func wantFirst(t *testing.T, r *Report, seq uint64, kind Kind) {
	t.Helper()
	f := r.First()
	if f == nil {
		t.Fatalf("verification passed; want %s at seq %d", kind, seq)
	}
	if f.Seq != seq || f.Kind != kind {
		t.Fatalf("first finding %v; want %s at seq %d (all: %v)", f, kind, seq, r.Findings)
	}
	t.Logf("detected: %v", f)
}

func TestHashDefinition(t *testing.T) {
	// h_n = SHA-256(h_{n-1} ‖ seq_be64 ‖ body), h_0 = 0, leaf = SHA-256(seq_be64 ‖ body).
	body := []byte(`{"id":"x"}`)
	seq := []byte{0, 0, 0, 0, 0, 0, 0, 7}
	wantLeaf := sha256Sum(append(append([]byte{}, seq...), body...))
	if got := Leaf(7, body); got != wantLeaf {
		t.Fatalf("leaf %s, want %s", got, wantLeaf)
	}
	var zero Hash
	wantHead := sha256Sum(append(append(append([]byte{}, zero[:]...), seq...), body...))
	if got := Next(zero, 7, body); got != wantHead {
		t.Fatalf("head %s, want %s", got, wantHead)
	}
}

func TestParseFields(t *testing.T) {
	for _, body := range []string{
		`{"specversion":"1.0","id":"abc","data":{"id":"inner","tenant":"no"},"tenant":"alpha","principal":"bob"}`,
		`{ "data" : [ {"id":"x"}, "}" , 1e5 ], "id" : "abc" , "tenant":"alpha","principal":"bob"}`,
		`{"id":"a\"b","tenant":"alpha","principal":"b\u006fb"}`,
		`{"tenant":"alpha"}`,
		`not json`,
		`{"id":5,"tenant":"alpha"}`,
	} {
		var want EventFields
		_ = json.Unmarshal([]byte(body), &want)
		if got := ParseFields([]byte(body)); got != want {
			t.Errorf("ParseFields(%s) = %+v, want %+v", body, got, want)
		}
	}
}

func TestCleanChainVerifies(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 2500, 1000, 7)
	r := verify(t, Options{Keys: k.public(), Stream: "KF_AUDIT"}, ds, recs)
	if !r.OK() {
		t.Fatalf("clean chain has findings: %v", r.Findings)
	}
	if r.Verified != 2500 || r.Digests != 3 || r.Unsealed != 7 || r.UnsealedFrom != 2501 {
		t.Fatalf("report %+v", r)
	}
}

func TestModifiedRecord(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 2500, 1000, 0)
	recs[1233].body = bytes.Replace(recs[1233].body, []byte(`"plaintextBytes":32`), []byte(`"plaintextBytes":33`), 1)
	wantFirst(t, verify(t, Options{Keys: k.public()}, ds, recs), 1234, KindModified)
}

func TestDeletedRecord(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 2500, 1000, 0)
	for _, i := range []int{0, 999, 1500, 2499} { // first, last of a digest, middle, very last
		cut := append(append([]rec{}, recs[:i]...), recs[i+1:]...)
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, cut), uint64(i+1), KindDeleted)
	}
}

func TestDeletedAndRepublishedIsModified(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 1500, 1000, 0)
	altered := bytes.Replace(recs[99].body, []byte(`"plaintextBytes":32`), []byte(`"plaintextBytes":0`), 1)
	cut := append(append([]rec{}, recs[:99]...), recs[100:]...)
	cut = append(cut, rec{1501, altered})
	r := verify(t, Options{Keys: k.public()}, ds, cut)
	wantFirst(t, r, 100, KindModified)
	if !strings.Contains(r.First().Detail, "1501") {
		t.Fatalf("detail does not name the copy: %s", r.First().Detail)
	}
}

func TestReorderedRecord(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 2500, 1000, 0)
	t.Run("swapped lines", func(t *testing.T) {
		sw := append([]rec{}, recs...)
		sw[1499], sw[1500] = sw[1500], sw[1499]
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, sw), 1500, KindReordered)
	})
	t.Run("moved across digests", func(t *testing.T) {
		mv := append(append([]rec{}, recs[:998]...), recs[999:1010]...)
		mv = append(mv, recs[998])
		mv = append(mv, recs[1010:]...)
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, mv), 999, KindReordered)
	})
	t.Run("swapped bodies", func(t *testing.T) {
		sb := append([]rec{}, recs...)
		sb[9].body, sb[10].body = recs[10].body, recs[9].body
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, sb), 10, KindReordered)
	})
	t.Run("duplicate", func(t *testing.T) {
		dup := append(append([]rec{}, recs[:50]...), recs[49:]...)
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, dup), 50, KindReordered)
	})
}

func cloneDigests(ds []*Digest) []*Digest {
	out := make([]*Digest, len(ds))
	for i, d := range ds {
		c := *d
		c.Signatures = append([]Signature(nil), d.Signatures...)
		for j := range c.Signatures {
			c.Signatures[j].Signature = bytes.Clone(d.Signatures[j].Signature)
		}
		out[i] = &c
	}
	return out
}

func TestForgedDigest(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	attacker := newSoftKeys(t, "attacker")
	recs, ds := sealed(t, k, 3000, 1000, 0)
	opts := Options{Keys: k.public()}

	t.Run("altered head re-signed with attacker keys", func(t *testing.T) {
		f := cloneDigests(ds)
		f[1].HeadHash[0] ^= 1
		f[1].Signatures = attacker.identities()
		attacker.sign(t, f[1])
		wantFirst(t, verify(t, opts, f, recs), 1001, KindForgedDigest)
	})
	t.Run("attacker keys under the sealer's key IDs", func(t *testing.T) {
		f := cloneDigests(ds)
		f[1].HeadHash[0] ^= 1
		ids := attacker.identities()
		ids[0].KeyID, ids[1].KeyID = k.ed.KeyID, k.ml.KeyID
		f[1].Signatures = ids
		attacker.sign(t, f[1])
		wantFirst(t, verify(t, opts, f, recs), 1001, KindForgedDigest)
	})
	t.Run("altered head, old signatures", func(t *testing.T) {
		f := cloneDigests(ds)
		f[2].HeadHash[5] ^= 0x80
		wantFirst(t, verify(t, opts, f, recs), 2001, KindForgedDigest)
	})
	for i, name := range []string{"Ed25519", "ML-DSA-65"} {
		t.Run("bit-flipped "+name+" signature", func(t *testing.T) {
			f := cloneDigests(ds)
			f[0].Signatures[i].Signature[10] ^= 1
			wantFirst(t, verify(t, opts, f, recs), 1, KindForgedDigest)
		})
		t.Run("only one signature, "+name+" dropped", func(t *testing.T) {
			f := cloneDigests(ds)
			f[1].Signatures = append(f[1].Signatures[:i:i], f[1].Signatures[i+1:]...)
			wantFirst(t, verify(t, opts, f, recs), 1001, KindForgedDigest)
		})
	}
	t.Run("one signature swapped for the attacker's", func(t *testing.T) {
		f := cloneDigests(ds)
		ids := f[1].Signatures
		ids[1] = attacker.ml.Identity()
		k2 := *k
		k2.mlPriv = attacker.mlPriv
		k2.sign(t, f[1])
		wantFirst(t, verify(t, opts, f, recs), 1001, KindForgedDigest)
	})
	t.Run("digest removed", func(t *testing.T) {
		f := append(cloneDigests(ds[:1]), cloneDigests(ds[2:])...)
		// Records 1001-2000 become the "unsealed"? No: digest 3 names a hole.
		wantFirst(t, verify(t, opts, f, recs), 2001, KindForgedDigest)
	})
	t.Run("leaves rewritten to match a modified record", func(t *testing.T) {
		f := cloneDigests(ds)
		mod := append([]rec{}, recs...)
		mod[0].body = bytes.Replace(mod[0].body, []byte(`"alpha"`), []byte(`"omega"`), 1)
		l := Leaf(1, mod[0].body)
		f[0].Leaves = bytes.Clone(f[0].Leaves)
		copy(f[0].Leaves, l[:])
		wantFirst(t, verify(t, opts, f, mod), 1, KindForgedDigest)
	})
}

func TestVerifyFromDigestBoundary(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 3000, 1000, 3)
	t.Run("boundary", func(t *testing.T) {
		r := verify(t, Options{Keys: k.public(), From: 1001}, ds, recs[1000:])
		if !r.OK() || r.Verified != 2000 {
			t.Fatalf("from a boundary: %+v", r)
		}
	})
	t.Run("mid-digest", func(t *testing.T) {
		r := verify(t, Options{Keys: k.public(), From: 1500}, ds, recs[1499:])
		if !r.OK() || r.Verified != 1501 {
			t.Fatalf("from mid-digest: %+v", r)
		}
	})
	t.Run("only later digests given", func(t *testing.T) {
		r := verify(t, Options{Keys: k.public()}, ds[1:], recs[1000:])
		if !r.OK() || r.Verified != 2000 || !strings.Contains(r.Anchor, "trusted by its signatures") {
			t.Fatalf("from a later digest: %+v", r)
		}
	})
	t.Run("to", func(t *testing.T) {
		r := verify(t, Options{Keys: k.public(), From: 1001, To: 1500}, ds, recs[1000:1500])
		if !r.OK() || r.Verified != 500 {
			t.Fatalf("to: %+v", r)
		}
	})
	t.Run("deleted after the start", func(t *testing.T) {
		cut := append(append([]rec{}, recs[1000:1200]...), recs[1201:]...)
		wantFirst(t, verify(t, Options{Keys: k.public(), From: 1001}, ds, cut), 1201, KindDeleted)
	})
	t.Run("without --from, purged records are deleted", func(t *testing.T) {
		wantFirst(t, verify(t, Options{Keys: k.public()}, ds, recs[1000:]), 1, KindDeleted)
	})
}

func TestSealerGapIsReported(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	b := NewBuilder("KF_AUDIT", nil)
	var recs []rec
	for i := 1; i <= 20; i++ {
		if i == 7 || i == 8 {
			continue // deleted before the sealer read them
		}
		r := rec{uint64(i), event(t, i)}
		recs = append(recs, r)
		if _, err := b.Add(r.seq, r.body); err != nil {
			t.Fatal(err)
		}
	}
	d := b.Digest(time.Now(), k.identities())
	k.sign(t, d)
	if d.Count != 18 || len(d.Gaps) != 1 || d.Gaps[0] != (SeqRange{7, 8}) {
		t.Fatalf("digest %d-%d count %d gaps %v", d.FromSeq, d.ToSeq, d.Count, d.Gaps)
	}
	wantFirst(t, verify(t, Options{Keys: k.public()}, []*Digest{d}, recs), 7, KindDeleted)
}

func TestBuilderCommitKeepsLaterRecords(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	b := NewBuilder("KF_AUDIT", nil)
	var recs []rec
	var ds []*Digest
	for i := 1; i <= 30; i++ {
		r := rec{uint64(i), event(t, i)}
		recs = append(recs, r)
		b.Add(r.seq, r.body)
		if i == 10 || i == 25 {
			d := b.Digest(time.Now(), k.identities())
			// Records keep arriving while the digest is signed.
			for j := i + 1; j <= i+3; j++ {
				r := rec{uint64(j), event(t, j)}
				recs = append(recs, r)
				b.Add(r.seq, r.body)
			}
			i += 3
			k.sign(t, d)
			if err := b.Commit(d); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	d := b.Digest(time.Now(), k.identities())
	k.sign(t, d)
	ds = append(ds, d)
	r := verify(t, Options{Keys: k.public()}, ds, recs)
	if !r.OK() || r.Verified != 30 || r.Digests != 3 {
		t.Fatalf("report %+v", r)
	}
}

func TestExportRoundTrip(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	recs, ds := sealed(t, k, 1200, 500, 2)
	recs = append(recs, rec{1203, []byte("{\"id\":\"odd\",\n\"x\":1}")}) // not single-line: base64
	var buf bytes.Buffer
	w := NewExportWriter(&buf)
	if err := w.Header(ExportHeader{Stream: "KF_AUDIT", FromSeq: 1, ExportedAt: time.Now(), Keys: k.public()}); err != nil {
		t.Fatal(err)
	}
	di := 0
	for _, r := range recs {
		w.Record(r.seq, r.body)
		if di < len(ds) && ds[di].ToSeq == r.seq {
			w.Digest(ds[di])
			di++
		}
	}
	w.Flush()

	var hdr *ExportHeader
	var gotDs []*Digest
	var gotRecs []rec
	err := ReadExport(bytes.NewReader(buf.Bytes()), ExportVisitor{
		Header: func(h *ExportHeader) error { hdr = h; return nil },
		Record: func(seq uint64, body []byte) error {
			gotRecs = append(gotRecs, rec{seq, bytes.Clone(body)})
			return nil
		},
		Digest: func(d *Digest) error { gotDs = append(gotDs, d); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if hdr == nil || len(hdr.Keys) != 2 || len(gotDs) != len(ds) || len(gotRecs) != len(recs) {
		t.Fatalf("read back header %v, %d digests, %d records", hdr, len(gotDs), len(gotRecs))
	}
	for i := range recs {
		if gotRecs[i].seq != recs[i].seq || !bytes.Equal(gotRecs[i].body, recs[i].body) {
			t.Fatalf("record %d changed in the round trip", recs[i].seq)
		}
	}
	r := verify(t, Options{Keys: hdr.Keys}, gotDs, gotRecs)
	if !r.OK() || r.Verified != 1200 || r.Unsealed != 3 {
		t.Fatalf("report %+v", r)
	}
}

func TestNeedsKeys(t *testing.T) {
	if _, err := NewVerifier(Options{}, nil); err == nil {
		t.Fatal("a verifier without trusted keys")
	}
}

// BenchmarkVerify measures record verification throughput: records/s
// against digests of 1000 (the digests' signatures are included).
func BenchmarkVerify(b *testing.B) {
	k := newSoftKeys(b, "sealer")
	const n = 100_000
	recs, ds := sealed(b, k, n, 1000, 0)
	size := 0
	for _, r := range recs {
		size += len(r.body)
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v, err := NewVerifier(Options{Keys: k.public()}, ds)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			v.Add(r.seq, r.body)
		}
		if r := v.Finish(); !r.OK() {
			b.Fatal(r.Findings)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBuilder measures the sealer's hashing core alone.
func BenchmarkBuilder(b *testing.B) {
	body := event(b, 1)
	b.SetBytes(int64(len(body)))
	bl := NewBuilder("KF_AUDIT", nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bl.Add(uint64(i+1), body)
		if bl.Len() == 1000 {
			d := bl.Digest(time.Now(), nil)
			bl.Commit(d)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func sha256Sum(b []byte) Hash { return Hash(sha256.Sum256(b)) }

// BenchmarkVerifyExport measures `keyflow audit verify --file`'s core:
// reading a JSON Lines export (both passes) and verifying it.
func BenchmarkVerifyExport(b *testing.B) {
	k := newSoftKeys(b, "sealer")
	const n = 100_000
	recs, ds := sealed(b, k, n, 1000, 0)
	var buf bytes.Buffer
	w := NewExportWriter(&buf)
	w.Header(ExportHeader{Stream: "KF_AUDIT", FromSeq: 1, Keys: k.public()})
	di := 0
	for _, r := range recs {
		w.Record(r.seq, r.body)
		if di < len(ds) && ds[di].ToSeq == r.seq {
			w.Digest(ds[di])
			di++
		}
	}
	w.Flush()
	file := buf.Bytes()
	b.SetBytes(int64(len(file)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var hdr *ExportHeader
		var got []*Digest
		if err := ReadExport(bytes.NewReader(file), ExportVisitor{
			Header: func(h *ExportHeader) error { hdr = h; return nil },
			Digest: func(d *Digest) error { got = append(got, d); return nil },
		}); err != nil {
			b.Fatal(err)
		}
		v, err := NewVerifier(Options{Keys: hdr.Keys, From: hdr.FromSeq}, got)
		if err != nil {
			b.Fatal(err)
		}
		if err := ReadExport(bytes.NewReader(file), ExportVisitor{Record: func(seq uint64, body []byte) error { v.Add(seq, body); return nil }}); err != nil {
			b.Fatal(err)
		}
		if r := v.Finish(); !r.OK() || r.Verified != n {
			b.Fatal(r)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestUnauthenticatedRecords: records the sealer flagged are reported as
// forged, by event ID; the flag is signed, so removing it breaks the
// digest; digests of version 1 (sealed before record authentication)
// still verify, their records counted as legacy.
func TestUnauthenticatedRecords(t *testing.T) {
	k := newSoftKeys(t, "sealer")
	b := NewBuilder("KF_AUDIT", nil)
	var recs []rec
	var ds []*Digest
	flagged := map[uint64]bool{5: true, 1500: true}
	for i := 1; i <= 2000; i++ {
		r := rec{uint64(i), event(t, i)}
		recs = append(recs, r)
		if _, err := b.Add(r.seq, r.body); err != nil {
			t.Fatal(err)
		}
		if flagged[r.seq] {
			b.MarkUnauthenticated()
			b.MarkUnauthenticated() // twice is once
		}
		if b.Len() == 1000 {
			d := b.Digest(time.Now(), k.identities())
			k.sign(t, d)
			if err := b.Commit(d); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	opts := Options{Keys: k.public()}
	r := verify(t, opts, ds, recs)
	if len(r.Findings) != 2 || r.Verified != 2000 || r.Legacy != 0 {
		t.Fatalf("want 2 forged findings and 2000 verified, got %d verified, %v", r.Verified, r.Findings)
	}
	for i, seq := range []uint64{5, 1500} {
		f := r.Findings[i]
		id := ParseFields(recs[seq-1].body).ID
		if f.Seq != seq || f.Kind != KindForged || !strings.Contains(f.Detail, id) {
			t.Errorf("finding %v; want forged at %d naming %s", f, seq, id)
		}
	}

	t.Run("flag removed", func(t *testing.T) {
		f := cloneDigests(ds)
		f[0].Unauthenticated = nil
		wantFirst(t, verify(t, opts, f, recs), 1, KindForgedDigest)
	})
	t.Run("version 1 digests", func(t *testing.T) {
		f := cloneDigests(ds)
		f[0].Version, f[0].Unauthenticated = 1, nil
		k.sign(t, f[0])
		f[1].PrevDigestHash = f[0].Hash()
		k.sign(t, f[1])
		r := verify(t, opts, f, recs)
		if r.Legacy != 1000 || len(r.Findings) != 1 || r.Findings[0].Seq != 1500 {
			t.Fatalf("want 1000 legacy records and the forged one at 1500: %d, %v", r.Legacy, r.Findings)
		}
	})
}
