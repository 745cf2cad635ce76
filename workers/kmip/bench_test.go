package kmip_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/loadbench"
	"github.com/keyflow/keyflow/workers/kmip"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// BenchmarkKMIPEncrypt measures KMIP Encrypt of 32 bytes (one request per
// client at a time, one TLS connection per client, the audit record
// stored in JetStream before the reply) next to the NATS path's Encrypt on
// the same testbed, key and process: path=kmip and path=nats, at 1 and 8
// clients. It reports ops/s and p50/p99 latency in ms.
func BenchmarkKMIPEncrypt(b *testing.B) {
	f := newFixture(b)
	f.bed.StartRPC(nil)
	tc := f.principal(b, "alpha", "bench")
	setup := f.dial(b, tc)
	id := setup.createAES()
	msg := make([]byte, 32)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("path=kmip/clients=%d", n), func(b *testing.B) {
			conns := make([]*client, n)
			for i := range conns {
				conns[i] = f.dial(b, tc)
			}
			body := ttlv.Encode(request([2]int32{1, 4}, batch(opEncrypt, uidItem(id), ttlv.Bytes(tData, msg))))
			runConcurrent(b, n, func(i int) error {
				resp, err := conns[i].raw(body)
				if err != nil {
					return err
				}
				if r := firstResult(b, resp); !r.ok() {
					return fmt.Errorf("encrypt: %v", r)
				}
				return nil
			})
		})
		b.Run(fmt.Sprintf("path=nats/clients=%d", n), func(b *testing.B) {
			c := f.bed.Client("alpha", "bench-nats")
			req := api.EncryptRequest{KeyID: id, Plaintext: msg}
			runConcurrent(b, n, func(int) error {
				_, err := c.Encrypt(context.Background(), req)
				return err
			})
		})
	}
}

// BenchmarkKMIPGetExportable measures Get of an exportable key: the
// export copy unwrapped in the HSM and one key.exported record per call.
func BenchmarkKMIPGetExportable(b *testing.B) {
	f := newFixture(b)
	tc := f.principal(b, "alpha", "bench")
	c := f.dial(b, tc)
	id := c.createAES(attribute("Operation Policy Name", ttlv.Text(0, kmip.ExportablePolicy)))
	body := ttlv.Encode(request([2]int32{1, 4}, batch(opGet, uidItem(id))))
	runConcurrent(b, 1, func(int) error {
		resp, err := c.raw(body)
		if err != nil {
			return err
		}
		if r := firstResult(b, resp); !r.ok() {
			return fmt.Errorf("get: %v", r)
		}
		return nil
	})
}

// runConcurrent runs op b.N times over n goroutines (op gets the
// goroutine's index) after one warm-up call each, and reports ops/s and
// latency percentiles.
func runConcurrent(b *testing.B, n int, op func(i int) error) {
	loadbench.Run(b, n, op).Report(b, 1, time.Millisecond, "ms")
}
