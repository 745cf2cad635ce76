package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/deploy/natsserver"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/hsm/pkcs11"
	"github.com/keyflow/keyflow/hsm/pkcs11/pkcs11test"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kvstore"
	"github.com/keyflow/keyflow/workers/natsauth"
	"github.com/keyflow/keyflow/workers/rpc"
)

// faultRig is a keyflow deployment over TCP: a nats-server listening on
// 127.0.0.1 with a file store, workers and clients that connect to it as
// separate processes would, with reconnects.
type faultRig struct {
	t        *testing.T
	id       *natsauth.Identity
	hsm      *pkcs11.Token
	storeDir string
	listen   string // 127.0.0.1:<port>, kept across server restarts

	mu sync.Mutex
	ns *server.Server
}

func newFaultRig(t *testing.T) *faultRig {
	t.Helper()
	r := &faultRig{t: t, hsm: pkcs11test.NewToken(t), storeDir: t.TempDir()}
	var err error
	if r.id, err = natsauth.Load(t.TempDir() + "/identity.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.id.AddTenant("alpha"); err != nil {
		t.Fatal(err)
	}
	r.startNATS("127.0.0.1:0")
	r.listen = fmt.Sprintf("127.0.0.1:%d", r.server().Addr().(*net.TCPAddr).Port)
	t.Cleanup(r.stopNATS)
	return r
}

func (r *faultRig) server() *server.Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ns
}

func (r *faultRig) startNATS(listen string) {
	r.t.Helper()
	ns, err := natsserver.Start(natsserver.Config{StoreDir: r.storeDir, Listen: listen, Identity: r.id})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.ns = ns
	r.mu.Unlock()
}

func (r *faultRig) stopNATS() {
	ns := r.server()
	ns.Shutdown()
	ns.WaitForShutdown()
}

// dial connects over TCP with creds, reconnecting for ever.
func (r *faultRig) dial(creds []byte, name string) *nats.Conn {
	r.t.Helper()
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		r.t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+r.listen, opt, nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the faults are expected
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	return nc
}

func (r *faultRig) serviceConn(name string) (*nats.Conn, jetstream.JetStream) {
	r.t.Helper()
	creds, err := r.id.ServiceCreds(name)
	if err != nil {
		r.t.Fatal(err)
	}
	nc := r.dial(creds, name)
	js, err := jetstream.New(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return nc, js
}

// faultWorker is one keyflow worker: the domain and the NATS services, on
// their own connections (one for requests, one for audit records, as in
// the dev stack).
type faultWorker struct {
	conns []*nats.Conn
	kms   *kms.Service
	srv   *rpc.Server
}

func (r *faultRig) startWorker(name string) *faultWorker {
	r.t.Helper()
	ctx := context.Background()
	nc, js := r.serviceConn(name)
	store, err := kvstore.Open(ctx, js)
	if err != nil {
		r.t.Fatal(err)
	}
	anc, ajs := r.serviceConn(name + "-audit")
	pub, err := jsaudit.Open(ctx, ajs)
	if err != nil {
		r.t.Fatal(err)
	}
	extra, err := pub.Spread(jsaudit.DefaultConns) // as the dev stack does
	if err != nil {
		r.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})) // the faults are expected
	k, err := kms.New(ctx, kms.Config{HSM: r.hsm, Store: store, Audit: pub, Source: "/keyflow/test/" + name, Logger: log})
	if err != nil {
		r.t.Fatal(err)
	}
	srv, err := rpc.Start(rpc.Config{Conn: nc, KMS: k, Tenants: r.id, JS: js, Workers: 16, Timeout: 20 * time.Second, Logger: log})
	if err != nil {
		r.t.Fatal(err)
	}
	w := &faultWorker{conns: append([]*nats.Conn{nc, anc}, extra...), kms: k, srv: srv}
	r.t.Cleanup(w.kill)
	return w
}

// stop stops the worker cleanly: requests in hand are answered (and
// audited) first.
func (w *faultWorker) stop() {
	w.srv.Stop()
	for _, nc := range w.conns {
		nc.Close()
	}
	w.kms.Close()
}

// kill takes the worker away as a crash would: its connections close
// first, with requests in flight, then its goroutines are collected. The
// audit connection goes first, so some requests fail in the middle of
// storing their record while the worker can still answer them.
func (w *faultWorker) kill() {
	for i := len(w.conns) - 1; i >= 0; i-- {
		w.conns[i].Close()
	}
	w.srv.Stop()
	w.kms.Close()
}

func (r *faultRig) client(principal string) *client.Client {
	r.t.Helper()
	creds, err := r.id.UserCreds("alpha", principal)
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), client.Options{Conn: r.dial(creds, principal), Creds: creds, Tenant: "alpha", Timeout: 5 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// TestAuditNoEventLost drives encrypt requests from several clients while
// the worker is killed and replaced and the NATS server is shut down and
// started again on the same store and port, then checks the audit stream
// against what the clients saw: every request that got a success reply has
// exactly one audit record, a success; no request has two records; no two
// records share an event ID. (A request that failed may have a record or
// not: the worker may have stored it just before the failure.)
func TestAuditNoEventLost(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: restarts NATS and workers")
	}
	rig := newFaultRig(t)
	w := rig.startWorker("worker-1")
	ctx := context.Background()
	k, err := rig.client("setup").CreateKey(ctx, api.CreateKeyRequest{Alias: "fault"})
	if err != nil {
		t.Fatal(err)
	}

	type outcome struct {
		id  string
		err error
	}
	var (
		mu        sync.Mutex
		results   []outcome
		successes atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	const requesters = 8
	for g := range requesters {
		c := rig.client(fmt.Sprintf("load-%d", g))
		wg.Go(func() {
			req := api.EncryptRequest{KeyID: k.KeyID, Plaintext: []byte("no event lost")}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("fault-%d-%d", g, i)
				_, err := c.Encrypt(client.WithRequestID(ctx, id), req)
				mu.Lock()
				results = append(results, outcome{id, err})
				mu.Unlock()
				if err == nil {
					successes.Add(1)
				}
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	progress := func(what string) {
		t.Helper()
		target := successes.Load() + 200
		deadline := time.Now().Add(60 * time.Second)
		for successes.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d successful requests, want %d within 60s", what, successes.Load(), target)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: %d successful requests so far", what, successes.Load())
	}

	progress("warm-up")
	// (a) The worker dies with requests in flight; a new one takes over.
	w.kill()
	w = rig.startWorker("worker-2")
	progress("after the worker was replaced")
	// (b) The NATS server goes down and comes back on the same store and
	// port; every connection reconnects by itself.
	rig.stopNATS()
	rig.startNATS(rig.listen)
	progress("after the NATS server restarted")

	close(stop)
	wg.Wait()
	// The worker finishes what it holds, so every record that will ever
	// be stored is stored before the stream is read.
	w.stop()

	_, js := rig.serviceConn("checker")
	type rec struct {
		seq                                     uint64
		ID, RequestID, Outcome, Type, ErrorCode string
	}
	var recs []rec
	var after uint64
	for {
		page, err := jsaudit.Read(ctx, js, jsaudit.ReadParams{Tenant: "alpha", AfterSeq: after, Limit: 1000, Wait: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, s := range page {
			var e struct {
				ID        string `json:"id"`
				Type      string `json:"type"`
				RequestID string `json:"requestid"`
				Outcome   string `json:"outcome"`
				ErrorCode string `json:"errorcode"`
			}
			if err := json.Unmarshal(s.Event, &e); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec{seq: s.Seq, ID: e.ID, RequestID: e.RequestID, Outcome: e.Outcome, Type: e.Type, ErrorCode: e.ErrorCode})
		}
		after = page[len(page)-1].Seq
	}

	byID := map[string]uint64{}
	byRequest := map[string][]rec{}
	for _, r := range recs {
		if prev, ok := byID[r.ID]; ok {
			t.Errorf("records %d and %d share the event ID %s", prev, r.seq, r.ID)
		}
		byID[r.ID] = r.seq
		byRequest[r.RequestID] = append(byRequest[r.RequestID], r)
	}
	failures := map[string]int{}
	var ok, failedWithRecord int
	for _, o := range results {
		rs := byRequest[o.id]
		if len(rs) > 1 {
			t.Errorf("request %s has %d audit records: %+v", o.id, len(rs), rs)
		}
		if o.err == nil {
			ok++
			if len(rs) != 1 || rs[0].Outcome != "success" || rs[0].Type != "io.keyflow.crypto.encrypt.v1" {
				t.Errorf("request %s succeeded, but its audit records are %+v", o.id, rs)
			}
			continue
		}
		var ce *client.Error
		switch {
		case errors.As(o.err, &ce):
			failures[ce.Code]++
		case errors.Is(o.err, client.ErrNoService):
			failures["no responders"]++
		default:
			failures["transport: "+errorClass(o.err)]++
		}
		if len(rs) > 0 {
			failedWithRecord++
		}
	}
	keys := make([]string, 0, len(failures))
	for k := range failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("failed: %d × %s", failures[k], k)
	}
	t.Logf("%d requests: %d succeeded, %d failed (%d of them with a record); %d audit records of tenant alpha",
		len(results), ok, len(results)-ok, failedWithRecord, len(recs))
}

func errorClass(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.Is(err, nats.ErrConnectionClosed):
		return "connection closed"
	default:
		return err.Error()
	}
}
