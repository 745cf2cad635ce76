// Package sealer runs keyflow's audit sealer and reads the sealed trail back.
//
// # The sealer
//
// [Start] runs one sealer per deployment. It reads the audit stream
// (KF_AUDIT, every tenant) in stream order with an ordered consumer, folds
// each record into the hash chain of package events/chain, and publishes a
// signed digest to KF_AUDIT_DIGESTS every Every records (default 1000), or
// Interval (default 2 s) after the first record that is not its own, if
// fewer arrived. Digests are signed twice through the KMS, with two keys of
// the system tenant "keyflow-system" that the sealer creates on first start
// and finds again by alias afterwards:
//
//	alias/audit-sealer-ed25519   ECC_NIST_EDWARDS25519, private key wrapped by the HSM root key, signs in the HSM
//	alias/audit-sealer-mldsa65   ML_DSA_65, seed wrapped by the HSM root key, signs in memory (zeroed after use)
//
// # No loop
//
// Each signature is a KMS operation, so it is audited: every digest adds two
// io.keyflow.crypto.sign.v1 records (tenant keyflow-system, principal
// audit-sealer) to the stream it seals. They are chained like any other
// record, into the next digest, but they never start the Interval timer on
// their own; otherwise an idle deployment would publish a digest every
// Interval for ever, each sealing the previous digest's signatures. So when
// traffic stops, the sealer's last two sign records stay unsealed (the
// "unsealed tail" a verifier reports) until the next real record arrives.
//
// # Restart
//
// The digest stream is the sealer's only state. On start (and after any
// error) it reads the last digest and resumes at its ToSeq+1 with its
// HeadHash, so it neither skips nor re-seals records. Digests are published
// with Nats-Msg-Id "digest-<toSeq>" and an expected last sequence of the
// digest stream, so a second sealer racing the first, or a retry after a
// lost acknowledgement, cannot fork the chain: the loser's publish fails and
// it resumes from the winner's digest.
//
// # Reading back
//
// [Verify] and [Export] read the whole audit stream and the digests, for
// `keyflow audit verify` and `keyflow audit export`. Only keyflow's own NATS
// account (KF) can read the audit stream: these run with the dev stack's
// DIR/auditor.creds, the operator and auditor path. Tenants read their own
// trail with `keyflow audit tail` instead.
package sealer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
)

// The sealer's identity and keys.
const (
	SystemTenant = "keyflow-system"
	Principal    = "audit-sealer"
	AliasEd25519 = "audit-sealer-ed25519"
	AliasMLDSA65 = "audit-sealer-mldsa65"
)

// Defaults.
const (
	DefaultEvery    = 1000
	DefaultInterval = 2 * time.Second
	// MaxEvery bounds Every: a digest carries 40 bytes per record (about
	// 54 in its JSON), and must fit in one NATS message, whose default
	// limit is 1 MB. 10,000 records make a digest of about 540 KB.
	MaxEvery = 10_000
	// AuditorCredsFile is the name of the auditor's creds file in the dev
	// stack's data directory: a user of keyflow's own NATS account, which
	// `keyflow audit verify` and `export` use to read every tenant's trail.
	AuditorCredsFile = "auditor.creds"
	// PubKeysFile is the name of the sealer's public keys file in the dev
	// stack's data directory (`keyflow audit pubkeys` output), which
	// `keyflow audit verify` trusts by default.
	PubKeysFile = "audit-pubkeys.json"
)

// Caller is how the sealer appears in the audit trail.
var Caller = kms.Caller{Tenant: SystemTenant, Principal: Principal}

// Config configures a sealer.
type Config struct {
	// JS is a JetStream context of keyflow's own NATS account (KF); give
	// the sealer a connection of its own.
	JS jetstream.JetStream
	// KMS signs the digests (and is where the sealer keys live).
	KMS *kms.Service
	// Every is the number of records per digest (default 1000, at most
	// MaxEvery).
	Every int
	// Interval is the longest a record waits to be sealed when fewer than
	// Every arrive (default 2s).
	Interval time.Duration
	Logger   *slog.Logger
	Now      func() time.Time
	// Read, when set, counts the records the sealer has read and chained
	// (its replay from the last digest on start included), for metrics.
	Read *atomic.Uint64
}

// Status is a snapshot of a sealer's progress.
type Status struct {
	SealedTo  uint64 // ToSeq of the last digest published (or found on start)
	Digests   uint64 // digests published by this sealer
	LastError string // the last error, if the sealer is retrying
}

// Sealer is a running sealer.
type Sealer struct {
	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	keysMu sync.Mutex
	keys   [2]chain.PublicKey // Ed25519, ML-DSA-65

	// recordKey checks record authenticators; nil when the HSM cannot
	// derive it (every record is then flagged).
	recordKey *events.RecordKey

	mu     sync.Mutex
	status Status
}

// Start creates the digest stream and the sealer keys if needed, and starts
// sealing in the background. Stop it with Stop.
func Start(ctx context.Context, cfg Config) (*Sealer, error) {
	if cfg.JS == nil || cfg.KMS == nil {
		return nil, errors.New("sealer: JS and KMS are required")
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Every > MaxEvery {
		return nil, fmt.Errorf("sealer: Every is at most %d", MaxEvery)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sealer{cfg: cfg, log: cfg.Logger.With("component", "audit-sealer"), done: make(chan struct{})}
	// The operator provisions the digest stream (jsaudit.Provision); the
	// sealer's NATS user may not create or change it. Without one (tests,
	// a full keyflow-account user) the sealer creates it.
	if _, err := cfg.JS.Stream(ctx, jsaudit.DigestStreamName); errors.Is(err, jetstream.ErrStreamNotFound) {
		if err := jsaudit.OpenDigests(ctx, cfg.JS); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("failed to open the audit digest stream: %w", err)
	}
	if err := s.loadKeys(ctx); err != nil {
		return nil, err
	}
	rk, err := cfg.KMS.RecordKey(ctx)
	if kms.CodeOf(err) == kms.CodeUnsupportedOperation {
		s.log.Warn("audit sealer: this HSM cannot derive the record key, so every record is flagged as unauthenticated")
	} else if err != nil {
		return nil, fmt.Errorf("sealer: failed to derive the audit record key: %w", err)
	}
	s.recordKey = rk
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go s.run(runCtx)
	return s, nil
}

// Stop stops sealing. Records that arrived since the last digest (other
// than the sealer's own) are sealed first, within a few seconds at most.
func (s *Sealer) Stop() {
	if s == nil || s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
}

// Status returns the sealer's progress.
func (s *Sealer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Lag is how far sealing is behind the audit stream.
type Lag struct {
	Last   uint64 // the audit stream's last sequence
	Sealed uint64 // ToSeq of the last digest (0: none yet)
}

// Unsealed is the number of records not yet sealed. At rest it is the
// sealer's own two signature records of the last digest (see No loop).
func (l Lag) Unsealed() uint64 {
	if l.Last <= l.Sealed {
		return 0
	}
	return l.Last - l.Sealed
}

// ReadLag reads the sealing lag from the two streams, so any process with
// read access to them (an active sealer, a standby, an operator) sees the
// same figure.
func ReadLag(ctx context.Context, js jetstream.JetStream) (Lag, error) {
	last, _, err := jsaudit.LastDigest(ctx, js)
	if err != nil {
		return Lag{}, err
	}
	aud, err := streamInfo(ctx, js, jsaudit.StreamName)
	if err != nil {
		return Lag{}, err
	}
	l := Lag{Last: aud.State.LastSeq}
	if last != nil {
		l.Sealed = last.ToSeq
	}
	return l, nil
}

// PublicKeys returns the sealer's current public keys (Ed25519, ML-DSA-65).
func (s *Sealer) PublicKeys() []chain.PublicKey {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	return []chain.PublicKey{s.keys[0], s.keys[1]}
}

// EnsureKeys finds the sealer keys by alias, creating them if they do not
// exist, and returns their primary versions' public keys (Ed25519,
// ML-DSA-65).
func EnsureKeys(ctx context.Context, svc *kms.Service) ([]chain.PublicKey, error) {
	// List rather than describe by alias: a first start then leaves no
	// NotFound failures in the trail.
	existing, err := svc.ListKeys(ctx, Caller)
	if err != nil {
		return nil, fmt.Errorf("failed to list the sealer keys: %w", err)
	}
	var out []chain.PublicKey
	for _, want := range []struct {
		alias string
		spec  kms.KeySpec
	}{{AliasEd25519, kms.SpecEd25519}, {AliasMLDSA65, kms.SpecMLDSA65}} {
		var key *kms.Key
		for _, k := range existing {
			if k.Alias == want.alias {
				key = k
			}
		}
		if key == nil {
			key, err = svc.CreateKey(ctx, Caller, kms.CreateKeyParams{
				Alias: want.alias, Spec: want.spec, Usage: kms.UsageSignVerify,
				Description: "keyflow audit sealer: signs the audit digests",
			})
			if errors.Is(err, kms.ErrAlreadyExists) { // another sealer won the race
				key, err = svc.DescribeKey(ctx, Caller, "alias/"+want.alias)
			}
			if err != nil {
				return nil, fmt.Errorf("failed to create sealer key alias/%s: %w", want.alias, err)
			}
		}
		if key.Spec != want.spec {
			return nil, fmt.Errorf("sealer key alias/%s is a %s key, not %s", want.alias, key.Spec, want.spec)
		}
		pub, err := svc.GetPublicKey(ctx, Caller, key.ID, key.PrimaryVersion)
		if err != nil {
			return nil, fmt.Errorf("failed to read the public key of sealer key alias/%s: %w", want.alias, err)
		}
		out = append(out, chain.PublicKey{KeyID: pub.KeyID, KeyVersion: pub.KeyVersion, KeySpec: string(pub.KeySpec), PublicKey: pub.PublicKeyDER})
	}
	return out, nil
}

func (s *Sealer) loadKeys(ctx context.Context) error {
	keys, err := EnsureKeys(ctx, s.cfg.KMS)
	if err != nil {
		return err
	}
	s.keysMu.Lock()
	s.keys = [2]chain.PublicKey{keys[0], keys[1]}
	s.keysMu.Unlock()
	return nil
}

func (s *Sealer) setStatus(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	s.mu.Unlock()
}

// run seals until ctx is cancelled, starting a new session after an error.
func (s *Sealer) run(ctx context.Context) {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond // it had been working: a fresh failure
		}
		if errors.Is(err, errKeyChanged) {
			s.log.Info("a sealer key was rotated; sealing again from the last digest with the new version")
		} else {
			s.log.Error("audit sealer failed; resuming from the last digest", "err", err, "retryIn", backoff)
			s.setStatus(func(st *Status) { st.LastError = err.Error() })
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// own reports whether a record is one of the sealer's own (its signatures,
// and the key lookups at start).
func own(f chain.EventFields) bool { return f.Tenant == SystemTenant && f.Principal == Principal }

// session resumes from the last digest and seals until ctx is cancelled or
// something fails.
//
// It is a two-stage pipeline. The consumer callback folds each record into
// the chain and cuts a digest every Every records (or when the Interval
// timer fires); a digest's hash does not depend on its signatures, so the
// next range can start at once. The session goroutine signs and publishes
// the cut digests in order. Reading therefore never waits for the HSM, and
// a failure anywhere ends the session: the next one resumes from the last
// digest actually published, so digests cut but not yet published are
// simply cut again.
func (s *Sealer) session(ctx context.Context) error {
	js := s.cfg.JS
	last, lastSeq, err := jsaudit.LastDigest(ctx, js)
	if err != nil {
		return err
	}
	if last != nil {
		s.checkResumePoint(last)
		s.setStatus(func(st *Status) { st.SealedTo = last.ToSeq })
	}
	ccfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if last != nil {
		ccfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: last.ToSeq + 1}
	}
	cons, err := js.OrderedConsumer(ctx, jsaudit.StreamName, ccfg)
	if err != nil {
		return fmt.Errorf("failed to read the audit stream: %w", err)
	}

	f := &folder{
		b: chain.NewBuilder(jsaudit.StreamName, last), keys: s.PublicKeys(), recordKey: s.recordKey,
		every: s.cfg.Every, interval: s.cfg.Interval, now: s.cfg.Now, read: s.cfg.Read,
		ready: make(chan struct{}, 1), fail: make(chan error, 1),
	}
	f.cond = sync.NewCond(&f.mu)
	defer f.close()
	cc, err := cons.Consume(f.add, jetstream.PullMaxMessages(4096), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.log.Warn("audit sealer: reading the audit stream", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("failed to read the audit stream: %w", err)
	}
	defer cc.Stop()
	tick := time.NewTicker(max(s.cfg.Interval/10, time.Millisecond))
	defer tick.Stop()
	publishAll := func(ctx context.Context) error {
		for d := f.next(); d != nil; d = f.next() {
			if err := s.publish(ctx, d, &lastSeq); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		select {
		case <-f.ready:
			if err := publishAll(ctx); err != nil {
				return err
			}
		case <-tick.C:
			f.timer()
		case err := <-f.fail:
			return err
		case <-ctx.Done():
			// Stop reading, seal what is pending (unless it is only the
			// sealer's own records), publish what was cut, and go.
			cc.Stop()
			f.stop()
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := publishAll(fctx); err != nil {
				s.log.Warn("audit sealer stopped with records unsealed", "err", err)
			}
			return nil
		}
	}
}

// maxQueued is how many cut digests may wait for their signatures before
// reading pauses (back-pressure).
const maxQueued = 64

// folder is the reading stage of a session: it owns the builder.
type folder struct {
	mu   sync.Mutex
	cond *sync.Cond // on mu: a queued digest was taken, or the folder closed
	b    *chain.Builder
	keys []chain.PublicKey
	// recordKey checks each record's authenticator before it is chained.
	recordKey *events.RecordKey
	every     int
	interval  time.Duration
	now       func() time.Time
	// deadline is when the pending records must be sealed; zero while only
	// the sealer's own records are pending.
	deadline time.Time
	stopped  bool
	read     *atomic.Uint64  // Config.Read
	queue    []*chain.Digest // cut, waiting to be signed and published
	ready    chan struct{}   // signalled when the queue becomes non-empty
	fail     chan error
}

// add is the consumer callback.
func (f *folder) add(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		f.failWith(fmt.Errorf("failed to read audit metadata: %w", err))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	ev, err := f.b.Add(md.Sequence.Stream, m.Data())
	if err != nil {
		f.stopped = true
		f.failWith(err)
		return
	}
	if f.read != nil {
		f.read.Add(1)
	}
	// A record without a valid authenticator is chained all the same (so
	// nothing is hidden) and flagged in the signed digest. It never passes
	// for the sealer's own (which would not start the timer).
	authentic := f.recordKey != nil && f.recordKey.Check(m.Subject(), m.Data(), m.Headers().Get(events.HeaderRecordMAC))
	if !authentic {
		f.b.MarkUnauthenticated()
	}
	if f.deadline.IsZero() && (!authentic || !own(ev)) {
		f.deadline = time.Now().Add(f.interval)
	}
	if f.b.Len() >= f.every {
		f.cutLocked()
	}
	// Back-pressure: only the reader waits (Wait releases the lock, so the
	// timer and the signer go on).
	for len(f.queue) >= maxQueued && !f.stopped {
		f.cond.Wait()
	}
}

// timer seals the pending records once their deadline passed.
func (f *folder) timer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped && !f.deadline.IsZero() && !time.Now().Before(f.deadline) {
		f.cutLocked()
	}
}

// stop ends reading; records other than the sealer's own are cut first.
func (f *folder) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped && !f.deadline.IsZero() {
		f.cutLocked()
	}
	f.stopped = true
	f.cond.Broadcast()
}

// close ends the folder and releases a waiting reader.
func (f *folder) close() {
	f.mu.Lock()
	f.stopped = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

// next takes the oldest cut digest, or nil.
func (f *folder) next() *chain.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) == 0 {
		return nil
	}
	d := f.queue[0]
	f.queue = f.queue[1:]
	f.cond.Broadcast()
	return d
}

func (f *folder) cutLocked() {
	d := f.b.Digest(f.now(), []chain.Signature{f.keys[0].Identity(), f.keys[1].Identity()})
	f.deadline = time.Time{}
	if d == nil {
		return
	}
	if err := f.b.Commit(d); err != nil {
		f.stopped = true
		f.failWith(err)
		return
	}
	f.queue = append(f.queue, d)
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

func (f *folder) failWith(err error) {
	select {
	case f.fail <- err:
	default:
	}
}

// publish signs d and publishes it after the digest at lastSeq of the
// digest stream.
func (s *Sealer) publish(ctx context.Context, d *chain.Digest, lastSeq *uint64) error {
	if err := s.sign(ctx, d); err != nil {
		if errors.Is(err, errKeyChanged) {
			// A sealer key was rotated: the digests already cut name the
			// old version, so start over from the last published digest
			// with the new primary versions.
			if lerr := s.loadKeys(ctx); lerr != nil {
				return lerr
			}
		}
		return err
	}
	body, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("failed to encode the digest: %w", err)
	}
	msg := &nats.Msg{
		Subject: jsaudit.DigestSubject(d.FromSeq, d.ToSeq),
		Data:    body,
		Header:  nats.Header{"Content-Type": []string{jsaudit.DigestContentType}},
	}
	ack, err := s.cfg.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(jsaudit.DigestMsgID(d.ToSeq)),
		jetstream.WithExpectStream(jsaudit.DigestStreamName), jetstream.WithExpectLastSequence(*lastSeq))
	if err != nil {
		return fmt.Errorf("failed to publish the digest of %d-%d: %w", d.FromSeq, d.ToSeq, err)
	}
	if ack.Duplicate {
		return fmt.Errorf("a digest ending at %d already exists: another sealer is running", d.ToSeq)
	}
	*lastSeq = ack.Sequence
	s.setStatus(func(st *Status) { st.SealedTo, st.LastError = d.ToSeq, ""; st.Digests++ })
	return nil
}

// checkResumePoint verifies the digest the sealer resumes from, when it was
// signed with the sealer's current keys. A digest that fails is reported
// loudly; sealing goes on (stopping would leave the trail unsealed), and
// `keyflow audit verify` names the digest.
func (s *Sealer) checkResumePoint(d *chain.Digest) {
	ks, err := chain.NewKeySet(s.PublicKeys())
	if err != nil {
		return
	}
	err = ks.VerifySignatures(d)
	if err == nil || errors.Is(err, chain.ErrUnknownKey) {
		return // an older key version signed it: verify checks it with every version
	}
	s.log.Error("the last audit digest does not verify: the digest stream may have been tampered with",
		"from", d.FromSeq, "to", d.ToSeq, "err", err)
}

var errKeyChanged = errors.New("sealer: a sealer key's primary version changed")

// sign makes both signatures, in parallel, with the key versions the
// digest names (d.Signatures[0] Ed25519, [1] ML-DSA-65).
func (s *Sealer) sign(ctx context.Context, d *chain.Digest) error {
	msg := d.SignedMessage()
	params := []kms.SignParams{
		{KeyRef: d.Signatures[0].KeyID, Message: msg, MessageType: kms.MessageRaw, Algorithm: kms.SignEd25519SHA512},
		{KeyRef: d.Signatures[1].KeyID, Message: msg, MessageType: kms.MessageRaw, Algorithm: kms.SignMLDSA, Context: chain.MLDSAContext},
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range params {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := d.Signatures[i]
			res, err := s.cfg.KMS.Sign(ctx, Caller, params[i])
			if err != nil {
				errs[i] = fmt.Errorf("failed to sign the digest of %d-%d with %s: %w", d.FromSeq, d.ToSeq, want.KeySpec, err)
				return
			}
			if res.KeyID != want.KeyID || res.KeyVersion != want.KeyVersion {
				// Sign uses the primary version, which is no longer the
				// one the signed message names.
				errs[i] = errKeyChanged
				return
			}
			d.Signatures[i].Signature = res.Signature
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
