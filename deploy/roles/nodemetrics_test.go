package roles_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/roles"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms"
)

// eventually scrapes h until cond holds on the body, or fails after 20 s.
func eventually(t *testing.T, h http.Handler, what string, cond func(body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := get(t, h, "/metrics")
		if cond(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never seen in /metrics:\n%s", what, grepKeyflow(body))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func grepKeyflow(body string) string {
	var out []string
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, "keyflow_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// The per-role metrics move with real work: the crypto node's handle
// cache and its pool queue under a burst, the control node's workflows
// (a rotation completes, a scheduled deletion stays running) and its
// sealer's progress and lag; and the sealer role's readiness fails once
// more records are unsealed than the configured bound.
func TestPerRoleMetricsMoveWithWork(t *testing.T) {
	c := startCluster(t)
	cfg := c.config(t, "services: {workers: 1}\n")
	bootstrap(t, cfg)
	control := serve(t, cfg, "admin,lifecycle,sealer")
	data := serve(t, cfg, "crypto")
	ch := roles.OpsHandler(control.Checks(), control.Metrics())
	dh := roles.OpsHandler(data.Checks(), data.Metrics())

	ctx := context.Background()
	cl := c.adminClient(t)
	key, err := cl.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}

	// Crypto: 16 requesters against a pool of one worker queue up; the
	// scrapes during the burst see the tenant's queue.
	_, before := get(t, dh, "/metrics")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Go(func() {
			for range 15 {
				if _, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("m")}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	var sawQueue atomic.Bool
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			_, body := get(t, dh, "/metrics")
			if sample(t, body, `keyflow_pool_queue_depth{tenant="default"}`) > 0 {
				sawQueue.Store(true)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(done)
	if failed.Load() != 0 {
		t.Fatalf("%d encrypts failed", failed.Load())
	}
	if !sawQueue.Load() {
		t.Error("the tenant's queue depth was never above 0 during a burst of 16 requesters on one worker")
	}
	_, body := get(t, dh, "/metrics")
	hits := sample(t, body, `keyflow_handle_cache_hits_total`) - sample(t, before, `keyflow_handle_cache_hits_total`)
	if hits < 200 || sample(t, body, `keyflow_handle_cache_entries`) < 1 {
		t.Errorf("240 encrypts with one key version: %v cache hits, %v entries", hits, sample(t, body, `keyflow_handle_cache_entries`))
	}
	// A tampered ciphertext fails in the HSM (the GCM tag), counted there.
	enc, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: key.KeyID, Plaintext: []byte("tamper me")})
	if err != nil {
		t.Fatal(err)
	}
	enc.CiphertextBlob[len(enc.CiphertextBlob)-1] ^= 1
	if _, err := cl.Decrypt(ctx, api.DecryptRequest{CiphertextBlob: enc.CiphertextBlob}); err == nil {
		t.Fatal("a tampered ciphertext decrypted")
	}
	_, body = get(t, dh, "/metrics")
	if d := sample(t, body, `keyflow_hsm_errors_total{operation="decrypt"}`) - sample(t, before, `keyflow_hsm_errors_total{operation="decrypt"}`); d != 1 {
		t.Errorf("HSM decrypt errors moved by %v after one tampered ciphertext", d)
	}
	if strings.Contains(body, "keyflow_audit_sealer") || strings.Contains(body, "keyflow_workflows_running") {
		t.Errorf("the crypto node reports the sealer's or the lifecycle's series:\n%s", grepKeyflow(body))
	}

	// Lifecycle: a rotation starts and completes a workflow; a scheduled
	// deletion waits out its window, running.
	if _, err := cl.RotateKey(ctx, key.KeyID); err != nil {
		t.Fatal(err)
	}
	doomed, err := cl.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ScheduleDeletion(ctx, api.ScheduleDeletionRequest{KeyID: doomed.KeyID, PendingWindowInDays: 7}); err != nil {
		t.Fatal(err)
	}
	body = eventually(t, ch, "a started and completed rotation, and a running workflow", func(b string) bool {
		var started, completed float64
		for l := range strings.Lines(b) {
			if strings.HasPrefix(l, "keyflow_workflows_started_total{") {
				started += sample(t, l, strings.Fields(l)[0])
			}
			if strings.HasPrefix(l, "keyflow_workflows_ended_total{") && strings.Contains(l, `outcome="completed"`) {
				completed += sample(t, l, strings.Fields(l)[0])
			}
		}
		return started >= 2 && completed >= 1 && sample(t, b, "keyflow_workflows_running") >= 1
	})
	if !strings.Contains(body, `keyflow_workflows_ended_total{outcome="completed",workflow="`) {
		t.Errorf("completions are not labelled by workflow type:\n%s", grepKeyflow(body))
	}

	// Sealer: everything written so far gets sealed; at rest only the
	// sealer's own two signature records are left.
	body = eventually(t, ch, "the sealer catching up", func(b string) bool {
		last := sample(t, b, "keyflow_audit_stream_last_seq")
		return last > 240 && sample(t, b, "keyflow_audit_sealed_seq") > 240 && sample(t, b, "keyflow_audit_sealer_lag_records") <= 2
	})
	if sample(t, body, "keyflow_audit_sealer_records_read_total") < 240 || sample(t, body, "keyflow_audit_sealer_active") != 1 {
		t.Errorf("sealer progress:\n%s", grepKeyflow(body))
	}
	code, checks := readiness(t, ch)
	if code != 200 || checks["sealer_lag"] != "ok" {
		t.Fatalf("control readyz = %d %v", code, checks)
	}

	// A bound below the sealer's resting lag makes the sealer unready.
	strict := serve(t, c.config(t, "ops: {sealer_max_lag: 1}\n"), "sealer")
	code, checks = readiness(t, roles.OpsHandler(strict.Checks(), strict.Metrics()))
	if code != http.StatusServiceUnavailable || !strings.Contains(checks["sealer_lag"], "unsealed") {
		t.Fatalf("readyz with sealer_max_lag 1 = %d %v", code, checks)
	}
}

// With the audit stream gone, an encrypt is refused (fail closed) and the
// failed publish is counted.
func TestAuditPublishFailuresCounted(t *testing.T) {
	c := startNATS(t)
	cfg := c.config(t, "")
	bootstrap(t, cfg)
	data := serve(t, cfg, "crypto")
	dh := roles.OpsHandler(data.Checks(), data.Metrics())
	ctx := context.Background()
	k, err := data.KMS.CreateKey(ctx, kms.Caller{Tenant: "default", Principal: "admin", RequestID: "t"}, kms.CreateKeyParams{})
	if err != nil {
		t.Fatal(err)
	}
	cl := c.adminClient(t)
	if _, err := cl.Encrypt(ctx, api.EncryptRequest{KeyID: k.ID, Plaintext: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	_, before := get(t, dh, "/metrics")
	js, err := jetstream.New(data.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, jsaudit.StreamName); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Encrypt(ctx, api.EncryptRequest{KeyID: k.ID, Plaintext: []byte("m")})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "AuditUnavailableException" {
		t.Fatalf("encrypt without the audit stream: %v", err)
	}
	_, body := get(t, dh, "/metrics")
	if d := sample(t, body, "keyflow_audit_publish_failures_total") - sample(t, before, "keyflow_audit_publish_failures_total"); d < 1 {
		t.Fatalf("audit publish failures moved by %v", d)
	}
	if v := sample(t, body, `keyflow_requests_total{operation="crypto.encrypt",outcome="AuditUnavailableException"}`); v != 1 {
		t.Errorf("refused encrypts counted: %v", v)
	}
}
