package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/sealer"
)

// Dial opens the infrastructure a configuration names, for the roles
// given: NATS connections with each role's creds, JetStream with the
// configured domain and replicas, the PKCS#11 token, the Temporal client
// and the identity file. Close releases what it opened.
func Dial(ctx context.Context, c *config.Config, rs []Role, log *slog.Logger) (in Infra, closeFn func(), err error) {
	var closers []func()
	closeFn = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeFn()
		}
	}()
	in.Logger = log
	in.Metrics = NewMetrics()
	natsOpts, err := natsOptions(c.NATS)
	if err != nil {
		return in, closeFn, err
	}
	url := strings.Join(c.NATS.URLs, ",")
	in.Connect = func(ctx context.Context, r Role, name string) (*nats.Conn, error) {
		opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second)}, natsOpts...)
		creds := c.NATS.CredsFile
		if rc := c.NATS.RoleCreds[string(r)]; rc != "" {
			creds = rc
		}
		if creds != "" {
			opts = append(opts, nats.UserCredentials(creds))
		}
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			return nil, fmt.Errorf("failed to connect to NATS at %s as %s: %w", url, name, err)
		}
		return nc, nil
	}
	in.JetStream = JetStreamWith(c.NATS.Domain, c.NATS.Replicas)

	if NeedsHSM(rs) {
		pin, err := config.ReadSecret(c.HSM.PINFile)
		if err != nil {
			return in, closeFn, fmt.Errorf("hsm.pin_file: %w", err)
		}
		pc := pkcs11.Config{Module: c.HSM.Module, TokenLabel: c.HSM.TokenLabel, PIN: pin, Sessions: c.HSM.Sessions, Observe: in.Metrics.ObserveHSM}
		if c.Tracing.Enabled() {
			pc.Trace = TraceHSM
		}
		tok, err := pkcs11.Open(ctx, pc)
		if err != nil {
			return in, closeFn, fmt.Errorf("failed to open the HSM token %q: %w", c.HSM.TokenLabel, err)
		}
		closers = append(closers, func() { _ = tok.Close() })
		in.HSM = tok
	}
	if NeedsTemporal(rs) {
		opts, err := TemporalOptions(c.Temporal)
		if err != nil {
			return in, closeFn, err
		}
		if log != nil {
			opts.Logger = tlog.NewStructuredLogger(log)
		}
		if c.Tracing.Enabled() {
			ti, err := TemporalTracing()
			if err != nil {
				return in, closeFn, err
			}
			opts.Interceptors = append(opts.Interceptors, ti)
		}
		tc, err := client.DialContext(ctx, opts)
		if err != nil {
			return in, closeFn, fmt.Errorf("failed to connect to Temporal at %s: %w", c.Temporal.Address, err)
		}
		closers = append(closers, tc.Close)
		in.Temporal = tc
	}
	if c.NATS.IdentityFile != "" && (slices.Contains(rs, Crypto) || slices.Contains(rs, Admin)) {
		id, err := natsauth.Load(c.NATS.IdentityFile)
		if err != nil {
			return in, closeFn, err
		}
		// Revocations and new tenants reach the servers as account JWT
		// updates, from a system-account connection.
		creds, err := id.SystemCreds("keyflow-claims")
		if err != nil {
			return in, closeFn, err
		}
		opt, err := natsauth.CredsOption(creds)
		if err != nil {
			return in, closeFn, err
		}
		sys, err := nats.Connect(url, append([]nats.Option{opt, nats.Name("keyflow-claims"), nats.MaxReconnects(-1)}, natsOpts...)...)
		if err != nil {
			return in, closeFn, fmt.Errorf("failed to connect to NATS's system account: %w", err)
		}
		closers = append(closers, sys.Close)
		natsserver.PublishClaimsOver(sys, id)
		in.Tenants = id
	}
	return in, closeFn, nil
}

// natsOptions are the TLS options of a NATS configuration.
func natsOptions(c config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	if c.TLS.ServerName != "" {
		opts = append(opts, func(o *nats.Options) error {
			if o.TLSConfig == nil {
				o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			o.TLSConfig.ServerName = c.TLS.ServerName
			return nil
		})
	}
	return opts, nil
}

// TemporalOptions are the client options of a Temporal configuration:
// address, namespace, TLS or mutual TLS, and an API key.
func TemporalOptions(c config.Temporal) (client.Options, error) {
	o := client.Options{HostPort: c.Address, Namespace: c.Namespace}
	if c.TLS.Enabled() {
		tc, err := tlsConfig(c.TLS)
		if err != nil {
			return o, fmt.Errorf("temporal.tls: %w", err)
		}
		o.ConnectionOptions.TLS = tc
	}
	if c.APIKeyFile != "" {
		key, err := config.ReadSecret(c.APIKeyFile)
		if err != nil {
			return o, fmt.Errorf("temporal.api_key_file: %w", err)
		}
		o.Credentials = client.NewAPIKeyStaticCredentials(key)
		if o.ConnectionOptions.TLS == nil {
			// API keys travel only over TLS.
			o.ConnectionOptions.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	return o, nil
}

func tlsConfig(t config.TLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("failed to read the CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("the CA file holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("failed to load the client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// JetStreamWith opens JetStream in a domain ("" for none), creating every
// stream and KV bucket with the given replicas (at least one).
func JetStreamWith(domain string, replicas int) func(*nats.Conn) (jetstream.JetStream, error) {
	return func(nc *nats.Conn) (jetstream.JetStream, error) {
		var js jetstream.JetStream
		var err error
		if domain != "" {
			js, err = jetstream.NewWithDomain(nc, domain)
		} else {
			js, err = jetstream.New(nc)
		}
		if err != nil {
			return nil, err
		}
		return replicated{JetStream: js, n: max(replicas, 1)}, nil
	}
}

// replicated sets the replica count of every stream and bucket created or
// updated through it, so the stores need not know the deployment's size.
type replicated struct {
	jetstream.JetStream
	n int
}

func (r replicated) CreateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.n
	return r.JetStream.CreateStream(ctx, c)
}

func (r replicated) UpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.n
	return r.JetStream.UpdateStream(ctx, c)
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, c jetstream.StreamConfig) (jetstream.Stream, error) {
	c.Replicas = r.n
	return r.JetStream.CreateOrUpdateStream(ctx, c)
}

func (r replicated) CreateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.n
	return r.JetStream.CreateKeyValue(ctx, c)
}

func (r replicated) UpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.n
	return r.JetStream.UpdateKeyValue(ctx, c)
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	c.Replicas = r.n
	return r.JetStream.CreateOrUpdateKeyValue(ctx, c)
}

// OptionsFrom are the roles' options of a configuration (the gateway's
// certificate is read here).
func OptionsFrom(c *config.Config, rs []Role) (Options, error) {
	o := Options{
		Roles: rs, Workers: c.Services.Workers, AuditFailOpen: c.Audit.FailOpen,
		AuditMaxAge: c.Audit.MaxAge, AuditMaxBytes: c.Audit.MaxBytes, AuditMaxMsgs: c.Audit.MaxMsgs,
		SealerLease: sealer.DefaultLeaseTTL, ShareQuotas: true, SealerMaxLag: uint64(max(c.Ops.SealerMaxLag, 0)),
		Region: c.Region.Name, ReplicaSwitchTimeout: c.Region.ReplicaSwitchTimeout,
	}
	if f := c.Services.CursorKeyFile; f != "" {
		key, err := os.ReadFile(f)
		if err != nil {
			return o, fmt.Errorf("services.cursor_key_file: %w", err)
		}
		o.CursorKey = key
	}
	if x := c.Gateway.XKS; slices.Contains(rs, Gateway) && x.Listen != "" {
		cert, err := tls.LoadX509KeyPair(x.CertFile, x.KeyFile)
		if err != nil {
			return o, fmt.Errorf("gateway.xks: failed to load the TLS certificate: %w", err)
		}
		o.Gateway = GatewayOptions{XKSListen: x.Listen, XKSConfig: x.ConfigFile, XKSCert: cert, Model: "PKCS#11 token " + c.HSM.TokenLabel}
	}
	return o, nil
}
