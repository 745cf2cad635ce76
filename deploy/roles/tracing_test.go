package roles_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/roles"
)

// spansOf returns the ended spans of one trace, waiting up to 20 s until
// want says the set is complete.
func spansOf(t *testing.T, exp *tracetest.InMemoryExporter, id trace.TraceID, want func([]tracetest.SpanStub) bool) []tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out []tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == id {
				out = append(out, s)
			}
		}
		if want(out) {
			return out
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range out {
				names = append(names, s.Name)
			}
			t.Fatalf("trace %s is incomplete: %q", id, names)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func named(spans []tracetest.SpanStub, prefix string) *tracetest.SpanStub {
	for i := range spans {
		if strings.HasPrefix(spans[i].Name, prefix) {
			return &spans[i]
		}
	}
	return nil
}

func parentOf(child, parent *tracetest.SpanStub) bool {
	return child != nil && parent != nil && child.Parent.SpanID() == parent.SpanContext.SpanID()
}

// An encrypt is one trace from the application's span through the
// client's, across NATS (traceparent header) to the worker's and down to
// the HSM call's; a rotation's trace runs from the admin request through
// Temporal (the SDK's interceptor) into the workflow and its activities'
// HSM calls, across two processes' worth of roles.
func TestOneTraceFromClientThroughWorkerToHSM(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := roles.InstallTracing(exp, roles.TracingOptions{SampleRatio: 1, Sync: true})
	t.Cleanup(func() { _ = tr.Stop(context.Background()) })

	c := startCluster(t)
	cfg := c.config(t, "tracing: {exporter: stdout}\n") // wires the HSM hook and the Temporal interceptor
	bootstrap(t, cfg)
	serve(t, cfg, "admin,lifecycle")
	serve(t, cfg, "crypto")

	ctx := context.Background()
	cl := c.adminClient(t)
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}

	app := otel.Tracer("keyflow-test")
	actx, root := app.Start(ctx, "application request")
	if _, err := cl.Encrypt(actx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("traced")}); err != nil {
		t.Fatal(err)
	}
	root.End()
	spans := spansOf(t, exp, root.SpanContext().TraceID(), func(s []tracetest.SpanStub) bool {
		return named(s, "keyflow.hsm encrypt") != nil && named(s, "keyflow crypto.encrypt") != nil
	})
	app0, cli, wrk, hsm := named(spans, "application request"), named(spans, "keyflow crypto.encrypt"), named(spans, "keyflow.worker crypto.encrypt"), named(spans, "keyflow.hsm encrypt")
	if !parentOf(cli, app0) || !parentOf(wrk, cli) || !parentOf(hsm, wrk) {
		t.Fatalf("encrypt trace is not application → client → worker → HSM: app %v, client %v, worker %v, hsm %v", app0 != nil, cli, wrk, hsm)
	}
	if cli.SpanKind != trace.SpanKindClient || wrk.SpanKind != trace.SpanKindServer {
		t.Errorf("span kinds: client %v, worker %v", cli.SpanKind, wrk.SpanKind)
	}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.Emit(), "traced") {
				t.Errorf("span %q carries the plaintext in %s", s.Name, a.Key)
			}
		}
	}

	// A refused request marks the worker's span with its code.
	actx, root = app.Start(ctx, "refused request")
	_, err = cl.Decrypt(actx, api.DecryptRequest{CiphertextBlob: []byte("not a ciphertext at all, not even close")})
	root.End()
	var ce *client.Error
	if err == nil || !errors.As(err, &ce) {
		t.Fatalf("decrypt of garbage: %v", err)
	}
	spans = spansOf(t, exp, root.SpanContext().TraceID(), func(s []tracetest.SpanStub) bool {
		return named(s, "keyflow.worker crypto.decrypt") != nil && named(s, "keyflow crypto.decrypt") != nil
	})
	if w := named(spans, "keyflow.worker crypto.decrypt"); w.Status.Description != ce.Code {
		t.Errorf("refused decrypt's worker span status %q, want %q", w.Status.Description, ce.Code)
	}

	// Rotation: admin request → Temporal workflow → activity → HSM.
	actx, root = app.Start(ctx, "rotate request")
	if _, err := cl.RotateKey(actx, key.KeyID); err != nil {
		t.Fatal(err)
	}
	root.End()
	spans = spansOf(t, exp, root.SpanContext().TraceID(), func(s []tracetest.SpanStub) bool {
		return named(s, "RunWorkflow:") != nil && named(s, "RunActivity:") != nil && named(s, "keyflow.hsm ") != nil
	})
	wrk, start, run := named(spans, "keyflow.worker keys.rotate"), named(spans, "StartWorkflow:"), named(spans, "RunWorkflow:")
	if wrk == nil || start == nil || !parentOf(run, start) {
		t.Fatalf("rotation trace lacks the worker → StartWorkflow → RunWorkflow chain: %v %v %v", wrk, start, run)
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	t.Logf("rotation trace: %q", names)
}
