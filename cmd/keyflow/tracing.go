package main

import (
	"context"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/roles"
)

// Tracing of CLI calls. A command joins the caller's trace when TRACEPARENT
// holds a W3C traceparent (as a script or CI job that traces itself sets
// it): its requests carry that trace to the worker and the HSM. With
// OTEL_EXPORTER_OTLP_ENDPOINT set, the CLI's own client spans are sent
// there too (OTLP/gRPC; the exporter's OTEL_EXPORTER_OTLP_* variables
// apply). Neither set: no spans, no headers.

// traceCLI returns ctx in the caller's trace and a function that flushes
// the CLI's spans.
func traceCLI(ctx context.Context) (context.Context, func()) {
	parent, exporting := os.Getenv("TRACEPARENT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	if parent == "" && !exporting {
		return ctx, func() {}
	}
	stop := func() {}
	if exporting {
		if exp, err := otlptracegrpc.New(ctx); err == nil {
			t := roles.InstallTracing(exp, roles.TracingOptions{SampleRatio: 1, ServiceName: "keyflow-cli"})
			stop = func() { flushTracing(t, slog.Default()) }
		}
	} else {
		otel.SetTextMapPropagator(propagation.TraceContext{})
	}
	if parent != "" {
		carrier := api.TraceCarrier{"traceparent": {parent}}
		if st := os.Getenv("TRACESTATE"); st != "" {
			carrier.Set("tracestate", st)
		}
		ctx = otel.GetTextMapPropagator().Extract(ctx, carrier)
	}
	return ctx, stop
}
