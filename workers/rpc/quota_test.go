package rpc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/internal/testbed"
)

// TestQuotaFloodDoesNotStarveAnotherTenant: alpha, with a quota of a
// burst of 20 requests and a negligible refill rate, floods the service
// with 300 requests from 30 connections while beta sends 60. Alpha gets
// exactly its 20 and 280 ThrottlingExceptions with a retry hint; every
// one of beta's requests is served; the throttling is on the audit record
// (summarized, every refusal counted) and beta has none. Counts, not
// timings.
func TestQuotaFloodDoesNotStarveAnotherTenant(t *testing.T) {
	ctx := context.Background()
	b := testbed.New(t)
	b.StartRPC(nil)
	alphaAdmin, betaApp := b.Client("alpha", "alice"), b.Client("beta", "bob")
	ka, err := alphaAdmin.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := betaApp.CreateKey(ctx, api.CreateKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const burst = 20
	if _, err := alphaAdmin.SetTenantPolicy(ctx, api.TenantPolicy{Quotas: &api.Quotas{RequestsPerSecond: 0.0001, Burst: burst}}); err != nil {
		t.Fatal(err)
	}

	var alphaServed, alphaThrottled, alphaOther, betaServed, betaFailed atomic.Int64
	var badHint atomic.Bool
	var wg sync.WaitGroup
	for i := range 30 {
		c := b.Client("alpha", "flooder")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				_, err := c.Encrypt(ctx, api.EncryptRequest{KeyID: ka.KeyID, Plaintext: []byte("flood")})
				var ce *client.Error
				switch {
				case err == nil:
					alphaServed.Add(1)
				case errors.As(err, &ce) && ce.Code == "ThrottlingException":
					alphaThrottled.Add(1)
					// Over the rate, a token is hours away; over the
					// in-flight bound (30 connections, 16 slots), a
					// slot frees soon.
					if ce.RetryAfter <= 0 || (strings.Contains(ce.Message, "rate quota") && ce.RetryAfter < time.Hour) {
						badHint.Store(true)
					}
				default:
					alphaOther.Add(1)
					t.Logf("alpha %d: %v", i, err)
				}
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := betaApp.Encrypt(ctx, api.EncryptRequest{KeyID: kb.KeyID, Plaintext: []byte("steady")}); err != nil {
					betaFailed.Add(1)
					t.Logf("beta: %v", err)
				} else {
					betaServed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if alphaServed.Load() != burst || alphaThrottled.Load() != 300-burst || alphaOther.Load() != 0 {
		t.Errorf("alpha: %d served, %d throttled, %d other; want %d, %d, 0", alphaServed.Load(), alphaThrottled.Load(), alphaOther.Load(), burst, 300-burst)
	}
	if badHint.Load() {
		t.Error("a throttled reply's retry hint is shorter than the time to the next token")
	}
	if betaServed.Load() != 60 || betaFailed.Load() != 0 {
		t.Errorf("beta: %d served, %d failed; want all 60 served", betaServed.Load(), betaFailed.Load())
	}

	// Every refusal is counted on the record (summaries land within a
	// second); beta has none.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var counted float64
		for _, e := range b.EventsOfType("alpha", events.TypeQuotaThrottled) {
			if e.ErrorCode != "ThrottlingException" || e.Outcome != events.OutcomeFailure || (e.Data["reason"] != "rate" && e.Data["reason"] != "concurrency") {
				t.Fatalf("throttle record: %+v", e)
			}
			counted += e.Data["count"].(float64)
		}
		if counted == 300-burst {
			break
		}
		if counted > 300-burst || time.Now().After(deadline) {
			t.Fatalf("throttle records count %v refusals, want %d", counted, 300-burst)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(b.EventsOfType("beta", events.TypeQuotaThrottled)); n != 0 {
		t.Errorf("beta has %d throttle records", n)
	}
	// The served requests are audited as usual: alpha's 20, beta's 60.
	if n := len(b.EventsOfType("alpha", events.TypeEncrypt)); n != burst {
		t.Errorf("alpha: %d encrypt records, want %d", n, burst)
	}
	if n := len(b.EventsOfType("beta", events.TypeEncrypt)); n != 60 {
		t.Errorf("beta: %d encrypt records, want 60", n)
	}
}
