package main

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/getter"
)

// Release names the rendered release, as `helm template NAME --namespace NS`.
type Release struct{ Name, Namespace string }

// Manifest is one YAML document the chart rendered.
type Manifest struct {
	Source string // the template, e.g. keyflow/templates/deployment.yaml
	Data   []byte
}

// Render renders the chart in dir with the values files (later files win),
// as `helm template` does, offline: the values schema is validated, the
// engine is strict (a template reading a value that does not exist fails),
// and nothing talks to a cluster.
func Render(dir string, valueFiles []string, rel Release) ([]Manifest, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to load the chart %s: %w", dir, err)
	}
	opts := values.Options{ValueFiles: valueFiles}
	vals, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, fmt.Errorf("failed to read the values: %w", err)
	}
	rv, err := util.ToRenderValuesWithSchemaValidation(ch, vals,
		common.ReleaseOptions{Name: rel.Name, Namespace: rel.Namespace, Revision: 1, IsInstall: true}, nil, false)
	if err != nil {
		return nil, fmt.Errorf("the values do not fit the chart: %w", err)
	}
	files, err := engine.Engine{Strict: true}.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("failed to render the chart: %w", err)
	}
	var out []Manifest
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if path.Ext(name) != ".yaml" && path.Ext(name) != ".yml" {
			continue // NOTES.txt, helpers
		}
		for _, doc := range splitYAML(files[name]) {
			out = append(out, Manifest{Source: name, Data: doc})
		}
	}
	return out, nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitYAML splits a rendered file into its documents, dropping empty ones
// (only comments and blanks).
func splitYAML(s string) [][]byte {
	var docs [][]byte
	for _, d := range docSep.Split(s, -1) {
		empty := true
		for _, line := range strings.Split(d, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, bytes.TrimSpace([]byte(d)))
		}
	}
	return docs
}
