package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// Cloud distribution (docs/multi-cloud.md): the cloud.* endpoints register
// destinations and put keys into them. The domain (kms/cloud.go,
// kms/cloud_admin.go) decides and records; CloudWorkflows runs the
// durable steps, which talk to the providers.

// CloudWorkflows runs cloud distribution's workflows (Temporal, in
// production: *workflows.Client).
type CloudWorkflows interface {
	// DistributeToCloud starts (or joins) the distribution of a key to a
	// destination and, with wait, waits a bounded time for it: done says
	// it finished, err is its failure.
	DistributeToCloud(ctx context.Context, c kms.Caller, keyID, dest string, wait bool) (workflowID string, done bool, err error)
	// UndistributeFromCloud does the same for the key's removal, which
	// the provider completes after its own deletion window.
	UndistributeFromCloud(ctx context.Context, c kms.Caller, keyID, dest string, wait bool) (workflowID string, done bool, err error)
	// CloudDistributable says whether the connectors take the key's spec.
	CloudDistributable(k *kms.Key) error
	// ScheduleCloudReconcile runs the tenant's reconcile every period
	// (0: no schedule).
	ScheduleCloudReconcile(ctx context.Context, tenant string, period time.Duration) error
	// ProbeCloud asks a destination one cheap question and returns the
	// provider's error code and message (empty when it answered).
	ProbeCloud(ctx context.Context, c kms.Caller, dest string) (code, msg string, latency time.Duration, err error)
}

var errNoCloud = &kms.Error{Code: kms.CodeInternal, Message: "the cloud workflows are not available on this worker"}

func (s *Server) cloudOps() map[string]handlerFunc {
	return map[string]handlerFunc{
		"add": s.cloudAdd, "list": s.cloudList, "status": s.cloudStatus, "remove": s.cloudRemove,
		"distribute": s.cloudDistribute, "undistribute": s.cloudUndistribute,
	}
}

func (s *Server) cloudAdd(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CloudAddRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudAdd, err)
	}
	if n := req.ReconcileEverySeconds; n != 0 && (n < int64(kms.MinCloudReconcile/time.Second) || n > int64(kms.MaxCloudReconcile/time.Second)) {
		return nil, s.rejectWith(ctx, c, api.OpCloudAdd, &kms.Error{Code: kms.CodeValidation, Message: fmt.Sprintf("reconcileEverySeconds is between %d and %d (or 0: no schedule)",
			int64(kms.MinCloudReconcile/time.Second), int64(kms.MaxCloudReconcile/time.Second))})
	}
	if req.ReconcileEverySeconds > 0 && s.cfg.Cloud == nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudAdd, errNoCloud)
	}
	d, err := s.cfg.KMS.AddCloudDestination(ctx, c, kms.CloudDestination{Name: req.Name, Provider: req.Provider, Settings: req.Settings,
		Drift: req.Drift, ReconcileEvery: time.Duration(req.ReconcileEverySeconds) * time.Second})
	if err != nil {
		return nil, err
	}
	if err := s.rescheduleReconcile(ctx, c); err != nil {
		return nil, err
	}
	return destinationToWire(d), nil
}

// rescheduleReconcile sets the tenant's reconcile schedule to the
// shortest period of its destinations.
func (s *Server) rescheduleReconcile(ctx context.Context, c kms.Caller) error {
	if s.cfg.Cloud == nil {
		return nil
	}
	period, err := s.cfg.KMS.CloudReconcilePeriod(ctx, c)
	if err == nil {
		err = s.cfg.Cloud.ScheduleCloudReconcile(ctx, c.Tenant, period)
	}
	if err != nil {
		s.cfg.Logger.Error("cloud reconcile schedule not set", "tenant", c.Tenant, "err", err)
		return &kms.Error{Code: kms.CodeInternal, Message: "the destinations are saved, but the reconcile schedule could not be set; retry keyflow cloud add"}
	}
	return nil
}

func (s *Server) cloudList(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req struct{}
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudList, err)
	}
	ds, err := s.cfg.KMS.ListCloudDestinations(ctx, c)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ds, func(a, b *kms.CloudDestination) int { return strings.Compare(a.Name, b.Name) })
	out := api.CloudListReply{Destinations: make([]api.CloudDestination, 0, len(ds))}
	for _, d := range ds {
		out.Destinations = append(out.Destinations, destinationToWire(d))
	}
	return out, nil
}

func (s *Server) cloudRemove(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CloudNameRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudRemove, err)
	}
	if err := s.cfg.KMS.RemoveCloudDestination(ctx, c, req.Name); err != nil {
		return nil, err
	}
	if err := s.rescheduleReconcile(ctx, c); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) cloudStatus(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.CloudStatusRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudStatus, err)
	}
	if req.Probe && s.cfg.Cloud == nil {
		return nil, s.rejectWith(ctx, c, api.OpCloudStatus, errNoCloud)
	}
	sts, err := s.cfg.KMS.CloudStatus(ctx, c, req.Name)
	if err != nil {
		return nil, err
	}
	out := api.CloudStatusReply{Destinations: make([]api.CloudDestinationStatus, 0, len(sts))}
	for _, st := range sts {
		ds := api.CloudDestinationStatus{Name: st.Destination.Name, Provider: st.Destination.Provider, Drift: st.Destination.Drift,
			Placements: st.Placements, Pending: []api.CloudPlacement{}}
		for _, w := range st.Pending {
			p := placementToWire(w.Placement)
			p.Why = w.Why
			ds.Pending = append(ds.Pending, p)
		}
		if e := st.LastError; e != nil {
			t := e.LastErrorAt
			ds.LastErrorCode, ds.LastError, ds.LastErrorAt = e.LastErrorCode, e.LastError, &t
		}
		ds.Health = healthOf(ds.LastErrorCode, st.Placements > 0)
		if req.Probe {
			at := time.Now().UTC()
			code, msg, latency, err := s.cfg.Cloud.ProbeCloud(ctx, c, st.Destination.Name)
			if err != nil {
				s.cfg.Logger.Warn("cloud probe did not run", "destination", st.Destination.Name, "err", err)
				code, msg = "ProbeFailed", kms.PublicMessage(err)
			}
			ds.Probe = &api.CloudProbe{At: at, LatencyMillis: latency.Milliseconds(), ErrorCode: code, Error: msg}
			ds.Health = healthOf(code, true)
		}
		out.Destinations = append(out.Destinations, ds)
	}
	return out, nil
}

// healthOf is a destination's health from its last provider error code
// (empty: none), when anything was asked of it (asked).
func healthOf(code string, asked bool) string {
	switch {
	case code == "Unavailable":
		return api.CloudHealthUnreachable
	case code != "":
		return api.CloudHealthError
	case asked:
		return api.CloudHealthOK
	}
	return api.CloudHealthUnknown
}

func (s *Server) cloudDistribute(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.cloudMove(ctx, c, body, api.OpCloudDistribute, false)
}

func (s *Server) cloudUndistribute(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	return s.cloudMove(ctx, c, body, api.OpCloudUndistribute, true)
}

// cloudMove starts a distribution (remove false) or an undistribution.
func (s *Server) cloudMove(ctx context.Context, c kms.Caller, body []byte, op string, remove bool) (any, error) {
	var req api.CloudDistributeRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, op, err)
	}
	if s.cfg.Cloud == nil {
		return nil, s.rejectWith(ctx, c, op, errNoCloud)
	}
	k, d, err := s.cfg.KMS.CheckCloudDistribution(ctx, c, op, req.KeyID, req.Destination, remove)
	if err != nil {
		return nil, err
	}
	start := s.cfg.Cloud.DistributeToCloud
	if remove {
		start = s.cfg.Cloud.UndistributeFromCloud
	} else if err := s.cfg.Cloud.CloudDistributable(k); err != nil {
		return nil, s.rejectWith(ctx, c, op, err)
	}
	id, done, err := start(ctx, c, k.ID, d.Name, req.Wait)
	out := api.CloudDistributeReply{KeyID: k.ID, Destination: d.Name, WorkflowID: id, Running: !done}
	if err != nil {
		if _, ok := errors.AsType[*kms.Error](err); ok {
			return nil, err // the workflow failed, and recorded why
		}
		s.cfg.Logger.Error("cloud workflow not started", "key", k.ResourceName(), "destination", d.Name, "err", err)
		return nil, s.rejectWith(ctx, c, op, &kms.Error{Code: kms.CodeInternal, Message: "the cloud workflow could not be started; retry"})
	}
	if done && !remove {
		if p, err := s.cfg.KMS.CloudPlacement(ctx, c, k.ID, d.Name); err == nil {
			w := placementToWire(p)
			out.Placement = &w
		}
	}
	return out, nil
}

// cloudMetadata adds where a key lives in cloud KMSs to its describe
// reply. A store without destinations has none.
func (s *Server) cloudMetadata(ctx context.Context, c kms.Caller, m *api.KeyMetadata) {
	ps, err := s.cfg.KMS.CloudPlacements(ctx, c, m.KeyID)
	if err != nil {
		return
	}
	slices.SortFunc(ps, func(a, b *kms.CloudPlacement) int { return strings.Compare(a.Destination, b.Destination) })
	for _, p := range ps {
		m.Clouds = append(m.Clouds, placementToWire(p))
	}
}

func destinationToWire(d *kms.CloudDestination) api.CloudDestination {
	return api.CloudDestination{Name: d.Name, Provider: d.Provider, Settings: d.Settings, Drift: d.Drift,
		ReconcileEverySeconds: int64(d.ReconcileEvery / time.Second), CreationDate: d.Created}
}

func placementToWire(p *kms.CloudPlacement) api.CloudPlacement {
	w := api.CloudPlacement{KeyID: p.KeyID, Destination: p.Destination, Provider: p.Provider, Resource: p.Resource, State: p.State,
		Pending: p.Pending, LastErrorCode: p.LastErrorCode, LastError: p.LastError}
	if v, ok := p.Primary(); ok {
		w.KeyVersion, w.ProviderVersion = v.KeyVersion, v.ProviderVersion
	}
	if !p.LastSync.IsZero() {
		t := p.LastSync
		w.LastSync = &t
	}
	if !p.LastErrorAt.IsZero() {
		t := p.LastErrorAt
		w.LastErrorAt = &t
	}
	return w
}
