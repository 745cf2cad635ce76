package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/deploy/config"
	"github.com/keyflow/keyflow/deploy/roles"
)

func newServeCmd() *cobra.Command {
	var file, roleList string
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "serve --config FILE [--roles crypto,admin,...]",
		Short: "Run keyflow roles against an external NATS, Temporal and HSM",
		Long: `Run any set of keyflow's roles, configured by a YAML file (keyflow config
example prints a commented one; KEYFLOW_* variables override its fields):

  crypto       the data-plane NATS services
  admin        the control-plane NATS services
  lifecycle    the Temporal worker
  sealer       the audit sealer
  remediation  the compromise remediation trigger
  gateway      the HTTP front (XKS proxy)

--roles overrides the file's roles. The ops endpoint (ops.listen, default
127.0.0.1:9090) serves /healthz, /readyz and Prometheus /metrics. An invalid configuration stops the
start with one message per problem. Traces (OpenTelemetry, off unless
tracing.exporter is set) go to an OTLP collector or stdout; see
docs/observability.md. Create the streams and buckets first
with keyflow bootstrap. SIGINT or SIGTERM stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(file)
			if err != nil {
				return err
			}
			if roleList != "" {
				c.Roles = strings.Split(roleList, ",")
			}
			lf.apply(&c.Log)
			if err := c.Err(); err != nil {
				return usageError{err.Error()}
			}
			rs, err := roles.Parse(strings.Join(c.Roles, ","))
			if err != nil {
				return usagef("%v", err)
			}
			log, err := newLogger(cmd.ErrOrStderr(), c.Log.Level, c.Log.Format)
			if err != nil {
				return usagef("%v", err)
			}
			ctx := cmd.Context()
			tracing, err := roles.StartTracing(ctx, c.Tracing, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			defer flushTracing(tracing, log)
			in, closeInfra, err := roles.Dial(ctx, c, rs, log)
			if err != nil {
				return err
			}
			defer closeInfra()
			o, err := roles.OptionsFrom(c, rs)
			if err != nil {
				return err
			}
			node, err := roles.Start(ctx, in, o)
			if err != nil {
				return err
			}
			defer node.Stop()
			ops, stopOps, err := roles.ServeOps(c.Ops.Listen, roles.OpsHandler(node.Checks(), in.Metrics))
			if err != nil {
				return err
			}
			region := ""
			if c.Region.Name != "" {
				region = " region=" + c.Region.Name
			}
			fmt.Fprintf(cmd.OutOrStdout(), "keyflow serving roles=%s%s ops=http://%s\n", strings.Join(c.Roles, ","), region, ops)
			<-ctx.Done()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopping")
			stopOps()
			node.Stop()
			fmt.Fprintln(cmd.OutOrStdout(), "keyflow stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "configuration file (YAML; see keyflow config example)")
	cmd.Flags().StringVar(&roleList, "roles", "", "roles to run, comma-separated (default: the file's roles)")
	lf.register(cmd, "")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// flushTracing exports the spans still batched, within a few seconds.
func flushTracing(t *roles.Tracing, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Stop(ctx); err != nil {
		log.Warn("traces were not all exported", "err", err)
	}
}

// loadConfig reads a configuration file and the KEYFLOW_* environment.
func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return nil, usagef("--config is required")
	}
	c, err := config.Load(file)
	if err != nil {
		return nil, usagef("%s: %v", file, err)
	}
	return c, nil
}

// logFlags are --log-level and --log-format.
type logFlags struct{ level, format string }

func (f *logFlags) register(cmd *cobra.Command, defLevel string) {
	cmd.Flags().StringVar(&f.level, "log-level", defLevel, "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&f.format, "log-format", "", "log format: text or json")
}

// apply lets the flags override the file.
func (f *logFlags) apply(l *config.Log) {
	if f.level != "" {
		l.Level = f.level
	}
	if f.format != "" {
		l.Format = f.format
	}
}

// newLogger is the process's structured logger.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}
