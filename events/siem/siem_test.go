package siem_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyflow/keyflow/events"
	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/events/siem"
)

// natsServer runs a JetStream server on 127.0.0.1 with its store in dir, on
// port (0: a free one).
func natsServer(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	return ns
}

func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// checkFor polls cond until it holds, failing the test after timeout.
func checkFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// emitter stores audit records of two tenants and a few keys.
type emitter struct {
	pub *jsaudit.Publisher
	n   atomic.Int64
}

func (e *emitter) emit(ctx context.Context) error {
	i := e.n.Add(1)
	tenant := []string{"alpha", "beta"}[i%2]
	r := events.Record{
		Type: events.TypeEncrypt, Tenant: tenant, Principal: "p", RequestID: fmt.Sprintf("r%d", i),
		Subject: fmt.Sprintf("kf:%s:key/0b7f8a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5%d", tenant, i%3),
		Outcome: events.OutcomeSuccess, Data: map[string]any{"keyVersion": 1, "plaintextBytes": 32},
	}
	return e.pub.Emit(ctx, r)
}

// streamRecords reads every record of the stream.
func streamRecords(t *testing.T, js jetstream.JetStream) []jsaudit.Stored {
	t.Helper()
	var out []jsaudit.Stored
	var after uint64
	for {
		page, err := jsaudit.Read(context.Background(), js, jsaudit.ReadParams{Tenant: "*", AfterSeq: after, Limit: 1000, Wait: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
}

// crashAfter is an output that, after n successful batches, writes the
// next batch and then fails as if the process died before acking it.
type crashAfter struct {
	siem.Output
	n      int
	cancel context.CancelFunc
}

func (c *crashAfter) Write(lines []siem.Line) error {
	if err := c.Output.Write(lines); err != nil {
		return err
	}
	if c.n--; c.n < 0 {
		c.cancel()
		return errors.New("crashed between write and ack")
	}
	return nil
}

// readLines parses a forwarded file.
func readLines(t *testing.T, path string) []siem.Line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []siem.Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		var l siem.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not a record: %v: %q", len(out)+1, err, sc.Text())
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestForwardFileResumes forwards to a file across a crash between write
// and ack, a torn last line, a NATS server restart and a kill mid-way, and
// checks that the file holds every record of the stream exactly once, in
// stream order, byte for byte.
func TestForwardFileResumes(t *testing.T) {
	storeDir := t.TempDir()
	ns := natsServer(t, storeDir, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	ctx := context.Background()
	_, js := connect(t, url)
	pub, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	em := &emitter{pub: pub}
	for range 300 {
		if err := em.emit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	run := func(ctx context.Context, out siem.Output, progress func(uint64)) error {
		return siem.Forward(ctx, js, siem.Config{Out: out, Batch: 20, AckWait: 2 * time.Second, Progress: progress,
			Logger: testLogger(t)})
	}

	// Run 1 writes three batches, then "crashes" after writing the fourth
	// and before acking it.
	out, err := siem.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c1, cancel1 := context.WithCancel(ctx)
	_ = run(c1, &crashAfter{Output: out, n: 3, cancel: cancel1}, nil)
	cancel1()
	out.Close()
	if n := len(readLines(t, path)); n != 80 {
		t.Fatalf("run 1 wrote %d lines, want 80", n)
	}
	// A torn line, as a kill inside a write would leave.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"seq":81,"ev`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// Run 2 forwards while records keep coming and the NATS server
	// restarts under it, and is killed mid-way.
	out, err = siem.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.LastSeq() != 80 {
		t.Fatalf("resumed at %d, want 80", out.LastSeq())
	}
	var progress atomic.Uint64
	c2, cancel2 := context.WithCancel(ctx)
	done2 := make(chan error, 1)
	go func() { done2 <- run(c2, out, func(s uint64) { progress.Store(s) }) }()
	var wg sync.WaitGroup
	stopEmit := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stopEmit:
				return
			default:
			}
			// A request in flight at the restart gets no reply, and a
			// failure during the restart is fine.
			ectx, cancel := context.WithTimeout(ctx, time.Second)
			_ = em.emit(ectx)
			cancel()
		}
	})
	checkFor(t, 30*time.Second, "run 2 to pass record 200", func() bool { return progress.Load() >= 200 })
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = natsServer(t, storeDir, port)
	p0 := progress.Load()
	checkFor(t, 30*time.Second, "run 2 to go on after the restart", func() bool { return progress.Load() > p0+100 })
	cancel2() // killed mid-way, records still coming
	if err := <-done2; err != nil {
		t.Fatalf("run 2: %v", err)
	}
	out.Close()
	close(stopEmit)
	wg.Wait()

	// Run 3 catches up.
	out, err = siem.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	want := streamRecords(t, js)
	last := want[len(want)-1].Seq
	c3, cancel3 := context.WithCancel(ctx)
	done3 := make(chan error, 1)
	go func() { done3 <- run(c3, out, func(s uint64) { progress.Store(s) }) }()
	checkFor(t, 30*time.Second, "run 3 to catch up", func() bool { return progress.Load() >= last })
	cancel3()
	if err := <-done3; err != nil {
		t.Fatalf("run 3: %v", err)
	}

	got := readLines(t, path)
	t.Logf("%d records in the stream, %d lines in the file", len(want), len(got))
	if len(got) != len(want) {
		t.Errorf("the file has %d lines, the stream %d records", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i].Seq != want[i].Seq {
			t.Fatalf("line %d has seq %d, want %d (a gap, a duplicate or a reordering)", i+1, got[i].Seq, want[i].Seq)
		}
		if string(got[i].Event) != string(want[i].Event) {
			t.Fatalf("line %d (seq %d) differs from the stored record", i+1, got[i].Seq)
		}
	}
}

// TestForwardFilterAndSyslog forwards one tenant's records over TCP syslog
// and checks the RFC 5424 framing and fields.
func TestForwardFilterAndSyslog(t *testing.T) {
	ns := natsServer(t, t.TempDir(), 0)
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	ctx := context.Background()
	_, js := connect(t, ns.ClientURL())
	pub, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	em := &emitter{pub: pub}
	for range 40 {
		if err := em.emit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 100)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for {
			n, err := r.ReadString(' ')
			if err != nil {
				return
			}
			size, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil {
				msgs <- "bad frame length " + n
				return
			}
			b := make([]byte, size)
			if _, err := io.ReadFull(r, b); err != nil {
				return
			}
			msgs <- string(b)
		}
	}()
	out, err := siem.DialSyslog("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	filter, err := jsaudit.FilterSubject("beta", "", "io.keyflow.crypto.*")
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- siem.Forward(fctx, js, siem.Config{Out: out, Consumer: "syslog-test", Filter: filter, Logger: testLogger(t)})
	}()
	re := regexp.MustCompile(`^<110>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ keyflow \d+ audit \[keyflow@32473 seq="(\d+)" id="[^"]+" type="io\.keyflow\.crypto\.encrypt\.v1" tenant="beta" outcome="success"\] (\{.*\})$`)
	var prev uint64
	for i := range 20 {
		var m string
		select {
		case m = <-msgs:
		case <-time.After(30 * time.Second):
			t.Fatalf("got %d syslog messages, want 20", i)
		}
		sub := re.FindStringSubmatch(m)
		if sub == nil {
			t.Fatalf("syslog message %d is not as expected: %q", i+1, m)
		}
		seq, _ := strconv.ParseUint(sub[1], 10, 64)
		if seq <= prev {
			t.Errorf("syslog message %d has seq %d after %d", i+1, seq, prev)
		}
		prev = seq
		var l siem.Line
		if err := json.Unmarshal([]byte(sub[2]), &l); err != nil || l.Seq != seq {
			t.Errorf("syslog message %d body: %v seq %d", i+1, err, l.Seq)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		t.Errorf("a 21st message arrived: %q", m)
	default:
	}
}

func TestOpenFileRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("my notes\nmore notes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := siem.OpenFile(path); err == nil {
		t.Fatal("OpenFile appended to a file that is not a forwarder's")
	}
	if b, _ := os.ReadFile(path); string(b) != "my notes\nmore notes" {
		t.Fatalf("OpenFile changed a foreign file: %q", b)
	}
}

// testLogger logs through t, so a failing run shows what the forwarder saw.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// TestForwardRecoversLostDelivery takes a delivery away from the
// forwarder (another client pulls from its consumer and never acks, as a
// delivery lost in a reconnect would be): the forwarder notices the gap in
// the delivery sequence and still writes every record once, in order.
func TestForwardRecoversLostDelivery(t *testing.T) {
	ns := natsServer(t, t.TempDir(), 0)
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	ctx := context.Background()
	_, js := connect(t, ns.ClientURL())
	pub, err := jsaudit.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	em := &emitter{pub: pub}
	for range 10 {
		if err := em.emit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	out, err := siem.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var progress atomic.Uint64
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- siem.Forward(fctx, js, siem.Config{Out: out, Consumer: "lossy", Batch: 1, AckWait: time.Minute,
			Progress: func(s uint64) { progress.Store(s) }, Logger: testLogger(t)})
	}()
	checkFor(t, 30*time.Second, "the backlog", func() bool { return progress.Load() >= 10 })

	// The thief waits for a record of the forwarder's consumer.
	_, thiefJS := connect(t, ns.ClientURL())
	cons, err := thiefJS.Consumer(ctx, jsaudit.StreamName, "lossy")
	if err != nil {
		t.Fatal(err)
	}
	stolen := make(chan uint64, 1)
	go func() {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			stolen <- 0
			return
		}
		md, _ := m.Metadata()
		stolen <- md.Sequence.Stream // and never acked
	}()
	var seq uint64
	checkFor(t, 30*time.Second, "a stolen delivery", func() bool {
		select {
		case seq = <-stolen:
			return true
		default:
		}
		if err := em.emit(ctx); err != nil {
			t.Fatal(err)
		}
		return false
	})
	if seq == 0 {
		t.Fatal("the thief got nothing")
	}
	t.Logf("record %d was delivered elsewhere", seq)
	for range 5 {
		if err := em.emit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := streamRecords(t, js)
	last := want[len(want)-1].Seq
	checkFor(t, 30*time.Second, "the forwarder to catch up", func() bool { return progress.Load() >= last })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := readLines(t, path)
	if len(got) != len(want) {
		t.Fatalf("the file has %d lines, the stream %d records", len(got), len(want))
	}
	for i := range got {
		if got[i].Seq != want[i].Seq {
			t.Fatalf("line %d has seq %d, want %d", i+1, got[i].Seq, want[i].Seq)
		}
	}
}
