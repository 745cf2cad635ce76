// Package main is the benchtable command: it summarises the benchmarks of
// go tool task bench (NATS encrypt against the raw HSM baseline, XKS, KMIP
// and the AWS KMS API against local-kms) as tables.
//
// It reads `go test -bench` output on stdin (run with -count N for several
// samples of each benchmark) and prints, for each number of requesters, the
// median throughput and latency percentiles, then the median raw SoftHSM
// AES-GCM throughput and what fraction of it the whole path keeps:
//
//	go test -run '^$' -bench 'EncryptNATS|RawHSMGCM' -benchtime 2s -count 3 ./workers/rpc/ | go run ./e2e/benchtable
//
// With BenchmarkEncryptNATSNoAudit in the same run (the pattern above
// selects it), it also prints what durable audit costs: the audited
// throughput as a fraction of the same path with an audit sink that stores
// nothing (target >= 0.75x at 8 requesters).
//
// The target line at the end is informational; the exit status reports only
// whether the input could be read (1 if it held no benchmark results or the
// benchmark run failed).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Target is the informational throughput goal at TargetRequesters.
const (
	Target           = 8000.0
	TargetRequesters = 8
)

// sample is one result line: metric unit → value.
type sample map[string]float64

// results are the parsed samples of one input.
type results struct {
	nats    map[int][]sample // by requesters
	noAudit map[int][]sample // BenchmarkEncryptNATSNoAudit by requesters
	raw     []sample
	batch   []sample         // BenchmarkBatchEncryptNATS (ops/s counts items)
	sign    map[int][]sample // BenchmarkSignNATS by requesters
	rawSign []sample         // BenchmarkRawHSMSignP256
	xks     map[int][]sample // BenchmarkXKSEncrypt by clients (xks.go)
	xksRaw  []sample         // BenchmarkXKSRawHSMGCM
	// BenchmarkXKSEncryptNoAudit by clients
	xksNoAudit map[int][]sample
	rewrap     []sample            // BenchmarkRewrapRegistered (ops/s counts data keys)
	rewrapN    []sample            // BenchmarkRewrapNATS (ops/s counts ciphertexts)
	aws        map[awsKey][]sample // BenchmarkAWS* (aws.go)
	failed     bool
}

var (
	// BenchmarkEncryptNATS/requesters=8-2 (the -2 is GOMAXPROCS).
	natsName    = regexp.MustCompile(`^BenchmarkEncryptNATS/requesters=(\d+)(?:-\d+)?$`)
	noAuditName = regexp.MustCompile(`^BenchmarkEncryptNATSNoAudit/requesters=(\d+)(?:-\d+)?$`)
	rawName     = regexp.MustCompile(`^BenchmarkRawHSMGCM(?:-\d+)?$`)
	batchName   = regexp.MustCompile(`^BenchmarkBatchEncryptNATS/`)
	signName    = regexp.MustCompile(`^BenchmarkSignNATS/requesters=(\d+)(?:-\d+)?$`)
	rawSignName = regexp.MustCompile(`^BenchmarkRawHSMSignP256(?:-\d+)?$`)
	rewrapName  = regexp.MustCompile(`^BenchmarkRewrapRegistered(?:-\d+)?$`)
	rewrapNName = regexp.MustCompile(`^BenchmarkRewrapNATS/`)
)

func parse(r io.Reader) (*results, error) {
	res := &results{nats: map[int][]sample{}, noAudit: map[int][]sample{}, sign: map[int][]sample{}, xks: map[int][]sample{}, xksNoAudit: map[int][]sample{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:") {
			res.failed = true
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		// name, iterations, then value/unit pairs.
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		s := sample{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("failed to parse %q in %q: %w", f[i], line, err)
			}
			s[f[i+1]] = v
		}
		if m := natsName.FindStringSubmatch(f[0]); m != nil {
			n, _ := strconv.Atoi(m[1])
			res.nats[n] = append(res.nats[n], s)
		} else if m := noAuditName.FindStringSubmatch(f[0]); m != nil {
			n, _ := strconv.Atoi(m[1])
			res.noAudit[n] = append(res.noAudit[n], s)
		} else if rawName.MatchString(f[0]) {
			res.raw = append(res.raw, s)
		} else if batchName.MatchString(f[0]) {
			res.batch = append(res.batch, s)
		} else if m := signName.FindStringSubmatch(f[0]); m != nil {
			n, _ := strconv.Atoi(m[1])
			res.sign[n] = append(res.sign[n], s)
		} else if rawSignName.MatchString(f[0]) {
			res.rawSign = append(res.rawSign, s)
		} else if rewrapName.MatchString(f[0]) {
			res.rewrap = append(res.rewrap, s)
		} else if rewrapNName.MatchString(f[0]) {
			res.rewrapN = append(res.rewrapN, s)
		} else if !parseAWS(res, f[0], s) {
			parseXKS(res, f[0], s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read input: %w", err)
	}
	return res, nil
}

// median of one metric over samples; ok is false if no sample has it.
func median(ss []sample, unit string) (float64, bool) {
	var v []float64
	for _, s := range ss {
		if x, ok := s[unit]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

func num(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func write(w io.Writer, res *results) {
	ns := make([]int, 0, len(res.nats))
	for n := range res.nats {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	raw, rawOK := median(res.raw, "ops/s")

	fmt.Fprintln(w, "Encrypt over NATS (client → tenant import → worker pool → SoftHSM AES-256-GCM, 32 B, audit on)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requesters\truns\tops/s\tp50 µs\tp99 µs\t")
	for _, n := range ns {
		ss := res.nats[n]
		ops, ok1 := median(ss, "ops/s")
		p50, ok2 := median(ss, "p50-µs")
		p99, ok3 := median(ss, "p99-µs")
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t\n", n, len(ss), num(ops, ok1), num(p50, ok2), num(p99, ok3))
	}
	tw.Flush()
	fmt.Fprintln(w)

	if rawOK {
		fmt.Fprintf(w, "raw HSM AES-256-GCM 32 B (serial, session key): %s ops/s (median of %d)\n", num(raw, true), len(res.raw))
	} else {
		fmt.Fprintln(w, "raw HSM AES-256-GCM 32 B: no BenchmarkRawHSMGCM results in the input")
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requesters\tNATS/raw HSM\t")
	for _, n := range ns {
		ops, ok := median(res.nats[n], "ops/s")
		ratio := "-"
		if ok && rawOK && raw > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*ops/raw)
		}
		fmt.Fprintf(tw, "%d\t%s\t\n", n, ratio)
	}
	tw.Flush()
	fmt.Fprintln(w)

	verdict := "BELOW"
	at, ok := median(res.nats[TargetRequesters], "ops/s")
	switch {
	case !ok:
		verdict = "NO DATA"
	case at >= Target:
		verdict = "PASS"
	}
	fmt.Fprintf(w, "target: >= %.0f ops/s at %d requesters: %s\n", Target, TargetRequesters, verdict)
	writeAuditCost(w, res)
	writeCore(w, res, raw, rawOK)
	writeXKS(w, res)
	writeAWS(w, res)
	writeRewrap(w, res, raw, rawOK)
}

// writeRewrap prints the migration's rewrap rate (issue #7: reported, no
// target), against raw AES-GCM of the same run: each rewrap is a decrypt
// and an encrypt, so 0.5x would be the HSM's own ceiling.
func writeRewrap(w io.Writer, res *results, raw float64, rawOK bool) {
	if len(res.rewrap) == 0 && len(res.rewrapN) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Migration rewrap rate (medians; data keys per second, each audited)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\titems/s\t/ raw AES-GCM\t")
	row := func(name string, ss []sample) {
		v, ok := median(ss, "ops/s")
		ratio := "-"
		if ok && rawOK && raw > 0 {
			ratio = fmt.Sprintf("%.3fx", v/raw)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", name, num(v, ok), ratio)
	}
	row("registry rewrap (workflow activity path, pages of 100)", res.rewrap)
	row("crypto.rewrap over NATS (batches of 100, 8 requesters)", res.rewrapN)
	tw.Flush()
}

// AuditRatioTarget is the informational floor of audited / unaudited
// encrypt throughput at TargetRequesters.
const AuditRatioTarget = 0.75

// writeAuditCost prints audited vs unaudited throughput per number of
// requesters (medians of the same run) and the ratio line.
func writeAuditCost(w io.Writer, res *results) {
	if len(res.noAudit) == 0 {
		return
	}
	ns := make([]int, 0, len(res.noAudit))
	for n := range res.noAudit {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Durable audit cost (encrypt with the record stored in JetStream vs an audit sink that stores nothing)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requesters\taudited ops/s\tno audit ops/s\tratio\taudited cpu µs/op\tno audit cpu µs/op\tcpu ratio\t")
	for _, n := range ns {
		a, okA := median(res.nats[n], "ops/s")
		u, okU := median(res.noAudit[n], "ops/s")
		ratio := "-"
		if okA && okU && u > 0 {
			ratio = fmt.Sprintf("%.2fx", a/u)
		}
		ca, okCA := median(res.nats[n], "cpu-µs/op")
		cu, okCU := median(res.noAudit[n], "cpu-µs/op")
		cpuRatio := "-"
		if okCA && okCU && ca > 0 {
			cpuRatio = fmt.Sprintf("%.2fx", cu/ca)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", n, num(a, okA), num(u, okU), ratio, num(ca, okCA), num(cu, okCU), cpuRatio)
	}
	tw.Flush()
	fmt.Fprintln(w, "(cpu ratio: no-audit CPU per request / audited CPU per request, the throughput ratio to expect when CPU-bound;")
	fmt.Fprintln(w, " it varies far less than ops/s on a shared machine)")
	a, okA := median(res.nats[TargetRequesters], "ops/s")
	u, okU := median(res.noAudit[TargetRequesters], "ops/s")
	if !okA || !okU || u <= 0 {
		fmt.Fprintf(w, "audit ratio at %d requesters: NO DATA (target >= %.2fx)\n", TargetRequesters, AuditRatioTarget)
		return
	}
	r := a / u
	fmt.Fprintf(w, "audit ratio at %d requesters: audited %.0f / no audit %.0f ops/s = %.2fx (target >= %.2fx): %s\n",
		TargetRequesters, a, u, r, AuditRatioTarget, verdictOf(r >= AuditRatioTarget))
}

// writeCore prints the crypto-core figures with their targets (issue
// "crypto core"): each is a ratio against a raw HSM rate of the same run.
func writeCore(w io.Writer, res *results, raw float64, rawOK bool) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Crypto-core figures (medians; ratios against the raw HSM rate of the same run)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmeasured\ttarget\tverdict\t")
	ratioRow := func(name string, ss []sample, base float64, baseOK bool, target float64) {
		v, ok := median(ss, "ops/s")
		if !ok || !baseOK || base <= 0 {
			fmt.Fprintf(tw, "%s\t-\t>= %.2fx\tNO DATA\t\n", name, target)
			return
		}
		r := v / base
		fmt.Fprintf(tw, "%s\t%.0f ops/s = %.2fx\t>= %.2fx\t%s\t\n", name, v, r, target, verdictOf(r >= target))
	}
	ratioRow("encrypt, 64 requesters / raw AES-GCM", res.nats[64], raw, rawOK, 0.5)
	ratioRow("batch encrypt items/s / raw AES-GCM", res.batch, raw, rawOK, 0.8)
	rawSign, rawSignOK := median(res.rawSign, "ops/s")
	ratioRow("ECDSA P-256 sign, 8 requesters / raw sign", res.sign[8], rawSign, rawSignOK, 0.6)
	if p50, ok := median(res.nats[1], "p50-µs"); ok {
		fmt.Fprintf(tw, "encrypt p50 at 1 requester\t%.0f µs\t<= 150 µs\t%s\t\n", p50, verdictOf(p50 <= 150))
	}
	tw.Flush()
	if rawSignOK {
		fmt.Fprintf(w, "raw HSM ECDSA P-256 sign (serial): %.0f ops/s\n", rawSign)
	}
}

func verdictOf(ok bool) string {
	if ok {
		return "PASS"
	}
	return "BELOW"
}

func main() {
	res, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if len(res.nats) == 0 && len(res.raw) == 0 && len(res.noAudit) == 0 && len(res.xks) == 0 && len(res.aws) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no BenchmarkEncryptNATS or BenchmarkRawHSMGCM results on stdin")
		os.Exit(1)
	}
	write(os.Stdout, res)
	if res.failed {
		fmt.Fprintln(os.Stderr, "benchtable: the benchmark run reported a failure; the table covers what completed")
		os.Exit(1)
	}
}
