package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/events/chain"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/sealer"
)

// codeVerificationFailed is the error code `audit verify` exits 1 with.
const codeVerificationFailed = "AuditVerificationFailed"

const auditorHelp = `These commands read the whole audit stream, every tenant's records, which
only keyflow's own NATS account can do: they connect with an auditor creds
file of that account (--auditor-creds, default DIR/auditor.creds, which
'keyflow dev' writes). That is the operator and auditor path; guard the
file like the HSM PIN. Tenants read their own trail with 'keyflow audit tail'.`

// newAuditChainCmds returns `audit verify`, `audit export` and
// `audit pubkeys`.
func newAuditChainCmds(g *globals) []*cobra.Command {
	var creds string
	addCreds := func(c *cobra.Command) {
		c.Flags().StringVar(&creds, "auditor-creds", "", "creds file of a user of keyflow's own NATS account (default: DIR/"+sealer.AuditorCredsFile+" of the dev stack)")
	}

	var from, to uint64
	var file, pubkeys, sinceCheckpoint, metricsListen string
	verify := &cobra.Command{
		Use:   "verify [--from SEQ] [--to SEQ] [--file EXPORT.jsonl] [--pubkeys FILE]",
		Short: "Prove the audit trail complete and untampered (operator and auditor)",
		Long: `Check every audit record against the sealer's signed digests and report the
first bad sequence number: a modified, deleted or reordered record, or a forged
digest (a bad or missing Ed25519 or ML-DSA-65 signature, a key that is not the
sealer's, or a digest that does not link to the previous one). Records after
the last digest are the unsealed tail: reported, not an error.

Exit status: 0 when everything checks; 1 with one line on stderr naming the
first bad sequence and what is wrong.

Without --file it reads the live audit stream and digest stream. With --file
it checks an export ('keyflow audit export --format jsonl') offline.

Trusted keys: the sealer's public keys come from keyflow's key store (online),
or from the export's header (--file). Pin them instead with --pubkeys FILE (a
file written by 'keyflow audit pubkeys', or another export), which is what to
do with an export received from elsewhere.

Cut heads: digests are kept for ever, so a digest stream that no longer
starts with the chain's first digest is a finding. Records may age out, but
only as the retention policy the operator recorded on the stream allows: when
the stream starts after the first sealed record, verify counts the records
missing, and passes only when the stream's limits are still the recorded ones
and one of them explains the cut (it says which); otherwise the cut is a
finding with the number of records missing. Every change of the audit
streams' limits outside the policy, recorded by the workers, is a finding.
--from SEQ checks from SEQ only (the digest covering SEQ is the anchor: it
carries the chain head before its range, signed, and per-record leaves).

Requests: a record of a NATS request refused because its identity named a
user key, principal or roles keyflow never issued (UnrecognizedClientException)
is a forged-request finding: someone inside keyflow's own NATS account tried
to act as a tenant. Requests refused for a missing or bad signature are listed
as unsigned-request lines, without failing (a tenant's outdated client causes
them too). A record whose event ID appears twice (a genuine record re-published
after the stream's two-minute duplicate window) is a replayed finding naming
both sequences.

Checkpoints: 'keyflow audit checkpoint --out FILE' saves the current signed
digest head. --since-checkpoint FILE then also fails if the digest stream no
longer holds that digest unchanged: the trail sealed before it was removed,
replaced or rewritten.

Progress: when stderr is a terminal, a line there counts the records
verified so far; otherwise (scripts, logs) nothing extra is written.

` + auditorHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to != 0 && to < from {
				return usagef("--to must not be below --from")
			}
			ctx := cmd.Context()
			var pinned []chain.PublicKey
			if pubkeys == "" && file == "" {
				// The dev stack writes the sealer's keys from the key store
				// at start; the read-only auditor cannot read the store.
				if p := filepath.Join(g.dataDir, sealer.PubKeysFile); fileExists(p) {
					pubkeys = p
				}
			}
			if pubkeys != "" {
				var err error
				if pinned, err = readPubKeys(pubkeys); err != nil {
					return err
				}
			}
			var r *chain.Report
			var err error
			var read atomic.Uint64 // records verified so far, for the progress line
			stop := func() {}      // set once verifying starts
			if metricsListen != "" {
				addr, stopMetrics, err := roles.ServeOps(metricsListen, verifyMetrics(&read))
				if err != nil {
					return err
				}
				defer stopMetrics()
				fmt.Fprintf(cmd.ErrOrStderr(), "keyflow audit verify: progress at http://%s/metrics\n", addr)
			}
			if file != "" {
				if sinceCheckpoint != "" {
					return usagef("--since-checkpoint checks the live trail; it does not go with --file")
				}
				stop = showProgress(cmd, verifyProgress(&read))
				r, err = verifyFile(cmd, file, pinned, from, to, &read)
			} else {
				err = g.withAuditor(ctx, creds, func(ctx context.Context, js jetstream.JetStream) (err error) {
					keys := pinned
					if keys == nil {
						if keys, err = storedKeys(ctx, js); err != nil {
							return err
						}
					}
					var cp *chain.Digest
					if sinceCheckpoint != "" {
						if cp, err = readCheckpoint(sinceCheckpoint, keys); err != nil {
							return err
						}
					}
					stop = showProgress(cmd, verifyProgress(&read))
					r, err = sealer.Verify(ctx, js, sealer.VerifyParams{Keys: keys, From: from, To: to, Checkpoint: cp, Read: &read})
					return err
				})
			}
			stop()
			if err != nil {
				return err
			}
			return g.printReport(cmd, r)
		},
	}
	verify.Flags().Uint64Var(&from, "from", 0, "first sequence to check (default: the first digest's); use after records aged out")
	verify.Flags().Uint64Var(&to, "to", 0, "last sequence to check (default: the end)")
	verify.Flags().StringVar(&file, "file", "", "check this JSON Lines export instead of the live stream")
	verify.Flags().StringVar(&sinceCheckpoint, "since-checkpoint", "", "also fail if the trail sealed before this checkpoint ('keyflow audit checkpoint') was removed or rewritten")
	verify.Flags().StringVar(&pubkeys, "pubkeys", "", "trust only the sealer public keys in this file ('keyflow audit pubkeys' output, or an export)")
	verify.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve the progress as Prometheus /metrics on this address while verifying (keyflow_audit_verify_records_read_total)")
	addCreds(verify)

	var format, since, out string
	export := &cobra.Command{
		Use:   "export --format jsonl|cef [--since RFC3339|DURATION] [--out FILE]",
		Short: "Export the audit trail, with its digests, for offline verification or a SIEM",
		Long: `Write the audit trail, every tenant, in stream order.

  --format jsonl  JSON Lines: a header (with the sealer's public keys), each
                  record as {"type":"record","seq":N,"event":<the stored
                  CloudEvent, byte for byte>}, and each digest after the last
                  record it covers. 'keyflow audit verify --file' checks it
                  offline.
  --format cef    ArcSight Common Event Format, one line per record (type as
                  the event class, outcome as severity 3/6/8, tenant, key,
                  principal, request ID, stream sequence). No digests.

--since keeps records stored at or after a time (RFC 3339) or within a
duration (such as 24h). The output goes to --out (created 0600), or stdout.

` + auditorHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != sealer.FormatJSONL && format != sealer.FormatCEF {
				return usagef("--format must be %s or %s", sealer.FormatJSONL, sealer.FormatCEF)
			}
			var t time.Time
			if since != "" {
				var err error
				if t, err = parseSince(since, time.Now()); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			var w io.Writer = cmd.OutOrStdout()
			var f *os.File
			if out != "" && out != "-" {
				var err error
				if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
					return usagef("cannot write --out: %v", err)
				}
				defer f.Close()
				w = f
			}
			var res *sealer.ExportResult
			err := g.withAuditor(ctx, creds, func(ctx context.Context, js jetstream.JetStream) (err error) {
				var keys []chain.PublicKey
				if format == sealer.FormatJSONL {
					if keys, err = g.sealerKeys(ctx, js); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "keyflow: note: the export carries no sealer keys: %v\n", err)
					}
				}
				res, err = sealer.Export(ctx, js, w, sealer.ExportParams{Format: format, Since: t, Keys: keys})
				return err
			})
			if err != nil {
				return err
			}
			if f != nil {
				if err := f.Close(); err != nil {
					return fmt.Errorf("failed to write %s: %w", out, err)
				}
				return printJSON(cmd.OutOrStdout(), res)
			}
			return nil
		},
	}
	export.Flags().StringVar(&format, "format", sealer.FormatJSONL, "jsonl (records and digests) or cef (ArcSight CEF, records only)")
	export.Flags().StringVar(&since, "since", "", "only records stored since this time (RFC 3339) or duration ago (e.g. 24h)")
	export.Flags().StringVar(&out, "out", "", "write to this file (mode 0600) instead of stdout")
	addCreds(export)

	pub := &cobra.Command{
		Use:   "pubkeys",
		Short: "Print the audit sealer's public keys, to pin with 'audit verify --pubkeys'",
		Long: `Print the public keys of the audit sealer (every version of its Ed25519 and
ML-DSA-65 keys, DER SubjectPublicKeyInfo in base64) as JSON: from the dev
stack's DIR/` + sealer.PubKeysFile + ` (written from keyflow's key store at every
start), or else from the key store (with the operator's creds). Keep the output somewhere the audited system cannot write, and verify
with --pubkeys FILE.

` + auditorHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var keys []chain.PublicKey
			if err := g.withAuditor(ctx, creds, func(ctx context.Context, js jetstream.JetStream) (err error) {
				keys, err = g.sealerKeys(ctx, js)
				return err
			}); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), struct {
				Keys []chain.PublicKey `json:"keys"`
			}{keys})
		},
	}
	addCreds(pub)

	var cpOut string
	checkpoint := &cobra.Command{
		Use:   "checkpoint [--out FILE]",
		Short: "Save the current signed digest head, to verify against later",
		Long: `Write the newest audit digest (signed by the sealer's Ed25519 and ML-DSA-65
keys) as a checkpoint. Keep it where the audited system cannot write. A later
'keyflow audit verify --since-checkpoint FILE' fails if the digest stream no
longer holds that digest unchanged: everything sealed before the checkpoint is
then pinned, even against someone who deletes both streams and starts a new
chain.

` + auditorHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var d *chain.Digest
			if err := g.withAuditor(ctx, creds, func(ctx context.Context, js jetstream.JetStream) (err error) {
				d, _, err = jsaudit.LastDigest(ctx, js)
				return err
			}); err != nil {
				return err
			}
			if d == nil {
				return &client.Error{Code: codeVerificationFailed, Message: "nothing is sealed yet: no digest to checkpoint"}
			}
			cp := checkpointFile{Kind: checkpointKind, Stream: d.Stream, FromSeq: d.FromSeq, ToSeq: d.ToSeq, SavedAt: time.Now().UTC(), Digest: d}
			b, err := json.MarshalIndent(cp, "", "  ")
			if err != nil {
				return fmt.Errorf("failed to encode the checkpoint: %w", err)
			}
			b = append(b, '\n')
			if cpOut == "" || cpOut == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(cpOut, b, 0o600); err != nil {
				return usagef("cannot write --out: %v", err)
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"checkpoint": cpOut, "fromSeq": d.FromSeq, "toSeq": d.ToSeq})
		},
	}
	checkpoint.Flags().StringVar(&cpOut, "out", "", "write the checkpoint here (mode 0600) instead of stdout")
	addCreds(checkpoint)
	return []*cobra.Command{verify, export, pub, checkpoint}
}

// withAuditor connects with the auditor's creds and runs fn.
func (g *globals) withAuditor(ctx context.Context, creds string, fn func(ctx context.Context, js jetstream.JetStream) error) error {
	if creds == "" {
		creds = filepath.Join(g.dataDir, sealer.AuditorCredsFile)
	}
	if err := checkAuditorCreds(creds); err != nil {
		return err
	}
	// A user of another account is refused per subject; the server says so
	// asynchronously, while the JetStream request would wait out its
	// timeout. Watch for it.
	denied := make(chan error, 1)
	b, err := os.ReadFile(creds)
	if err != nil {
		return fmt.Errorf("%w: cannot read the auditor creds %s: %w", errUnreachable, creds, err)
	}
	inbox, err := client.InboxOption(b)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(g.server, nats.UserCredentials(creds), inbox, nats.Name("keyflow-auditor"), nats.Timeout(g.timeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case denied <- err:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(g.timeout))
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	notAuditor := errors.New("the audit stream is not visible with these creds: audit verify, export and pubkeys need a user of keyflow's own account (DIR/" +
		sealer.AuditorCredsFile + "); tenants read their trail with `keyflow audit tail`")
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-denied:
			cancel(err)
		case <-pctx.Done():
		}
	}()
	if _, err := js.Stream(pctx, jsaudit.StreamName); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(context.Cause(pctx), nats.ErrPermissionViolation) {
			return notAuditor
		}
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	// A request the creds may not make (the read-only auditor reading the
	// key store) fails at once rather than after the timeout.
	err = fn(pctx, js)
	if cause := context.Cause(pctx); errors.Is(cause, nats.ErrPermissionViolation) {
		return fmt.Errorf("these creds may not do that (%v): the read-only auditor reads the sealer's keys from DIR/%s or --pubkeys; the key store needs the operator's creds (DIR/operator.creds)", cause, sealer.PubKeysFile)
	}
	return err
}

// sealerKeys reads the sealer's public keys from the dev stack's
// DIR/audit-pubkeys.json when there is one (the read-only auditor cannot
// read the key store), or else from the key store.
func (g *globals) sealerKeys(ctx context.Context, js jetstream.JetStream) ([]chain.PublicKey, error) {
	if p := filepath.Join(g.dataDir, sealer.PubKeysFile); fileExists(p) {
		return readPubKeys(p)
	}
	return storedKeys(ctx, js)
}

// storedKeys reads the sealer's public keys from the key store.
func storedKeys(ctx context.Context, js jetstream.JetStream) ([]chain.PublicKey, error) {
	store, err := kvstore.Open(ctx, existingBuckets{js})
	if err != nil {
		return nil, err
	}
	return sealer.StoredPublicKeys(ctx, store)
}

// verifyMetrics serves audit verify's progress (--metrics-listen): the
// records verified so far, for a long verification watched from
// Prometheus or curl.
func verifyMetrics(read *atomic.Uint64) http.Handler {
	r := prometheus.NewRegistry()
	r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "keyflow_audit_verify_records_read_total", Help: "Audit records read into the verifier so far by this keyflow audit verify.",
	}, func() float64 { return float64(read.Load()) }))
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}

// verifyProgress is audit verify's progress line on terminals.
func verifyProgress(read *atomic.Uint64) func(time.Duration) string {
	return func(d time.Duration) string {
		n := read.Load()
		return fmt.Sprintf("verifying the audit trail: %d %s verified (%v)", n, plural(int(n), "record"), d)
	}
}

// verifyFile checks an export offline, in two passes (digests, then
// records), so the file may be far larger than memory; read counts the
// records verified so far.
func verifyFile(cmd *cobra.Command, path string, pinned []chain.PublicKey, from, to uint64, read *atomic.Uint64) (*chain.Report, error) {
	open := func() (*os.File, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("cannot read --file: %v", err)
		}
		return f, nil
	}
	f, err := open()
	if err != nil {
		return nil, err
	}
	var hdr *chain.ExportHeader
	var digests []*chain.Digest
	err = chain.ReadExport(f, chain.ExportVisitor{
		Header: func(h *chain.ExportHeader) error { hdr = h; return nil },
		Digest: func(d *chain.Digest) error { digests = append(digests, d); return nil },
	})
	f.Close()
	if err != nil {
		return nil, err
	}
	if hdr == nil {
		return nil, fmt.Errorf("%s has no export header: %w", path, chain.ErrBadExport)
	}
	keys := pinned
	if keys == nil {
		if len(hdr.Keys) == 0 {
			return nil, usagef("the export carries no sealer keys: pass --pubkeys")
		}
		keys = hdr.Keys
		fmt.Fprintln(cmd.ErrOrStderr(), "keyflow: note: trusting the sealer keys in the export's header; pin them with --pubkeys for an export from elsewhere")
	}
	if from == 0 {
		from = hdr.FromSeq
	}
	v, err := chain.NewVerifier(chain.Options{Keys: keys, Stream: hdr.Stream, From: from, To: to}, digests)
	if err != nil {
		return nil, err
	}
	if f, err = open(); err != nil {
		return nil, err
	}
	defer f.Close()
	if err := chain.ReadExport(f, chain.ExportVisitor{Record: func(seq uint64, body []byte) error {
		v.Add(seq, body)
		read.Add(1)
		return nil
	}}); err != nil {
		return nil, err
	}
	return v.Finish(), nil
}

const checkpointKind = "keyflow.audit.checkpoint.v1"

// checkpointFile is what `keyflow audit checkpoint` writes.
type checkpointFile struct {
	Kind    string        `json:"kind"`
	Stream  string        `json:"stream"`
	FromSeq uint64        `json:"fromSeq"`
	ToSeq   uint64        `json:"toSeq"`
	SavedAt time.Time     `json:"savedAt"`
	Digest  *chain.Digest `json:"digest"`
}

// readCheckpoint reads a checkpoint and checks its signatures against the
// trusted sealer keys.
func readCheckpoint(path string, keys []chain.PublicKey) (*chain.Digest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("cannot read --since-checkpoint: %v", err)
	}
	var cp checkpointFile
	if err := json.Unmarshal(b, &cp); err != nil || cp.Kind != checkpointKind || cp.Digest == nil {
		return nil, usagef("--since-checkpoint: %s is not a checkpoint written by 'keyflow audit checkpoint'", path)
	}
	ks, err := chain.NewKeySet(keys)
	if err != nil {
		return nil, err
	}
	if err := ks.VerifySignatures(cp.Digest); err != nil {
		return nil, &client.Error{Code: codeVerificationFailed, Message: fmt.Sprintf("the checkpoint's digest %d-%d does not verify with the trusted sealer keys: %v", cp.Digest.FromSeq, cp.Digest.ToSeq, err)}
	}
	return cp.Digest, nil
}

// printReport prints a verification report and turns a finding into the
// command's error (exit 1, one line).
func (g *globals) printReport(cmd *cobra.Command, r *chain.Report) error {
	w := cmd.OutOrStdout()
	if g.output == "json" {
		if err := printJSON(w, r); err != nil {
			return err
		}
	} else if r.OK() {
		if r.Digests == 0 {
			fmt.Fprintf(w, "nothing is sealed yet: %d records, no digests\n", r.Unsealed)
		} else {
			fmt.Fprintf(w, "OK: %d records verified against %d %s (seq %d-%d)\n", r.Verified, r.Digests, plural(r.Digests, "digest"), r.From, r.To)
			fmt.Fprintf(w, "anchor: %s\n", r.Anchor)
		}
		if r.Retention != "" {
			fmt.Fprintf(w, "retention: %s\n", r.Retention)
		}
		if r.Checkpoint != "" {
			fmt.Fprintf(w, "checkpoint: %s is in the trail, unchanged\n", r.Checkpoint)
		}
		if r.Legacy > 0 {
			fmt.Fprintf(w, "legacy: %d records were sealed before records were authenticated: their chain is checked, not their origin\n", r.Legacy)
		}
		if r.Unsealed > 0 && r.Digests > 0 {
			fmt.Fprintf(w, "unsealed tail: %d records from seq %d (not sealed yet; informational)\n", r.Unsealed, r.UnsealedFrom)
		}
	}
	if g.output != "json" && len(r.Unsigned) > 0 {
		// Refused, so not a failure; but worth an auditor's look.
		fmt.Fprintf(w, "unsigned requests: %d refused for a missing or bad request signature (informational):\n", len(r.Unsigned))
		for i, f := range r.Unsigned {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more (-o json lists them)\n", len(r.Unsigned)-i)
				break
			}
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	if f := r.First(); f != nil {
		msg := f.String()
		if n := len(r.Findings); n > 1 {
			msg += fmt.Sprintf(" (%d findings in all)", n)
		}
		return &client.Error{Code: codeVerificationFailed, Message: msg}
	}
	return nil
}

// readPubKeys reads pinned sealer keys: `keyflow audit pubkeys` output
// ({"keys":[…]}), a bare JSON array, or an export (its header's keys).
func readPubKeys(path string) ([]chain.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("cannot read --pubkeys: %v", err)
	}
	first, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	var keys []chain.PublicKey
	var obj struct {
		Keys []chain.PublicKey `json:"keys"`
	}
	switch {
	case json.Unmarshal(b, &keys) == nil:
	case json.Unmarshal(b, &obj) == nil:
		keys = obj.Keys
	case json.Unmarshal(first, &obj) == nil:
		keys = obj.Keys
	default:
		return nil, usagef("--pubkeys: %s is neither `keyflow audit pubkeys` output nor an export", path)
	}
	if len(keys) == 0 {
		return nil, usagef("--pubkeys: %s holds no keys", path)
	}
	if _, err := chain.NewKeySet(keys); err != nil {
		return nil, usagef("--pubkeys: %v", err)
	}
	return keys, nil
}

// parseSince reads --since: an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return time.Time{}, usagef("--since wants an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (24h), not %q", s)
	}
	return now.Add(-d), nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// existingBuckets opens the buckets that exist as they are: a command
// reading the key store must not "update" a cluster's R3 buckets to its
// own default of one replica. Only a missing bucket is created.
type existingBuckets struct{ jetstream.JetStream }

func (e existingBuckets) CreateOrUpdateKeyValue(ctx context.Context, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if kv, err := e.KeyValue(ctx, c.Bucket); err == nil {
		return kv, nil
	}
	return e.JetStream.CreateOrUpdateKeyValue(ctx, c)
}
