package roles

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Change is what Bootstrap did to one stream (a KV bucket is the stream
// KV_<bucket>).
type Change struct {
	Stream string
	Action string   // "created" or "updated"
	Fields []string // for updates: "Replicas: 1 → 3"
}

func (c Change) String() string {
	s := c.Action + " " + c.Stream
	for i, f := range c.Fields {
		if i == 0 {
			s += ": "
		} else {
			s += ", "
		}
		s += f
	}
	return s
}

// Bootstrap creates or updates every stream and KV bucket keyflow uses, as
// the roles would on start (with js's domain and replicas, and o's audit
// retention), and reports what it changed: nothing on a second run. A
// region's (o.Region) are created only in its own JetStream domain.
func Bootstrap(ctx context.Context, js jetstream.JetStream, o Options) ([]Change, error) {
	if err := checkRegionDomain(ctx, js, o.Region); err != nil {
		return nil, err
	}
	rec := &recorder{JetStream: js}
	if _, err := kvstore.Open(ctx, rec); err != nil {
		return rec.changes, err
	}
	// OpenGovernance also watches the policies until its context ends.
	gctx, cancel := context.WithCancel(ctx)
	_, err := kvstore.OpenGovernance(gctx, rec)
	cancel()
	if err != nil {
		return rec.changes, err
	}
	// The audit streams with their retention policy, and the auditor's
	// read-only durables.
	if _, err := jsaudit.Provision(ctx, rec, natsauth.AuditorDurable, jsaudit.MaxAge(o.AuditMaxAge), jsaudit.MaxBytes(o.AuditMaxBytes), jsaudit.MaxMsgs(o.AuditMaxMsgs)); err != nil {
		return rec.changes, err
	}
	if _, err := sealer.OpenLease(ctx, rec, o.SealerLease); err != nil {
		return rec.changes, err
	}
	if _, err := openMembers(ctx, rec); err != nil {
		return rec.changes, err
	}
	return rec.changes, nil
}

// recorder notes how each stream's configuration differs before and after
// a create-or-update.
type recorder struct {
	jetstream.JetStream
	mu      sync.Mutex
	changes []Change
}

func (r *recorder) CreateOrUpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	before, err := r.config(ctx, c.Name)
	if err != nil {
		return nil, err
	}
	s, err := r.JetStream.CreateOrUpdateStream(ctx, c)
	if err != nil {
		return nil, err
	}
	return s, r.note(ctx, c.Name, before)
}

func (r *recorder) CreateOrUpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	name := "KV_" + c.Bucket
	before, err := r.config(ctx, name)
	if err != nil {
		return nil, err
	}
	kv, err := r.JetStream.CreateOrUpdateKeyValue(ctx, c)
	if err != nil {
		return nil, err
	}
	return kv, r.note(ctx, name, before)
}

// config is a stream's configuration, nil if it does not exist.
func (r *recorder) config(ctx context.Context, name string) (*jetstream.StreamConfig, error) {
	s, err := r.JetStream.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read stream %s: %w", name, err)
	}
	return &info.Config, nil
}

func (r *recorder) note(ctx context.Context, name string, before *jetstream.StreamConfig) error {
	if before == nil {
		r.add(Change{Stream: name, Action: "created"})
		return nil
	}
	after, err := r.config(ctx, name)
	if err != nil {
		return err
	}
	if after == nil {
		return fmt.Errorf("stream %s vanished", name)
	}
	if fields := diff(*before, *after); len(fields) > 0 {
		r.add(Change{Stream: name, Action: "updated", Fields: fields})
	}
	return nil
}

func (r *recorder) add(c Change) {
	r.mu.Lock()
	r.changes = append(r.changes, c)
	r.mu.Unlock()
}

// diff names the fields that differ, with both values.
func diff(a, b jetstream.StreamConfig) []string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		fa, fb := va.Field(i).Interface(), vb.Field(i).Interface()
		if !reflect.DeepEqual(fa, fb) {
			out = append(out, fmt.Sprintf("%s: %v → %v", va.Type().Field(i).Name, fa, fb))
		}
	}
	return out
}
