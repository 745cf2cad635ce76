// Package main is the chartcheck command: it renders keyflow's Helm chart (deploy/helm/keyflow)
// with Helm's Go library, as `helm template` would, and validates every
// rendered object offline: each is decoded strictly into its k8s.io/api
// type through client-go's scheme (the ServiceMonitor CRD structurally),
// and what the objects refer to must exist (probes' ports, mounts and
// volumes, ConfigMaps and Secrets and their keys, the files keyflow.yaml
// names, Service, PodDisruptionBudget and ServiceMonitor selectors).
//
//	go run . [-f values.yaml]... [-require-secrets] ../keyflow
//
// It prints the objects, the Secrets you must create (unless the chart
// renders them), and exits 1 with one line per problem. It is a module of
// its own so that the main module does not depend on Helm and Kubernetes;
// `go tool task chart` runs it and its tests.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// valueFiles is a repeatable -f.
type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chartcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files valueFiles
	fs.Var(&files, "f", "values file (repeatable; later files win)")
	require := fs.Bool("require-secrets", false, "every Secret a pod mounts must be rendered by the chart")
	name := fs.String("name", "keyflow", "release name")
	ns := fs.String("namespace", "keyflow", "release namespace")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: chartcheck [-f values.yaml]... [-require-secrets] CHART_DIR")
		return 2
	}
	ms, err := Render(fs.Arg(0), files, Release{Name: *name, Namespace: *ns})
	if err != nil {
		fmt.Fprintf(stderr, "chartcheck: %v\n", err)
		return 1
	}
	res := Check(ms, *require)
	fmt.Fprintf(stdout, "rendered %d objects: %s\n", len(res.Objects), strings.Join(res.Objects, " "))
	var ext []string
	for n := range res.ExternalSecrets {
		ext = append(ext, n)
	}
	slices.Sort(ext)
	for _, n := range ext {
		fmt.Fprintf(stdout, "expects Secret %s with keys %s\n", n, strings.Join(res.ExternalSecrets[n], " "))
	}
	if len(res.Problems) > 0 {
		fmt.Fprintf(stderr, "chartcheck: %d problems:\n", len(res.Problems))
		for _, p := range res.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		return 1
	}
	fmt.Fprintln(stdout, "chart OK")
	return 0
}
