package sealer_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/internal/testbed"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/pqc"
	"github.com/keyflow/keyflow/workers/sealer"
)

func TestMain(m *testing.M) { pkcs11test.Main(m) }

// bed is a testbed with the sealer's own connection.
type bed struct {
	*testbed.Bed
	sealJS jetstream.JetStream
}

// newBed starts a testbed. With tamperable, the audit stream is re-created
// allowing deletes and purges (jsaudit.TestingAllowDelete), so a test can
// act as an attacker with admin rights on the NATS account.
func newBed(t *testing.T, tamperable bool) *bed {
	t.Helper()
	b := &bed{Bed: testbed.New(t)}
	ctx := context.Background()
	if tamperable {
		if err := b.JS.DeleteStream(ctx, jsaudit.StreamName); err != nil {
			t.Fatal(err)
		}
		if _, err := jsaudit.Open(ctx, b.JS, jsaudit.TestingAllowDelete()); err != nil {
			t.Fatal(err)
		}
	}
	nc, err := natsserver.ConnectService(b.NATS, b.Identity, "sealer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if b.sealJS, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return b
}

func quietLogger() *slog.Logger {
	if os.Getenv("SEALER_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func (b *bed) start(t testing.TB, every int, interval time.Duration) *sealer.Sealer {
	t.Helper()
	s, err := sealer.Start(context.Background(), sealer.Config{JS: b.sealJS, KMS: b.KMS, Every: every, Interval: interval, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// emit stores n audit records through the real publisher.
func (b *bed) emit(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		err := b.Audit.Emit(context.Background(), events.Record{
			Type: events.TypeEncrypt, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeSuccess,
			Subject: "kf:alpha:key/0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11", RequestID: fmt.Sprintf("req-%d", i),
			Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (b *bed) lastSeq(t testing.TB) uint64 {
	t.Helper()
	s, err := b.JS.Stream(context.Background(), jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// checkFor polls cond until it holds, nats-server test style.
func checkFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			if os.Getenv("SEALER_DEBUG") != "" {
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sealedThrough waits until the sealer has sealed seq.
func sealedThrough(t testing.TB, s *sealer.Sealer, seq uint64) {
	t.Helper()
	checkFor(t, 30*time.Second, fmt.Sprintf("the sealer to seal seq %d (at %+v)", seq, s.Status()), func() bool { return s.Status().SealedTo >= seq })
}

func (b *bed) keys(t testing.TB) []chain.PublicKey {
	t.Helper()
	keys, err := sealer.StoredPublicKeys(context.Background(), b.Store)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func (b *bed) verify(t testing.TB, from uint64) *chain.Report {
	t.Helper()
	r, err := sealer.Verify(context.Background(), b.JS, sealer.VerifyParams{Keys: b.keys(t), From: from})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (b *bed) digests(t testing.TB) []*chain.Digest {
	t.Helper()
	ds, err := jsaudit.ReadDigests(context.Background(), b.JS)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func wantFirst(t *testing.T, r *chain.Report, seq uint64, kind chain.Kind) {
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

func TestNamesMatchKMS(t *testing.T) {
	if chain.SpecEd25519 != string(kms.SpecEd25519) || chain.SpecMLDSA65 != string(kms.SpecMLDSA65) ||
		chain.AlgEd25519 != string(kms.SignEd25519SHA512) || chain.AlgMLDSA != string(kms.SignMLDSA) {
		t.Fatal("events/chain's key spec or algorithm names differ from package kms's")
	}
	if !kms.ValidTenant(sealer.SystemTenant) {
		t.Fatalf("%q is not a valid tenant name", sealer.SystemTenant)
	}
}

func TestCleanChainVerifies(t *testing.T) {
	b := newBed(t, false)
	s := b.start(t, 100, 50*time.Millisecond)
	ctx := context.Background()
	// Real KMS operations, and plain records.
	alpha := kms.Caller{Tenant: "alpha", Principal: "app"}
	k, err := b.KMS.CreateKey(ctx, alpha, kms.CreateKeyParams{Alias: "app"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 120; i++ {
		if _, err := b.KMS.Encrypt(ctx, alpha, kms.EncryptParams{KeyRef: k.ID, Plaintext: []byte("hello")}); err != nil {
			t.Fatal(err)
		}
	}
	b.emit(t, 250)
	last := b.lastSeq(t)
	sealedThrough(t, s, last)

	// The keys in the store are the ones the sealer signs with.
	keys := b.keys(t)
	if len(keys) != 2 || keys[0].KeySpec != chain.SpecEd25519 || keys[1].KeySpec != chain.SpecMLDSA65 {
		t.Fatalf("stored sealer keys: %+v", keys)
	}
	for i, k := range s.PublicKeys() {
		if k.KeyID != keys[i].KeyID || !bytes.Equal(k.PublicKey, keys[i].PublicKey) {
			t.Fatalf("sealer key %d differs from the store's", i)
		}
	}
	r := b.verify(t, 0)
	if !r.OK() {
		t.Fatalf("clean trail has findings: %v", r.Findings)
	}
	if r.Verified < last || r.Digests < 4 {
		t.Fatalf("report: %+v", r)
	}
	// The unsealed tail is at most the last digest's own two signatures.
	if r.Unsealed > 2 {
		t.Fatalf("unsealed tail of %d records: %+v", r.Unsealed, r)
	}
	t.Logf("verified %d records in %d digests; unsealed tail %d from %d", r.Verified, r.Digests, r.Unsealed, r.UnsealedFrom)

	// Every digest is on its own subject with its msg ID, both signatures hybrid.
	st, _ := b.JS.Stream(ctx, jsaudit.DigestStreamName)
	ds := b.digests(t)
	m, err := st.GetLastMsgForSubject(ctx, jsaudit.DigestSubject(ds[0].FromSeq, ds[0].ToSeq))
	if err != nil {
		t.Fatalf("digest subject: %v", err)
	}
	if m.Header.Get(jetstream.MsgIDHeader) != jsaudit.DigestMsgID(ds[0].ToSeq) {
		t.Fatalf("digest msg ID %q", m.Header.Get(jetstream.MsgIDHeader))
	}
}

func TestSealerSignaturesAreAudited(t *testing.T) {
	b := newBed(t, false)
	s := b.start(t, 1000, 20*time.Millisecond)
	b.emit(t, 3)
	sealedThrough(t, s, 3)
	checkFor(t, 10*time.Second, "the sealer's sign records", func() bool { return len(b.EventsOfType(sealer.SystemTenant, events.TypeSign)) >= 2 })
	for _, e := range b.EventsOfType(sealer.SystemTenant, events.TypeSign) {
		if e.Principal != sealer.Principal || e.Outcome != events.OutcomeSuccess {
			t.Fatalf("sign record %+v", e)
		}
	}
}

func TestNoSelfSustainingLoop(t *testing.T) {
	b := newBed(t, false)
	const interval = 20 * time.Millisecond
	s := b.start(t, 1000, interval)
	b.emit(t, 5)
	sealedThrough(t, s, 5)
	checkFor(t, 10*time.Second, "the sign records of the first digest", func() bool { return len(b.EventsOfType(sealer.SystemTenant, events.TypeSign)) >= 2 })
	before := s.Status()
	// Nothing but the sealer's own records arrive: no digest may follow,
	// however many intervals pass.
	time.Sleep(25 * interval)
	after := s.Status()
	if after.Digests != before.Digests || after.SealedTo != before.SealedTo {
		t.Fatalf("the sealer kept sealing its own records: %+v then %+v", before, after)
	}
	if last := b.lastSeq(t); last != before.SealedTo+2 {
		t.Fatalf("stream ends at %d; want the last digest (%d) plus its two signatures", last, before.SealedTo)
	}
	// The next real record seals them.
	b.emit(t, 1)
	last := b.lastSeq(t)
	sealedThrough(t, s, last)
	ds := b.digests(t)
	if d := ds[len(ds)-1]; d.FromSeq != before.SealedTo+1 || d.Count != 3 {
		t.Fatalf("last digest %d-%d (%d records); want the two signatures and the new record", d.FromSeq, d.ToSeq, d.Count)
	}
	if r := b.verify(t, 0); !r.OK() {
		t.Fatal(r.Findings)
	}
}

func TestModifiedRecordInStream(t *testing.T) {
	b := newBed(t, true)
	s := b.start(t, 100, 20*time.Millisecond)
	b.emit(t, 300)
	sealedThrough(t, s, 300)
	ctx := context.Background()
	st, err := b.JS.Stream(ctx, jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker takes record 150 out and puts an altered copy back (the
	// stream cannot be rewritten in place).
	const victim = 150
	orig, err := st.GetMsg(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, victim); err != nil {
		t.Fatal(err)
	}
	altered := bytes.Replace(orig.Data, []byte(`"source":"`), []byte(`"source":"/forged`), 1)
	if bytes.Equal(altered, orig.Data) {
		t.Fatal("test record not altered")
	}
	if _, err := b.JS.PublishMsg(ctx, &nats.Msg{Subject: orig.Subject, Data: altered, Header: nats.Header{"Content-Type": []string{jsaudit.ContentType}}}); err != nil {
		t.Fatal(err)
	}
	sealedThrough(t, s, b.lastSeq(t)) // the sealer seals the copy too: that does not help
	wantFirst(t, b.verify(t, 0), victim, chain.KindModified)
}

func TestDeletedRecordInStream(t *testing.T) {
	b := newBed(t, true)
	s := b.start(t, 100, 20*time.Millisecond)
	b.emit(t, 250)
	sealedThrough(t, s, 250)
	st, err := b.JS.Stream(context.Background(), jsaudit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, victim := range []uint64{200, 77} {
		if err := st.DeleteMsg(context.Background(), victim); err != nil {
			t.Fatal(err)
		}
	}
	wantFirst(t, b.verify(t, 0), 77, chain.KindDeleted)
}

func TestDeletedBeforeSealing(t *testing.T) {
	b := newBed(t, true)
	b.emit(t, 20)
	st, _ := b.JS.Stream(context.Background(), jsaudit.StreamName)
	if err := st.DeleteMsg(context.Background(), 12); err != nil {
		t.Fatal(err)
	}
	s := b.start(t, 100, 20*time.Millisecond)
	sealedThrough(t, s, 20)
	wantFirst(t, b.verify(t, 0), 12, chain.KindDeleted)
}

// export writes the trail as JSON Lines and returns its lines.
func (b *bed) export(t testing.TB) []string {
	t.Helper()
	var buf bytes.Buffer
	res, err := sealer.Export(context.Background(), b.JS, &buf, sealer.ExportParams{Format: sealer.FormatJSONL, Keys: b.keys(t)})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if uint64(len(lines)) != 1+res.Records+uint64(res.Digests) {
		t.Fatalf("export of %d lines; result %+v", len(lines), res)
	}
	return lines
}

// verifyLines checks an export offline, with the keys given.
func verifyLines(t testing.TB, lines []string, keys []chain.PublicKey) *chain.Report {
	t.Helper()
	file := strings.Join(lines, "\n") + "\n"
	var hdr *chain.ExportHeader
	var ds []*chain.Digest
	err := chain.ReadExport(strings.NewReader(file), chain.ExportVisitor{
		Header: func(h *chain.ExportHeader) error { hdr = h; return nil },
		Digest: func(d *chain.Digest) error { ds = append(ds, d); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys == nil {
		keys = hdr.Keys
	}
	v, err := chain.NewVerifier(chain.Options{Keys: keys, From: hdr.FromSeq}, ds)
	if err != nil {
		t.Fatal(err)
	}
	if err := chain.ReadExport(strings.NewReader(file), chain.ExportVisitor{Record: func(seq uint64, body []byte) error { v.Add(seq, body); return nil }}); err != nil {
		t.Fatal(err)
	}
	return v.Finish()
}

// lineOf finds the export line of record seq.
func lineOf(t testing.TB, lines []string, seq uint64) int {
	t.Helper()
	prefix := fmt.Sprintf(`{"type":"record","seq":%d,`, seq)
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	t.Fatalf("no line for record %d", seq)
	return -1
}

func sealedExport(t *testing.T) (*bed, []string) {
	b := newBed(t, false)
	s := b.start(t, 100, 20*time.Millisecond)
	b.emit(t, 350)
	sealedThrough(t, s, 350)
	s.Stop()
	lines := b.export(t)
	if r := verifyLines(t, lines, nil); !r.OK() || r.Verified < 350 {
		t.Fatalf("clean export: %+v", r)
	}
	return b, lines
}

func TestModifiedRecordInExport(t *testing.T) {
	b, lines := sealedExport(t)
	i := lineOf(t, lines, 123)
	lines[i] = strings.Replace(lines[i], `"id":"`, `"id":"0`, 1)
	wantFirst(t, verifyLines(t, lines, b.keys(t)), 123, chain.KindModified)
}

func TestReorderedRecordInExport(t *testing.T) {
	b, lines := sealedExport(t)
	i, j := lineOf(t, lines, 210), lineOf(t, lines, 211)
	lines[i], lines[j] = lines[j], lines[i]
	wantFirst(t, verifyLines(t, lines, b.keys(t)), 210, chain.KindReordered)
}

func TestDeletedRecordInExport(t *testing.T) {
	b, lines := sealedExport(t)
	i := lineOf(t, lines, 5)
	lines = append(lines[:i], lines[i+1:]...)
	wantFirst(t, verifyLines(t, lines, b.keys(t)), 5, chain.KindDeleted)
}

// attackerKeys are software keys the attacker holds.
type attackerKeys struct {
	ed     ed25519.PrivateKey
	ml     []byte
	edPub  chain.PublicKey
	mlPub  chain.PublicKey
	signer pqc.Signer
}

func newAttacker(t testing.TB, edID, mlID string) *attackerKeys {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	s, _ := pqc.SignerByName(chain.SpecMLDSA65)
	mlPub, mlPriv, err := s.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	mlDER, _ := pqc.PublicKeyDER(chain.SpecMLDSA65, mlPub)
	return &attackerKeys{ed: priv, ml: mlPriv, signer: s,
		edPub: chain.PublicKey{KeyID: edID, KeyVersion: 1, KeySpec: chain.SpecEd25519, PublicKey: der},
		mlPub: chain.PublicKey{KeyID: mlID, KeyVersion: 1, KeySpec: chain.SpecMLDSA65, PublicKey: mlDER}}
}

func (a *attackerKeys) resign(t testing.TB, d *chain.Digest) {
	d.Signatures = []chain.Signature{a.edPub.Identity(), a.mlPub.Identity()}
	msg := d.SignedMessage()
	d.Signatures[0].Signature = ed25519.Sign(a.ed, msg)
	sig, err := a.signer.Sign(a.ml, msg, pqc.SignOptions{Context: chain.MLDSAContext})
	if err != nil {
		t.Fatal(err)
	}
	d.Signatures[1].Signature = sig
}

// digestLine finds the n-th digest line and decodes it.
func digestLine(t testing.TB, lines []string, n int) (int, *chain.Digest) {
	t.Helper()
	for i, l := range lines {
		if !strings.HasPrefix(l, `{"type":"digest"`) {
			continue
		}
		if n > 0 {
			n--
			continue
		}
		var x struct{ Digest *chain.Digest }
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatal(err)
		}
		return i, x.Digest
	}
	t.Fatal("no such digest")
	return 0, nil
}

func setDigest(t testing.TB, lines []string, i int, d *chain.Digest) {
	b, err := json.Marshal(map[string]any{"type": "digest", "digest": d})
	if err != nil {
		t.Fatal(err)
	}
	lines[i] = string(b)
}

func TestForgedDigestInExport(t *testing.T) {
	b, clean := sealedExport(t)
	keys := b.keys(t)
	t.Run("altered head re-signed with attacker keys", func(t *testing.T) {
		lines := append([]string{}, clean...)
		i, d := digestLine(t, lines, 1)
		d.HeadHash[0] ^= 0xff
		newAttacker(t, "attacker-ed", "attacker-ml").resign(t, d)
		setDigest(t, lines, i, d)
		wantFirst(t, verifyLines(t, lines, keys), d.FromSeq, chain.KindForgedDigest)
	})
	t.Run("attacker keys posing as the sealer's", func(t *testing.T) {
		lines := append([]string{}, clean...)
		i, d := digestLine(t, lines, 2)
		d.HeadHash[0] ^= 0xff
		newAttacker(t, keys[0].KeyID, keys[1].KeyID).resign(t, d)
		setDigest(t, lines, i, d)
		wantFirst(t, verifyLines(t, lines, keys), d.FromSeq, chain.KindForgedDigest)
	})
	for sig, name := range []string{"Ed25519", "ML-DSA-65"} {
		t.Run("bit-flipped "+name+" signature", func(t *testing.T) {
			lines := append([]string{}, clean...)
			i, d := digestLine(t, lines, 0)
			d.Signatures[sig].Signature[7] ^= 0x01
			setDigest(t, lines, i, d)
			wantFirst(t, verifyLines(t, lines, keys), d.FromSeq, chain.KindForgedDigest)
		})
	}
	t.Run("altered prevDigestHash", func(t *testing.T) {
		lines := append([]string{}, clean...)
		i, d := digestLine(t, lines, 1)
		d.PrevDigestHash[31] ^= 1
		setDigest(t, lines, i, d)
		wantFirst(t, verifyLines(t, lines, keys), d.FromSeq, chain.KindForgedDigest)
	})
}

func TestRestartResumesWithoutGapOrDoubleSealing(t *testing.T) {
	b := newBed(t, false)
	s1 := b.start(t, 50, 20*time.Millisecond)
	b.emit(t, 120)
	sealedThrough(t, s1, 120)
	s1.Stop()
	first := s1.Status()
	b.emit(t, 80) // while no sealer runs
	s2 := b.start(t, 50, 20*time.Millisecond)
	last := b.lastSeq(t)
	sealedThrough(t, s2, last)
	// A second sealer racing the first must not fork the chain.
	s3 := b.start(t, 50, 20*time.Millisecond)
	b.emit(t, 60)
	last = b.lastSeq(t)
	sealedThrough(t, s2, last-2) // the racer's signatures may trail
	s2.Stop()
	s3.Stop()

	ds := b.digests(t)
	for i, d := range ds {
		if i == 0 {
			if d.FromSeq != 1 {
				t.Fatalf("first digest starts at %d", d.FromSeq)
			}
			continue
		}
		p := ds[i-1]
		if d.FromSeq != p.ToSeq+1 || d.PrevDigestHash != p.Hash() || d.StartHash != p.HeadHash {
			t.Fatalf("digest %d-%d does not continue %d-%d", d.FromSeq, d.ToSeq, p.FromSeq, p.ToSeq)
		}
	}
	if ds[0].ToSeq > first.SealedTo {
		t.Fatalf("digests %+v", ds[0])
	}
	// The keys were found again by alias, not created anew.
	if keys := b.keys(t); len(keys) != 2 || keys[0].KeyID != s3.PublicKeys()[0].KeyID || keys[1].KeyID != s1.PublicKeys()[1].KeyID {
		t.Fatalf("sealer keys after restarts: %+v", keys)
	}
	if fails := 0; true {
		for _, e := range b.Events(sealer.SystemTenant) {
			if e.Outcome != events.OutcomeSuccess {
				fails++
			}
		}
		if fails != 0 {
			t.Fatalf("%d failed records of the sealer", fails)
		}
	}
	r := b.verify(t, 0)
	if !r.OK() {
		t.Fatal(r.Findings)
	}
	if r.Verified+r.Unsealed != b.lastSeq(t) {
		t.Fatalf("verified %d + unsealed %d != %d records", r.Verified, r.Unsealed, b.lastSeq(t))
	}
	t.Logf("%d digests, %d records verified, %d unsealed", len(ds), r.Verified, r.Unsealed)
}

func TestVerifyFromDigestBoundaryAfterPurge(t *testing.T) {
	b := newBed(t, true)
	s := b.start(t, 100, 20*time.Millisecond)
	b.emit(t, 500)
	sealedThrough(t, s, 500)
	ds := b.digests(t)
	if len(ds) < 4 {
		t.Fatalf("%d digests", len(ds))
	}
	boundary := ds[2].FromSeq
	ctx := context.Background()
	st, _ := b.JS.Stream(ctx, jsaudit.StreamName)
	// Retention: everything before the boundary ages out.
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(boundary)); err != nil {
		t.Fatal(err)
	}
	// The policy keeps everything: the cut head is a finding that counts
	// the records gone.
	r := b.verify(t, 0)
	wantFirst(t, r, 1, chain.KindTruncated)
	if r.First().Missing != boundary-1 {
		t.Fatalf("the finding counts %d records missing, want %d", r.First().Missing, boundary-1)
	}
	r = b.verify(t, boundary)
	if !r.OK() || r.From != boundary {
		t.Fatalf("from the boundary %d: %+v", boundary, r)
	}
	t.Logf("from %d: %d records verified, anchored at %s", boundary, r.Verified, r.Anchor)
	// A later deletion is still found.
	if err := st.DeleteMsg(ctx, boundary+10); err != nil {
		t.Fatal(err)
	}
	wantFirst(t, b.verify(t, boundary), boundary+10, chain.KindDeleted)
}

func TestVerifyAfterMaxMsgsRetention(t *testing.T) {
	b := newBed(t, false)
	ctx := context.Background()
	if err := b.JS.DeleteStream(ctx, jsaudit.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := jsaudit.Open(ctx, b.JS, jsaudit.MaxMsgs(150)); err != nil {
		t.Fatal(err)
	}
	s := b.start(t, 50, 20*time.Millisecond)
	for i := 0; i < 8; i++ {
		b.emit(t, 50)
		sealedThrough(t, s, b.lastSeq(t)-2)
	}
	s.Stop() // its last signatures would push more records out while we read
	st, _ := b.JS.Stream(ctx, jsaudit.StreamName)
	info, _ := st.Info(ctx)
	// Start at the first digest boundary still fully in the stream.
	var from uint64
	for _, d := range b.digests(t) {
		if d.FromSeq >= info.State.FirstSeq {
			from = d.FromSeq
			break
		}
	}
	if r := b.verify(t, from); !r.OK() {
		t.Fatalf("from %d (stream starts at %d): %v", from, info.State.FirstSeq, r.Findings)
	}
	// Mid-digest works too: leaves authenticate each record.
	if r := b.verify(t, info.State.FirstSeq); !r.OK() {
		t.Fatalf("from the stream's first seq %d: %v", info.State.FirstSeq, r.Findings)
	}
	// From the start, the cut head is explained by the recorded policy,
	// and the report says so.
	r := b.verify(t, 0)
	if !r.OK() || !strings.Contains(r.Retention, "max-msgs 150") || !strings.Contains(r.Retention, fmt.Sprintf("%d records", info.State.FirstSeq-1)) {
		t.Fatalf("verify from the start: %v, retention %q", r.Findings, r.Retention)
	}
	t.Log(r.Retention)
}

func TestExportCEF(t *testing.T) {
	b := newBed(t, false)
	b.emit(t, 3)
	err := b.Audit.Emit(context.Background(), events.Record{
		Type: events.TypeDecrypt, Tenant: "beta", Principal: "p|x=y", Outcome: events.OutcomeDenied, ErrorCode: "AccessDeniedException",
		Subject: "kf:beta:key/k", Data: map[string]any{"note": "a=b\nc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := sealer.Export(context.Background(), b.JS, &buf, sealer.ExportParams{Format: sealer.FormatCEF})
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 4 || res.Records != 4 {
		t.Fatalf("%d CEF lines: %q", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "CEF:0|keyflow|keyflow|1|io.keyflow.crypto.") || strings.Count(l, "|") < 7 {
			t.Fatalf("not a CEF line: %s", l)
		}
	}
	last := lines[3]
	for _, want := range []string{"|crypto.decrypt|8|", `suser=p|x\=y`, "outcome=denied", "cs1Label=tenant cs1=beta", "cs4=AccessDeniedException", "cn1Label=streamSeq cn1=4", `a\=b\\nc`} {
		if !strings.Contains(last, want) {
			t.Errorf("CEF line lacks %q: %s", want, last)
		}
	}
}

// BenchmarkSealer pre-fills the stream with N records, then times a sealer
// (digests of 1000, signed by the KMS keys) from Start until it has sealed
// them all. Interval is 20ms instead of 2s: the last, partial digest waits
// for the timer, and the benchmark measures throughput, not that bound.
func BenchmarkSealer(b *testing.B) {
	const n = 100_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tb := testbed.New(b)
		nc, err := natsserver.ConnectService(tb.NATS, tb.Identity, "sealer")
		if err != nil {
			b.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		if _, err := sealer.EnsureKeys(context.Background(), tb.KMS); err != nil {
			b.Fatal(err)
		}
		prefill(b, tb, n)
		last := (&bed{Bed: tb}).lastSeq(b)
		b.StartTimer()
		start := time.Now()
		s, err := sealer.Start(context.Background(), sealer.Config{JS: js, KMS: tb.KMS, Interval: 20 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		sealedThrough(b, s, last)
		el := time.Since(start)
		b.StopTimer()
		s.Stop()
		nc.Close()
		bd := &bed{Bed: tb}
		vstart := time.Now()
		if r := bd.verify(b, 0); !r.OK() || r.Verified < last {
			b.Fatalf("the sealed trail does not verify: %+v", r)
		}
		// Online verification reads the stream through NATS: reported
		// for information (the verifier alone: events/chain BenchmarkVerify).
		b.ReportMetric(float64(last)/time.Since(vstart).Seconds(), "stream-verify-events/s")
		b.ReportMetric(float64(last)/el.Seconds(), "events/s")
		b.ReportMetric(float64(s.Status().Digests), "digests")
	}
}

// prefill publishes n realistic records asynchronously.
func prefill(b testing.TB, tb *testbed.Bed, n int) {
	ctx := context.Background()
	e, err := events.Record{
		Type: events.TypeEncrypt, Tenant: "alpha", Principal: "app", Outcome: events.OutcomeSuccess,
		Subject: "kf:alpha:key/0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11", RequestID: "req",
		Source: "/keyflow/worker/bench", Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32, "algorithm": "SYMMETRIC_DEFAULT"},
	}.CloudEvent()
	if err != nil {
		b.Fatal(err)
	}
	// Records as a worker writes them: authenticated under the record key
	// (events.RecordKey), so the sealer chains them as genuine.
	rk, err := tb.KMS.RecordKey(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const subject = "kf.audit.alpha.0f9c3c0e-3b4e-4a57-9a36-1a7c1c2f8a11." + events.TypeEncrypt
	for i := 0; i < n; i++ {
		e.SetID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
		body, _ := json.Marshal(e)
		msg := nats.NewMsg(subject)
		msg.Data = body
		msg.Header.Set(events.HeaderRecordMAC, rk.Sum(subject, body))
		if _, err := tb.JS.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 {
			select {
			case <-tb.JS.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				b.Fatal("prefill stalled")
			}
		}
	}
	select {
	case <-tb.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("prefill stalled")
	}
}

func TestSealerKeyRotation(t *testing.T) {
	b := newBed(t, false)
	s := b.start(t, 40, 20*time.Millisecond)
	b.emit(t, 100)
	sealedThrough(t, s, 100)
	ctx := context.Background()
	old := s.PublicKeys()
	// An operator rotates the sealer's Ed25519 key.
	ed := old[0].KeyID
	if _, err := b.KMS.CreateVersion(ctx, sealer.Caller, kms.CreateVersionParams{KeyID: ed, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.KMS.SetPrimaryVersion(ctx, sealer.Caller, kms.SetPrimaryParams{KeyID: ed, Version: 2}); err != nil {
		t.Fatal(err)
	}
	b.emit(t, 100)
	sealedThrough(t, s, b.lastSeq(t)-2)
	if k := s.PublicKeys()[0]; k.KeyVersion != 2 || bytes.Equal(k.PublicKey, old[0].PublicKey) {
		t.Fatalf("the sealer still signs with %s v%d", k.KeyID, k.KeyVersion)
	}
	ds := b.digests(t)
	if last := ds[len(ds)-1]; last.Signatures[0].KeyVersion != 2 {
		t.Fatalf("last digest signed with version %d", last.Signatures[0].KeyVersion)
	}
	if ds[0].Signatures[0].KeyVersion != 1 {
		t.Fatalf("first digest signed with version %d", ds[0].Signatures[0].KeyVersion)
	}
	// The store lists both versions, so the whole chain verifies.
	if keys := b.keys(t); len(keys) != 3 {
		t.Fatalf("%d stored sealer keys, want 3 (Ed25519 v1, v2; ML-DSA-65 v1)", len(keys))
	}
	if r := b.verify(t, 0); !r.OK() {
		t.Fatal(r.Findings)
	}
	// Pinned to the old keys only, the digests signed after the rotation
	// are not trusted.
	r, err := sealer.Verify(ctx, b.JS, sealer.VerifyParams{Keys: old})
	if err != nil {
		t.Fatal(err)
	}
	if f := r.First(); f == nil || f.Kind != chain.KindForgedDigest {
		t.Fatalf("old keys only: %+v", r)
	}
}
