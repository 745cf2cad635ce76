package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
	"google.golang.org/grpc/credentials"

	"github.com/keyflow/keyflow/deploy/config"
)

// Tracing: keyflow's spans go through OpenTelemetry's global tracer
// provider and the W3C trace-context propagator, which StartTracing (or
// InstallTracing) sets for the process. The path of one request:
//
//	keyflow <op>            the client (package client), kind client
//	keyflow.worker <op>     the worker (workers/rpc), kind server, from the traceparent NATS header
//	keyflow.hsm <op>        each PKCS#11 operation (hsm/pkcs11's Trace hook, TraceHSM)
//
// and through Temporal, the SDK's tracing interceptor (StartWorkflow,
// RunWorkflow, StartActivity, RunActivity spans) on the clients that
// Dial and the dev stack open, with the HSM spans of the activities under
// them. Until a provider is installed every span is a no-op.

// Tracing is the process's installed tracer provider.
type Tracing struct {
	tp *sdktrace.TracerProvider
}

// StartTracing installs the tracer provider that c configures, as the
// process's global one, with the W3C propagator; nil when c is off.
func StartTracing(ctx context.Context, c config.Tracing, stdout io.Writer) (*Tracing, error) {
	if !c.Enabled() {
		return nil, nil
	}
	var exp sdktrace.SpanExporter
	var err error
	switch c.Exporter {
	case "stdout":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(stdout))
	case "otlp":
		opts := []otlptracegrpc.Option{}
		if c.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpoint(c.Endpoint))
		}
		if c.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else if c.CAFile != "" {
			tc, terr := collectorTLS(c.CAFile)
			if terr != nil {
				return nil, terr
			}
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tc)))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case "otlp-http":
		opts := []otlptracehttp.Option{}
		if c.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpoint(c.Endpoint))
		}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else if c.CAFile != "" {
			tc, terr := collectorTLS(c.CAFile)
			if terr != nil {
				return nil, terr
			}
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tc))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("tracing.exporter: %q is not otlp, otlp-http or stdout", c.Exporter)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to start the %s trace exporter: %w", c.Exporter, err)
	}
	ratio := 1.0
	if c.SampleRatio != nil {
		ratio = *c.SampleRatio
	}
	return InstallTracing(exp, TracingOptions{SampleRatio: ratio, ServiceName: c.ServiceName}), nil
}

func collectorTLS(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tracing.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("tracing.ca_file: no PEM certificate")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// TracingOptions tune InstallTracing.
type TracingOptions struct {
	// SampleRatio is the share of traces started here that are kept
	// (parent-based: a sampled parent is always followed).
	SampleRatio float64
	// ServiceName is the service.name resource (default keyflow).
	ServiceName string
	// Sync exports each span as it ends (tests), instead of in batches.
	Sync bool
}

// InstallTracing makes a provider exporting to exp the process's global
// one, with the W3C trace-context and baggage propagators.
func InstallTracing(exp sdktrace.SpanExporter, o TracingOptions) *Tracing {
	name := o.ServiceName
	if name == "" {
		name = "keyflow"
	}
	res := resource.NewSchemaless(attribute.String("service.name", name))
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
	}
	if o.Sync {
		opts = append(opts, sdktrace.WithSyncer(exp))
	} else {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return &Tracing{tp: tp}
}

// Stop flushes the spans still batched and uninstalls the provider (the
// globals go back to no-ops).
func (t *Tracing) Stop(ctx context.Context) error {
	if t == nil {
		return nil
	}
	otel.SetTracerProvider(noop.NewTracerProvider())
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	return t.tp.Shutdown(ctx)
}

// hsmTracerName names the tracer of the HSM spans.
const hsmTracerName = "github.com/keyflow/keyflow/hsm/pkcs11"

// TraceHSM is pkcs11.Config.Trace: a client span per PKCS#11 operation
// ("keyflow.hsm encrypt"), under the request's span. Its error is the
// operation's failure class only; a failed decryption is recorded as an
// error without its reason, as everywhere else.
func TraceHSM(ctx context.Context, op string) (context.Context, func(error)) {
	ctx, span := otel.Tracer(hsmTracerName).Start(ctx, "keyflow.hsm "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("keyflow.hsm.operation", op)))
	return ctx, func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}
}

// TemporalTracing is the Temporal SDK's OpenTelemetry tracing interceptor,
// for a client's Interceptors (workers created from that client use it
// too): it carries the trace context in workflow and activity headers.
func TemporalTracing() (interceptor.ClientInterceptor, error) {
	i, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{})
	if err != nil {
		return nil, fmt.Errorf("failed to create the Temporal tracing interceptor: %w", err)
	}
	return i, nil
}
