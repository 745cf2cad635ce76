package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"text/tabwriter"
)

// AWS KMS API figures: BenchmarkAWS{Encrypt,Decrypt,GenerateDataKey}
// (workers/awskms), keyflow's gateway against local-kms driven by the same
// AWS SDK load code, at 1, 8 and 64 clients. The target is keyflow
// at >= 1.5x local-kms's ops/s at 8 and 64 clients (2x the stretch), and
// p50 at 1 client no worse.
const AWSTargetRatio = 1.5

var awsName = regexp.MustCompile(`^BenchmarkAWS(Encrypt|Decrypt|GenerateDataKey)/(keyflow|localkms)/clients=(\d+)(?:-\d+)?$`)

type awsKey struct {
	op, server string
	clients    int
}

// parseAWS records an AWS result; false when name is not one.
func parseAWS(res *results, name string, s sample) bool {
	m := awsName.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	n, _ := strconv.Atoi(m[3])
	if res.aws == nil {
		res.aws = map[awsKey][]sample{}
	}
	k := awsKey{m[1], m[2], n}
	res.aws[k] = append(res.aws[k], s)
	return true
}

func writeAWS(w io.Writer, res *results) {
	if len(res.aws) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "AWS KMS API from the AWS SDK for Go v2 (keyflow: SigV4 + in-process dispatch + SoftHSM + durable audit; local-kms: the emulator, same load code)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tclients\tkeyflow ops/s\tp50 ms\tp99 ms\tlocal-kms ops/s\tp50 ms\tp99 ms\tratio\t")
	for _, op := range []string{"Encrypt", "Decrypt", "GenerateDataKey"} {
		var ns []int
		for k := range res.aws {
			if k.op == op && k.server == "keyflow" {
				ns = append(ns, k.clients)
			}
		}
		slices.Sort(ns)
		for _, n := range ns {
			kf, lk := res.aws[awsKey{op, "keyflow", n}], res.aws[awsKey{op, "localkms", n}]
			kOps, ok1 := median(kf, "ops/s")
			lOps, ok2 := median(lk, "ops/s")
			ratio := "-"
			if ok1 && ok2 && lOps > 0 {
				ratio = fmt.Sprintf("%.2fx", kOps/lOps)
			}
			cell := func(ss []sample, unit string) string {
				v, ok := median(ss, unit)
				return num2(v, ok)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", op, n, cell(kf, "ops/s"), cell(kf, "p50-ms"), cell(kf, "p99-ms"),
				cell(lk, "ops/s"), cell(lk, "p50-ms"), cell(lk, "p99-ms"), ratio)
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "target: keyflow >= %.1fx local-kms at 8 and 64 clients (medians of the runs above)\n", AWSTargetRatio)
}
