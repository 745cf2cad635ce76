//go:build !nodev

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/devstack"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/workflows"
)

func newDevCmd(g *globals) *cobra.Command {
	var natsListen, temporalListen, xksListen, xksConfig, kmipListen, sync, awsListen string
	var failOpen bool
	var maxAge time.Duration
	var maxBytes, maxMsgs int64
	var lf logFlags
	var rf regionFlags
	var switchTimeout time.Duration
	var opsListen, uiListen, traceOTLP string
	var traceStdout bool
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR]",
		Short: "Run keyflow with its embedded stack (NATS JetStream, Temporal on SQLite, a SoftHSM token)",
		Long: `Run keyflow with everything it needs in one process, state under --data-dir.

On the first run it initialises a SoftHSM token (the PIN is generated and kept
in DIR/hsm/pin, mode 0600, never printed), creates the default tenant and an
admin principal, and writes DIR/admin.creds, which the other commands use by
default. Started again on the same directory, it comes back with every key,
version, workflow and audit record. SIGINT or SIGTERM stops it cleanly.

Audit: by default an operation whose audit record cannot be stored is
refused (AuditUnavailableException). --audit-fail-open relaxes that: the
operation proceeds, the worker logs each lost record and counts them, and
the start itself is recorded (io.keyflow.audit.policy.changed.v1,
failClosed=false). The audit stream keeps every record unless
--audit-max-age, --audit-max-bytes or --audit-max-msgs bound it (the oldest
records are then removed).

Durability: --sync interval (the default) lets JetStream flush on its own
interval: a crash of keyflow (kill -9) loses nothing, since the operating
system holds the writes, but a power loss or OS crash can lose records that
were already acknowledged. --sync always fsyncs every record before its
reply, at a cost measured in the README (Durability).

Temporal: the embedded frontend listens on loopback only and takes mutual
TLS only, with certificates generated under DIR/temporal/tls on the first
start; keyflow's own workers and client hold the only client certificate.

One stack per data directory: a second keyflow dev on DIR is refused
while the first runs, with the PID that holds DIR/keyflow.lock.

XKS: --xks-listen 127.0.0.1:8443 also serves the AWS KMS External Key Store
proxy API there, over HTTPS with a self-signed certificate (development
only). Without --xks-config, the first start creates DIR/xks/config.json
with one key store (path /keyflow-dev/kms/xks/v1, generated SigV4
credentials, 0600, never printed) exposing the key alias/xks-demo as the
external key xks-demo, and DIR/xks/aws-console.json for the AWS KMS
console. SIGHUP reloads the configuration (credential rotation). See
docs/xks.md.

AWS KMS API: --aws-listen 127.0.0.1:4599 serves AWS KMS's JSON API there
(plain HTTP only on loopback, else HTTPS with a self-signed certificate),
for the AWS CLI and SDKs; create credentials with keyflow access-key
create PRINCIPAL. See docs/aws-api.md.

KMIP: --kmip-listen 127.0.0.1:5696 also serves KMIP 1.0-1.4 there, over
mutual TLS with a dev CA under DIR/kmip/ca; DIR/kmip/clients/admin.pem is a
client certificate for the default tenant's admin. See docs/kmip.md.

Temporal Web UI: --ui-listen (default 127.0.0.1:8233; empty disables) serves
Temporal's own Web UI on loopback, a dev view of the lifecycle workflows
(rotations, deletions, approvals, migrations) through the frontend's mutual
TLS; its address ends the ready line (ui=). It has no login and can signal
or terminate workflows: it is not for production.

Traces: --trace-stdout prints OpenTelemetry spans (one JSON object each) on
stdout; --trace-otlp HOST:PORT sends them to an OTLP/gRPC collector (no TLS,
e.g. a local Jaeger). See docs/observability.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log, err := newLogger(os.Stderr, lf.level, lf.format)
			if err != nil {
				return usagef("%v", err)
			}
			if maxAge < 0 || maxBytes < 0 || maxMsgs < 0 {
				return usagef("--audit-max-age, --audit-max-bytes and --audit-max-msgs must not be negative")
			}
			if sync != "interval" && sync != "always" {
				return usagef("--sync must be interval or always, not %q", sync)
			}
			if traceStdout && traceOTLP != "" {
				return usagef("--trace-stdout and --trace-otlp are exclusive")
			}
			if switchTimeout <= 0 {
				return usagef("--replica-switch-timeout must be positive, not %v", switchTimeout)
			}
			if err := rf.applySaved(g.dataDir); err != nil {
				return err
			}
			tc := config.Tracing{}
			switch {
			case traceStdout:
				tc.Exporter = "stdout"
			case traceOTLP != "":
				tc = config.Tracing{Exporter: "otlp", Endpoint: traceOTLP, Insecure: true}
			}
			tracing, err := roles.StartTracing(ctx, tc, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			defer flushTracing(tracing, log)
			st, err := devstack.Start(ctx, devstack.Config{
				DataDir: g.dataDir, NATSListen: natsListen, TemporalListen: temporalListen, Logger: log,
				AuditFailOpen: failOpen, AuditMaxAge: maxAge, AuditMaxBytes: maxBytes, AuditMaxMsgs: maxMsgs,
				XKSListen: xksListen, XKSConfig: xksConfig, KMIPListen: kmipListen, SyncAlways: sync == "always", AWSListen: awsListen, OpsListen: opsListen,
				UIListen: uiListen, Trace: tracing != nil,
				Region: rf.region, LeafListen: rf.leafListen, LinkTo: rf.linkTo, LinkCreds: rf.linkCreds,
				ReplicaSwitchTimeout: switchTimeout,
			})
			if err != nil {
				return err
			}
			if x := st.XKS; x != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "keyflow xks endpoint=%s path=%s config=%s cert=%s\n", x.URL, x.URIPath, x.ConfigPath, x.CertPath)
				stopHUP := reloadOnHUP(ctx, st, log)
				defer stopHUP()
			}
			if a := st.AWS; a != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "keyflow aws endpoint=%s region=%s cert=%s\n", a.URL, a.Region, a.CertPath)
			}
			if k := st.KMIP; k != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "keyflow kmip endpoint=%s ca=%s client=%s\n", k.Addr, k.CACert, k.ClientPEM)
			}
			if u := st.LeafURL(); u != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "keyflow region=%s link endpoint=%s creds=%s\n", rf.region, u, filepath.Join(g.dataDir, devstack.RegionLinkCredsFile))
			}
			if st.OpsURL != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "keyflow ops endpoint=%s (/healthz /readyz /metrics)\n", st.OpsURL)
			}
			ui := ""
			if st.UIURL != "" {
				ui = " ui=" + st.UIURL
			}
			fmt.Fprintf(cmd.OutOrStdout(), "keyflow ready nats=%s temporal=%s creds=%s tenant=%s%s\n",
				st.NATSURL(), st.Temporal.HostPort(), st.AdminCreds(), devstack.DefaultTenant, ui)
			<-ctx.Done()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopping")
			if n := st.KMS.DroppedAuditRecords(); n > 0 {
				log.Error("audit records were dropped while failing open", "dropped", n)
			}
			st.Stop()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&natsListen, "nats-listen", devstack.DefaultNATSListen, "address of the NATS listener")
	cmd.Flags().StringVar(&xksListen, "xks-listen", "", "also serve the AWS KMS XKS proxy API on this address (HTTPS, self-signed), e.g. 127.0.0.1:8443")
	cmd.Flags().StringVar(&xksConfig, "xks-config", "", "XKS proxy configuration file (default: generated under DIR/xks)")
	cmd.Flags().StringVar(&awsListen, "aws-listen", "", "also serve the AWS KMS API on this address (HTTP on loopback, else HTTPS self-signed), e.g. 127.0.0.1:4599; see docs/aws-api.md")
	cmd.Flags().StringVar(&kmipListen, "kmip-listen", "", "also serve KMIP on this address (mutual TLS, dev CA under DIR/kmip), e.g. 127.0.0.1:5696")
	cmd.Flags().StringVar(&temporalListen, "temporal-listen", devstack.DefaultTemporalListen, "address of the Temporal frontend")
	cmd.Flags().StringVar(&sync, "sync", "interval", "when JetStream fsyncs: interval (kill -9 safe; a power loss can lose the last acknowledged records) or always (every record on disk before its reply; slower, see README, Durability)")
	cmd.Flags().BoolVar(&failOpen, "audit-fail-open", false, "let operations proceed when their audit record cannot be stored (weaker; recorded in the trail)")
	cmd.Flags().DurationVar(&maxAge, "audit-max-age", 0, "remove audit records older than this, e.g. 2160h (0: keep for ever)")
	cmd.Flags().Int64Var(&maxBytes, "audit-max-bytes", 0, "bound the audit stream to this many bytes, removing the oldest records (0: no bound)")
	cmd.Flags().Int64Var(&maxMsgs, "audit-max-msgs", 0, "bound the audit stream to this many records, removing the oldest (0: no bound)")
	rf.add(cmd)
	cmd.Flags().DurationVar(&switchTimeout, "replica-switch-timeout", workflows.DefaultReplicaSwitchTimeout, "how long a rotation of a multi-region key waits for its replicas before the new version becomes primary anyway (the lagging regions are recorded)")
	cmd.Flags().StringVar(&opsListen, "ops-listen", "", "also serve /healthz, /readyz and Prometheus /metrics on this address, e.g. 127.0.0.1:9090")
	cmd.Flags().StringVar(&uiListen, "ui-listen", devstack.DefaultUIListen, "serve the Temporal Web UI (a dev view of the workflows) on this loopback address; empty disables it")
	cmd.Flags().BoolVar(&traceStdout, "trace-stdout", false, "print OpenTelemetry spans on stdout (JSON)")
	cmd.Flags().StringVar(&traceOTLP, "trace-otlp", "", "send OpenTelemetry spans to this OTLP/gRPC collector (HOST:PORT, no TLS)")
	lf.register(cmd, "warn")
	return cmd
}

// reloadOnHUP reloads the XKS proxy configuration on SIGHUP, so its
// credentials rotate without a restart. It returns a stop function.
func reloadOnHUP(ctx context.Context, st *devstack.Stack, log *slog.Logger) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if err := st.ReloadXKS(); err != nil {
					log.Error("the XKS configuration was not reloaded", "err", err)
				} else {
					log.Warn("the XKS configuration was reloaded")
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
