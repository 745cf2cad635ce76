package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/events/siem"
	"github.com/keyflow/keyflow/workers/natsauth"
)

func newAuditForwardCmd(g *globals) *cobra.Command {
	var out, syslogAddr, creds, consumer, tenant, typ string
	cmd := &cobra.Command{
		Use:   "forward (--out FILE | --syslog ADDR)",
		Short: "Forward the audit trail to a file (JSON Lines) or a syslog collector, for a SIEM",
		Long: `Forward every audit record, in stream order, as one JSON line
{"seq":N,"event":{...CloudEvent...}}, to a file (--out) or to a syslog
collector as RFC 5424 messages (--syslog udp://HOST:PORT or tcp://HOST:PORT;
a bare HOST:PORT is UDP). It keeps running, forwarding new records as they
are stored, until interrupted.

It reads the KF_AUDIT stream directly as a durable JetStream consumer
(--consumer names it), so it needs a creds file of keyflow's own NATS account
(--auditor-creds, by default the dev stack's DIR/auditor.creds); guard that
file like the HSM PIN. Started again, it resumes where it stopped: a file
gets every record exactly once (the last line's seq says where it ends);
syslog gets every record at least once (after a crash, the records sent
but not yet acknowledged are sent again, with the same seq and event ID).

By default it forwards every tenant's records; --tenant and --type narrow
that (same --type patterns as audit tail).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (out == "") == (syslogAddr == "") {
				return usagef("give exactly one of --out FILE and --syslog ADDR")
			}
			if tenant == "" {
				tenant = "*"
			}
			filter, err := jsaudit.FilterSubject(tenant, "", typ)
			if err != nil {
				return usagef("%s", strings.TrimPrefix(err.Error(), jsaudit.ErrInvalidFilter.Error()+": "))
			}
			if creds == "" {
				creds = filepath.Join(g.dataDir, "auditor.creds")
			}
			if err := checkAuditorCreds(creds); err != nil {
				return err
			}
			credsBytes, err := os.ReadFile(creds)
			if err != nil {
				return fmt.Errorf("failed to read the auditor creds %s: %w", creds, err)
			}
			// The read-only auditor may not create consumers: it reads
			// through the durable the operator made for it.
			pinned := natsauth.CredsRestricted(credsBytes)
			if pinned {
				if !cmd.Flags().Changed("consumer") {
					consumer = natsauth.AuditorDurable
				}
				if tenant == "*" && typ == "" {
					filter = jsaudit.AllSubjects
				}
			}
			inbox, err := client.InboxOption(credsBytes)
			if err != nil {
				return err
			}
			var output siem.Output
			var dest string
			if out != "" {
				// The folder is created (0750) as a log folder would be; a
				// file that cannot be written is the --out argument's fault.
				if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
					return usagef("cannot create the folder of --out: %v", err)
				}
				f, err := siem.OpenFile(out)
				if err != nil {
					return usagef("cannot write --out: %v", err)
				}
				defer f.Close()
				output, dest = f, out
			} else {
				network, addr, err := parseSyslogAddr(syslogAddr)
				if err != nil {
					return err
				}
				s, err := siem.DialSyslog(network, addr)
				if err != nil {
					return err
				}
				defer s.Close()
				output, dest = s, network+"://"+addr
			}
			nc, err := nats.Connect(g.server, nats.UserCredentials(creds), inbox, nats.Name("keyflow-audit-forward"),
				nats.Timeout(5*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
			if err != nil {
				return fmt.Errorf("%w: %w", errUnreachable, err)
			}
			defer drainConn(nc)
			js, err := jetstream.New(nc)
			if err != nil {
				return fmt.Errorf("failed to open JetStream: %w", err)
			}
			ctx := cmd.Context()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			fmt.Fprintf(cmd.ErrOrStderr(), "keyflow audit forward: %s -> %s (consumer %s, resuming after seq %d)\n", filter, dest, consumer, output.LastSeq())
			stop := showProgress(cmd, forwardProgress(ctx, js, consumer))
			defer stop()
			return siem.Forward(ctx, js, siem.Config{Out: output, Consumer: consumer, Filter: filter, Logger: log, Pinned: pinned, Direct: pinned && out != ""})
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "append JSON Lines to FILE (created 0600)")
	f.StringVar(&syslogAddr, "syslog", "", "send RFC 5424 messages to ADDR: udp://HOST:PORT, tcp://HOST:PORT or HOST:PORT (UDP)")
	f.StringVar(&creds, "auditor-creds", os.Getenv("KEYFLOW_AUDITOR_CREDS"), "creds file of a keyflow-account user (env KEYFLOW_AUDITOR_CREDS; default DIR/auditor.creds)")
	f.StringVar(&consumer, "consumer", siem.DefaultConsumer, "durable consumer name: the forwarder's position in the stream")
	f.StringVar(&tenant, "tenant", "", "forward this tenant's records only (default: every tenant)")
	f.StringVar(&typ, "type", "", "forward records whose type matches GLOB only (e.g. io.keyflow.crypto.*)")
	return cmd
}

// parseSyslogAddr splits udp://H:P, tcp://H:P or H:P (UDP).
// forwardProgress is the forwarder's position and lag, from its durable
// consumer's state (the server's view: acked through a stream sequence,
// records still pending).
func forwardProgress(ctx context.Context, js jetstream.JetStream, consumer string) func(time.Duration) string {
	return func(d time.Duration) string {
		cons, err := js.Consumer(ctx, jsaudit.StreamName, consumer)
		if err != nil {
			return fmt.Sprintf("forwarding ... %v", d)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Sprintf("forwarding ... %v", d)
		}
		return fmt.Sprintf("forwarded through seq %d; %d records behind, %d unacked (%v)", info.AckFloor.Stream, info.NumPending, info.NumAckPending, d)
	}
}

func parseSyslogAddr(s string) (network, addr string, err error) {
	if !strings.Contains(s, "://") {
		return "udp", s, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", "", usagef("--syslog wants udp://HOST:PORT, tcp://HOST:PORT or HOST:PORT, not %q", s)
	}
	return u.Scheme, u.Host, nil
}

// drainConn flushes pending acks and closes, bounded.
func drainConn(nc *nats.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = nc.FlushWithContext(ctx)
	nc.Close()
}
