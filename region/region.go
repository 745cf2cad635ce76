// Package region links keyflow deployments in several regions into one
// logical KMS for multi-region keys (docs/multi-region.md). It is a thin
// NATS adapter, like the workers: the domain calls are in kms
// (kms/replica.go), the durable sync is a Temporal workflow in the primary
// region (workflows/replication.go), and the link itself is NATS's own, a
// leaf-node connection between the deployments' servers
// (deploy/natsserver, LeafListen and LeafRemotes) that carries only the
// subjects below (natsauth.RegionSubjects).
//
// The protocol is request/reply on kf.region.v1.<region>.<op>, answered
// by the Responder of the region named:
//
//	params    the replica HSM's wrapping public key and an import token
//	          for one key (kms.ReplicaImportParameters)
//	version   one version: the primary's key metadata and the material
//	          wrapped to that public key (kms.ApplyReplicaVersion)
//	metadata  the primary's key metadata (kms.ApplyReplicaMetadata)
//	destroyed a replica region's report, to the key's primary, that the
//	          window of its deletion ended and its material is destroyed
//	          (kms.MarkReplicaDestroyed)
//
// A replica's scheduled deletion runs on the replica region's own
// Temporal, with the standard deletion timer: when a metadata message
// makes the replica pending deletion (or cancels that), the Responder
// calls its DeletionTimers (workflows.Client), and refuses the message
// for a retry if the timer cannot be started, so the primary's sync
// carries on until it is.
//
// Every Responder also announces its region on kf.region.v1._hello.<region>
// once a second (HelloSubject). A hello from a region after a silence
// (the link came back, or that region restarted) makes the Responder call
// its SyncWaker (workflows.Client), which signals this region's running
// replica syncs towards that region: they try again at once instead of at
// their next retry, up to DefaultReplicaRetryMax later.
//
// What crosses the link: key metadata (no material), RSA public keys,
// import tokens (MAC'd; the private key in them is wrapped under the
// replica's root key) and versions wrapped to the replica HSM's public key
// with RSA-OAEP. Never plaintext material, never a root key.
//
// Peer is the sending side, used by the replication activities.
package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/keyflow/keyflow/kms"
)

// Subject is the subject of op in region.
func Subject(region, op string) string { return "kf.region.v1." + region + "." + op }

// Operations.
const (
	OpParams    = "params"
	OpVersion   = "version"
	OpMetadata  = "metadata"
	OpDestroyed = "destroyed"
)

// DestroyedRequest is a replica region's report to the key's primary
// that it destroyed its material.
type DestroyedRequest struct {
	From   string `json:"from"`
	Tenant string `json:"tenant"`
	KeyID  string `json:"keyId"`
}

// DeletionTimers run the region's standard deletion timer for a replica
// whose primary scheduled its deletion (workflows.Client implements it).
// ScheduleDeletion starts the timer for k.Lifecycle.DeletionDate,
// replacing one that runs (so calling it again is safe); CancelDeletion
// stops it.
type DeletionTimers interface {
	ScheduleDeletion(ctx context.Context, c kms.Caller, k *kms.Key) (string, error)
	CancelDeletion(ctx context.Context, c kms.Caller, keyID string) error
}

// ParamsRequest asks a replica region for import parameters.
type ParamsRequest struct {
	From   string `json:"from"`
	Tenant string `json:"tenant"`
	KeyID  string `json:"keyId"`
}

// ParamsReply carries the replica HSM's wrapping public key and token.
type ParamsReply struct {
	PublicKey   []byte      `json:"publicKey,omitempty"`
	ImportToken []byte      `json:"importToken,omitempty"`
	Error       *ErrorReply `json:"error,omitempty"`
}

// VersionRequest carries one version to a replica region.
type VersionRequest struct {
	From        string   `json:"from"`
	Key         *kms.Key `json:"key"`
	Version     uint32   `json:"version"`
	Wrapped     []byte   `json:"wrapped"`
	ImportToken []byte   `json:"importToken"`
}

// MetadataRequest carries the primary's key metadata to a replica region.
type MetadataRequest struct {
	From string   `json:"from"`
	Key  *kms.Key `json:"key"`
}

// ApplyReply answers VersionRequest and MetadataRequest.
type ApplyReply struct {
	Applied bool        `json:"applied"`
	Newest  uint32      `json:"newestVersion,omitempty"`
	Error   *ErrorReply `json:"error,omitempty"`
}

// ErrorReply is a refusal with kms's stable code.
type ErrorReply struct {
	Code    kms.Code `json:"code"`
	Message string   `json:"message"`
}

// RemoteError is a refusal by the other region.
type RemoteError struct {
	Region  string
	Code    kms.Code
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("region %s refused: %s: %s", e.Region, e.Code, e.Message)
}

// RefusalCode is the other region's stable code
// (workflows.RegionRefusal).
func (e *RemoteError) RefusalCode() kms.Code { return e.Code }

// HelloSubject is where region announces itself to the regions it is
// linked with. "_hello" is no region name, so it cannot clash with a
// region's own subjects, and it stays inside the link user's
// kf.region.v1.>.
func HelloSubject(region string) string { return "kf.region.v1._hello." + region }

// DefaultHelloInterval is how often a Responder announces its region.
const DefaultHelloInterval = time.Second

// helloSilence is how many intervals without a region's hello make its
// next one a link-up.
const helloSilence = 3

// SyncWaker wakes this region's replica syncs towards a region whose
// link came back (workflows.Client implements it).
type SyncWaker interface {
	WakeReplicaSyncs(ctx context.Context, region string) (int, error)
}

// Responder answers replication requests for this region.
type Responder struct {
	subs []*nats.Subscription
	stop chan struct{}
	once sync.Once
}

// Stop unsubscribes and stops the announcements.
func (r *Responder) Stop() {
	r.once.Do(func() {
		close(r.stop)
		for _, s := range r.subs {
			_ = s.Unsubscribe()
		}
	})
}

// ResponderConfig wires a Responder.
type ResponderConfig struct {
	Conn   *nats.Conn // a service-account connection
	KMS    *kms.Service
	Logger *slog.Logger
	// Deletions runs the deletion timer of this region's replicas; nil
	// leaves a replica pending deletion without a timer (a region with
	// no Temporal).
	Deletions DeletionTimers
	// Wake wakes this region's replica syncs towards a region that
	// announces itself after a silence (a link back, or its restart); nil
	// leaves them to their next retry.
	Wake SyncWaker
	// HelloInterval is how often the Responder announces its region
	// (0: DefaultHelloInterval).
	HelloInterval time.Duration
}

// Serve answers kf.region.v1.<region>.> for the KMS's region.
func Serve(cfg ResponderConfig) (*Responder, error) {
	region := cfg.KMS.Region()
	if !kms.ValidRegion(region) {
		return nil, errors.New("region: the KMS has no region")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &handler{kms: cfg.KMS, log: cfg.Logger, timers: cfg.Deletions}
	sub, err := cfg.Conn.QueueSubscribe(Subject(region, ">"), "kf-region", h.serve)
	if err != nil {
		return nil, fmt.Errorf("failed to subscribe to the region link: %w", err)
	}
	r := &Responder{subs: []*nats.Subscription{sub}, stop: make(chan struct{})}
	if cfg.HelloInterval <= 0 {
		cfg.HelloInterval = DefaultHelloInterval
	}
	w := &waker{region: region, wake: cfg.Wake, log: cfg.Logger, silence: helloSilence * cfg.HelloInterval, seen: map[string]time.Time{}}
	// Not a queue group: each process must hear every hello to tell a
	// silence from its share of them (a queue group would also span the
	// leaf link, and every region must hear the others).
	hello, err := cfg.Conn.Subscribe(HelloSubject("*"), w.hello)
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("failed to subscribe to the region link: %w", err)
	}
	r.subs = append(r.subs, hello)
	if err := cfg.Conn.Flush(); err != nil {
		r.Stop()
		return nil, fmt.Errorf("failed to subscribe to the region link: %w", err)
	}
	go announce(cfg.Conn, region, cfg.HelloInterval, r.stop)
	return r, nil
}

// announce publishes the region's hello at once and then every interval
// until stop. A hello sent while the link is down reaches no one; the
// first one after the link is back tells the other side.
func announce(nc *nats.Conn, region string, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = nc.Publish(HelloSubject(region), nil)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// waker turns the other regions' hellos into wakes of the replica syncs
// towards them: a hello after a silence (the first one, or one after
// missed intervals) means the link to that region came back.
type waker struct {
	region  string
	wake    SyncWaker
	log     *slog.Logger
	silence time.Duration

	mu   sync.Mutex
	seen map[string]time.Time
}

func (w *waker) hello(m *nats.Msg) {
	from := m.Subject[len(HelloSubject("")):]
	if from == w.region || !kms.ValidRegion(from) {
		return
	}
	now := time.Now()
	w.mu.Lock()
	last, ok := w.seen[from]
	w.seen[from] = now
	w.mu.Unlock()
	if ok && now.Sub(last) <= w.silence || w.wake == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := w.wake.WakeReplicaSyncs(ctx, from)
		if err != nil {
			w.log.Warn("region: failed to wake the replica syncs of a region that is back", "region", from, "err", err)
			return
		}
		if n > 0 {
			w.log.Info("region: link up, woke the replica syncs", "region", from, "syncs", n)
		}
	}()
}

type handler struct {
	kms    *kms.Service
	log    *slog.Logger
	timers DeletionTimers
}

func caller(tenant, from string) kms.Caller {
	return kms.Caller{Tenant: tenant, Principal: "region:" + from, RequestID: nuid.Next()}
}

func errReply(err error) *ErrorReply {
	return &ErrorReply{Code: kms.CodeOf(err), Message: kms.PublicMessage(err)}
}

func (h *handler) serve(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op := m.Subject[len(Subject(h.kms.Region(), "")):]
	var reply any
	switch op {
	case OpParams:
		var req ParamsRequest
		rep := &ParamsReply{}
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep.Error = &ErrorReply{Code: kms.CodeValidation, Message: "the request is not JSON"}
		} else if p, err := h.kms.ReplicaImportParameters(ctx, caller(req.Tenant, req.From), req.KeyID); err != nil {
			rep.Error = errReply(err)
		} else {
			rep.PublicKey, rep.ImportToken = p.PublicKey, p.ImportToken
		}
		reply = rep
	case OpVersion:
		var req VersionRequest
		rep := &ApplyReply{}
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Key == nil {
			rep.Error = &ErrorReply{Code: kms.CodeValidation, Message: "the request is not a version message"}
		} else if res, err := h.kms.ApplyReplicaVersion(ctx, caller(req.Key.Tenant, req.From), kms.ApplyReplicaParams{
			From: req.From, Key: req.Key, Version: req.Version, Wrapped: req.Wrapped, ImportToken: req.ImportToken,
		}); err != nil {
			rep.Error = errReply(err)
		} else {
			rep.Applied, rep.Newest = res.Applied, res.Key.NewestVersion()
		}
		reply = rep
	case OpMetadata:
		var req MetadataRequest
		rep := &ApplyReply{}
		if err := json.Unmarshal(m.Data, &req); err != nil || req.Key == nil {
			rep.Error = &ErrorReply{Code: kms.CodeValidation, Message: "the request is not a metadata message"}
		} else if res, err := h.kms.ApplyReplicaMetadata(ctx, caller(req.Key.Tenant, req.From), kms.ApplyMetadataParams{From: req.From, Key: req.Key}); err != nil {
			rep.Error = errReply(err)
		} else if err := h.deletionTimer(ctx, caller(req.Key.Tenant, req.From), res); err != nil {
			h.log.Warn("region: failed to run a replica's deletion timer", "key", res.Key.ID, "err", err)
			rep.Error = &ErrorReply{Code: kms.CodeInternal, Message: "the replica region could not start or stop the deletion timer of the key; retry"}
		} else {
			rep.Applied, rep.Newest = res.Applied, res.Key.NewestVersion()
		}
		reply = rep
	case OpDestroyed:
		var req DestroyedRequest
		rep := &ApplyReply{}
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep.Error = &ErrorReply{Code: kms.CodeValidation, Message: "the request is not a destruction report"}
		} else if res, err := h.kms.MarkReplicaDestroyed(ctx, caller(req.Tenant, req.From), kms.ReplicaDestroyedParams{From: req.From, KeyID: req.KeyID}); err != nil {
			rep.Error = errReply(err)
		} else {
			rep.Applied = res.Applied
		}
		reply = rep
	default:
		reply = &ApplyReply{Error: &ErrorReply{Code: kms.CodeValidation, Message: "unknown region operation"}}
	}
	b, err := json.Marshal(reply)
	if err != nil {
		h.log.Error("region: failed to encode a reply", "err", err)
		return
	}
	if err := m.Respond(b); err != nil {
		h.log.Warn("region: failed to reply", "err", err)
	}
}

// deletionTimer starts or stops the deletion timer of a replica whose
// deletion its primary scheduled or cancelled. It starts the timer for
// every metadata message to a replica pending deletion, changed or not,
// so a message retried after a failure to start it starts it; it stops
// the timer when a message changed the replica (a cancel).
func (h *handler) deletionTimer(ctx context.Context, c kms.Caller, res *kms.ApplyResult) error {
	k := res.Key
	if h.timers == nil {
		return nil
	}
	switch {
	case h.kms.ReplicaDeletionPending(k):
		_, err := h.timers.ScheduleDeletion(ctx, c, k)
		return err
	case res.Applied && h.kms.ReplicaDeletionCancelled(k):
		// Best effort: a timer left running destroys nothing, since the
		// replica is no longer pending deletion for its date.
		if err := h.timers.CancelDeletion(ctx, c, k.ID); err != nil {
			h.log.Warn("region: failed to stop a replica's deletion timer", "key", k.ID, "err", err)
		}
	}
	return nil
}

// Peer sends replication requests to other regions over the link.
//
// It keeps each key's import parameters for an hour (a token is valid for
// 24): making an RSA-3072 wrapping key pair costs the replica's HSM
// hundreds of milliseconds, and one pair serves every version of the key
// sent meanwhile (each is a separate RSA-OAEP encryption). A refused
// token is forgotten at once.
type Peer struct {
	Conn    *nats.Conn
	From    string        // this region
	Timeout time.Duration // per request; default 30s

	mu     sync.Mutex
	params map[[3]string]cachedParams
}

type cachedParams struct {
	publicKey, token []byte
	until            time.Time
}

// paramsLifetime is how long Peer reuses import parameters.
const paramsLifetime = time.Hour

func (p *Peer) request(ctx context.Context, region, op string, req, rep any) error {
	if !kms.ValidRegion(region) {
		return fmt.Errorf("region: %q is not a region name", region)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("failed to encode a region request: %w", err)
	}
	timeout := p.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := p.Conn.RequestWithContext(ctx, Subject(region, op), b)
	if err != nil {
		return fmt.Errorf("failed to reach region %s (is the link up?): %w", region, err)
	}
	if err := json.Unmarshal(m.Data, rep); err != nil {
		return fmt.Errorf("failed to decode the reply of region %s: %w", region, err)
	}
	return nil
}

func remote(region string, e *ErrorReply) error {
	if e == nil {
		return nil
	}
	return &RemoteError{Region: region, Code: e.Code, Message: e.Message}
}

// ImportParameters asks region for a wrapping public key and import token.
func (p *Peer) ImportParameters(ctx context.Context, region, tenant, keyID string) (publicKey, token []byte, err error) {
	ck := [3]string{region, tenant, keyID}
	p.mu.Lock()
	c, ok := p.params[ck]
	p.mu.Unlock()
	if ok && time.Now().Before(c.until) {
		return c.publicKey, c.token, nil
	}
	var rep ParamsReply
	if err := p.request(ctx, region, OpParams, ParamsRequest{From: p.From, Tenant: tenant, KeyID: keyID}, &rep); err != nil {
		return nil, nil, err
	}
	if err := remote(region, rep.Error); err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	if p.params == nil {
		p.params = map[[3]string]cachedParams{}
	}
	p.params[ck] = cachedParams{publicKey: rep.PublicKey, token: rep.ImportToken, until: time.Now().Add(paramsLifetime)}
	p.mu.Unlock()
	return rep.PublicKey, rep.ImportToken, nil
}

// ApplyVersion sends one wrapped version to region.
func (p *Peer) ApplyVersion(ctx context.Context, region string, k *kms.Key, version uint32, wrapped, token []byte) (bool, error) {
	var rep ApplyReply
	if err := p.request(ctx, region, OpVersion, VersionRequest{From: p.From, Key: k, Version: version, Wrapped: wrapped, ImportToken: token}, &rep); err != nil {
		return false, err
	}
	if rep.Error != nil && (rep.Error.Code == kms.CodeInvalidImportToken || rep.Error.Code == kms.CodeExpiredImportToken) {
		p.mu.Lock()
		delete(p.params, [3]string{region, k.Tenant, k.ID})
		p.mu.Unlock()
	}
	return rep.Applied, remote(region, rep.Error)
}

// ApplyMetadata sends the key's metadata to region.
func (p *Peer) ApplyMetadata(ctx context.Context, region string, k *kms.Key) (bool, error) {
	var rep ApplyReply
	if err := p.request(ctx, region, OpMetadata, MetadataRequest{From: p.From, Key: k}, &rep); err != nil {
		return false, err
	}
	return rep.Applied, remote(region, rep.Error)
}

// ReplicaDestroyed reports to primaryRegion that this region destroyed its
// replica of the key.
func (p *Peer) ReplicaDestroyed(ctx context.Context, primaryRegion, tenant, keyID string) (bool, error) {
	var rep ApplyReply
	if err := p.request(ctx, primaryRegion, OpDestroyed, DestroyedRequest{From: p.From, Tenant: tenant, KeyID: keyID}, &rep); err != nil {
		return false, err
	}
	return rep.Applied, remote(primaryRegion, rep.Error)
}
