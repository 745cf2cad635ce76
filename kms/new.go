package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/hsm"
)

// Config wires a Service.
type Config struct {
	HSM          hsm.Backend
	RootKeyLabel string // default "keyflow-root"
	Store        Store
	Audit        events.Sink
	// Source is the CloudEvents source of this instance's events, e.g.
	// /keyflow/worker/<host>.
	Source    string
	CacheSize int // unwrapped versions kept in the HSM; default 1024
	Logger    *slog.Logger
	Now       func() time.Time
	// AuditFailOpen relaxes keyflow's default (fail-closed: no audit, no
	// crypto). When set, an operation whose audit record cannot be stored
	// proceeds anyway; the worker logs each lost record at error level and
	// counts them (DroppedAuditRecords). Starting with it is itself
	// recorded (io.keyflow.audit.policy.changed.v1, failClosed=false), and
	// New fails if that record cannot be stored. Weaker: use only where
	// availability outranks a complete trail.
	AuditFailOpen bool
	// Governance stores tenant policies and approval requests (see
	// TenantPolicy); nil disables them (no approvals, quotas, profiles).
	Governance GovernanceStore
	// Region names this deployment for multi-region keys (replica.go);
	// empty for a single-region deployment.
	Region string
}

// New returns a Service, creating the HSM root key on first use.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.HSM == nil || cfg.Store == nil || cfg.Audit == nil {
		return nil, errors.New("kms: HSM, Store and Audit are required")
	}
	if cfg.RootKeyLabel == "" {
		cfg.RootKeyLabel = "keyflow-root"
	}
	if cfg.Source == "" {
		cfg.Source = events.SpecSource
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	root, err := cfg.HSM.EnsureRootKey(ctx, cfg.RootKeyLabel)
	if err != nil {
		return nil, fmt.Errorf("failed to open the root key: %w", err)
	}
	s := &Service{
		hsm: cfg.HSM, root: root, label: cfg.RootKeyLabel, store: cfg.Store,
		audit: cfg.Audit, source: cfg.Source, log: cfg.Logger, now: cfg.Now,
		handles:  newHandleCache(cfg.HSM, cfg.CacheSize),
		meta:     map[[2]string]*Key{},
		mats:     map[versionRef]*VersionMaterial{},
		failOpen: cfg.AuditFailOpen,
		gov:      governance{store: cfg.Governance},
		region:   cfg.Region,
	}
	if err := s.authenticateAudit(ctx); err != nil {
		return nil, fmt.Errorf("failed to derive the audit record key: %w", err)
	}
	if s.failOpen {
		// Relaxing the guarantee is itself on the record, before the
		// first operation can rely on it.
		err := s.audit.Emit(ctx, events.Record{
			Type: events.TypeAuditPolicyChanged, Source: s.source, Tenant: "-", Time: s.now(),
			Outcome: events.OutcomeSuccess, Data: map[string]any{"failClosed": false},
		})
		if err != nil {
			return nil, fmt.Errorf("failed to record the fail-open audit policy: %w", err)
		}
		s.log.Warn("audit is FAIL-OPEN: operations proceed when their audit record cannot be stored")
	}
	return s, nil
}
