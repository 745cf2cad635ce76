package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"text/tabwriter"
)

// XKS proxy figures: BenchmarkXKSEncrypt (workers/xks) at 1 and 32
// clients against BenchmarkXKSRawHSMGCM of the same run. The issue's
// target is p99 <= 5 ms at 32 clients (AWS KMS drops a request after
// 250 ms and asks for a 35 ms round trip).
const (
	XKSTargetP99ms   = 5.0
	XKSTargetClients = 32
)

var (
	xksName    = regexp.MustCompile(`^BenchmarkXKSEncrypt/clients=(\d+)(?:-\d+)?$`)
	xksRawName = regexp.MustCompile(`^BenchmarkXKSRawHSMGCM(?:-\d+)?$`)
	xksNoAudit = regexp.MustCompile(`^BenchmarkXKSEncryptNoAudit/clients=(\d+)(?:-\d+)?$`)
)

func parseXKS(res *results, name string, s sample) {
	if m := xksName.FindStringSubmatch(name); m != nil {
		n, _ := strconv.Atoi(m[1])
		res.xks[n] = append(res.xks[n], s)
	} else if m := xksNoAudit.FindStringSubmatch(name); m != nil {
		n, _ := strconv.Atoi(m[1])
		res.xksNoAudit[n] = append(res.xksNoAudit[n], s)
	} else if xksRawName.MatchString(name) {
		res.xksRaw = append(res.xksRaw, s)
	}
}

func num2(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func writeXKS(w io.Writer, res *results) {
	if len(res.xks) == 0 {
		return
	}
	ns := make([]int, 0, len(res.xks))
	for n := range res.xks {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	raw, rawOK := median(res.xksRaw, "ops/s")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "XKS proxy Encrypt (HTTPS + SigV4 → SoftHSM AES-256-GCM 32 B with AAD and integrity value → audit in JetStream)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\truns\tops/s\tp50 ms\tp99 ms\tcpu µs/op\t/raw HSM\t")
	type row struct {
		label string
		ss    []sample
	}
	var rows []row
	for _, n := range ns {
		rows = append(rows, row{strconv.Itoa(n), res.xks[n]})
		if na := res.xksNoAudit[n]; len(na) > 0 {
			rows = append(rows, row{strconv.Itoa(n) + " (no audit)", na})
		}
	}
	for _, r := range rows {
		ss := r.ss
		ops, ok1 := median(ss, "ops/s")
		p50, ok2 := median(ss, "p50-ms")
		p99, ok3 := median(ss, "p99-ms")
		cpu, ok4 := median(ss, "cpu-µs/op")
		ratio := "-"
		if ok1 && rawOK && raw > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*ops/raw)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.label, len(ss), num(ops, ok1), num2(p50, ok2), num2(p99, ok3), num(cpu, ok4), ratio)
	}
	tw.Flush()
	if rawOK {
		rp99, _ := median(res.xksRaw, "p99-ms")
		fmt.Fprintf(w, "raw HSM AES-256-GCM 32 B, 32 goroutines: %s ops/s, p99 %.2f ms (median of %d)\n", num(raw, true), rp99, len(res.xksRaw))
	}
	p99, ok := median(res.xks[XKSTargetClients], "p99-ms")
	if !ok {
		fmt.Fprintf(w, "XKS target: p99 <= %.0f ms at %d clients: NO DATA\n", XKSTargetP99ms, XKSTargetClients)
		return
	}
	fmt.Fprintf(w, "XKS target: p99 <= %.0f ms at %d clients: %.2f ms: %s\n", XKSTargetP99ms, XKSTargetClients, p99, verdictOf(p99 <= XKSTargetP99ms))
}
