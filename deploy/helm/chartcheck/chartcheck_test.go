package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/rendered from the chart")

const chartDir = "../keyflow"

var rel = Release{Name: "keyflow", Namespace: "keyflow"}

func render(t *testing.T, files ...string) []Manifest {
	t.Helper()
	ms, err := Render(chartDir, files, rel)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func count(objs []string, kind string) int {
	n := 0
	for _, o := range objs {
		if strings.HasPrefix(o, kind+"/") {
			n++
		}
	}
	return n
}

// The default values: one Deployment and ConfigMap per role group, a PDB
// for each group of 2 or more, both Services and the ServiceMonitor, all
// valid; the Secrets are the operator's, listed with the keys read.
func TestDefaultValues(t *testing.T) {
	res := Check(render(t), false)
	if len(res.Problems) > 0 {
		t.Fatalf("problems:\n%s", strings.Join(res.Problems, "\n"))
	}
	for kind, want := range map[string]int{"Deployment": 5, "ConfigMap": 5, "PodDisruptionBudget": 4, "Service": 2, "ServiceMonitor": 1, "Secret": 0} {
		if got := count(res.Objects, kind); got != want {
			t.Errorf("%d %s objects, want %d (%v)", got, kind, want, res.Objects)
		}
	}
	for name, keys := range map[string][]string{
		"keyflow-nats":     {"identity.json", "sealer.creds", "worker.creds"},
		"keyflow-temporal": {"ca.pem", "client-key.pem", "client.pem"},
		"keyflow-hsm":      {"pin"},
		"keyflow-xks":      {"config.json", "tls-key.pem", "tls.pem"},
		"keyflow-cursor":   {"cursor.key"},
	} {
		if got := res.ExternalSecrets[name]; !slices.Equal(got, keys) {
			t.Errorf("Secret %s: keys %v, want %v", name, got, keys)
		}
	}
}

// Every option on and the Secrets rendered: every mount and every file of
// every role group's keyflow.yaml resolves to a key that exists.
func TestSecretsRendered(t *testing.T) {
	res := Check(render(t, "testdata/secrets-values.yaml"), true)
	if len(res.Problems) > 0 {
		t.Fatalf("problems:\n%s", strings.Join(res.Problems, "\n"))
	}
	if got := count(res.Objects, "Secret"); got != 5 {
		t.Errorf("%d Secrets rendered, want 5", got)
	}
}

// The negative test: a broken values file fails the check, exit 1, with a
// message that names the object and the fault.
func TestBrokenValues(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"-require-secrets", "-f", "testdata/secrets-values.yaml", "-f", "testdata/broken-values.yaml", chartDir}, &out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		`Deployment/keyflow-sealer: volume "nats" projects key "sealr.creds", which Secret keyflow-nats does not have`,
		`Deployment/keyflow-sealer container keyflow: keyflow.yaml's nats.creds_file is /etc/keyflow/nats/sealr.creds, key "sealr.creds" of Secret keyflow-nats, which it does not have`,
		`.hostPath.typ"`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("the output lacks %q:\n%s", want, errOut.String())
		}
	}
}

// Faults the values cannot make, injected into the rendered manifests: a
// probe on a port the container does not have, a Service targeting a port
// no selected pod exposes, a volume mount without its volume, a ServiceMonitor
// on a port its Service lacks, a PDB selecting nothing, a kind the checker
// does not know.
func TestInjectedFaults(t *testing.T) {
	ms := render(t)
	edit := func(source, kindName, old, new string) {
		t.Helper()
		for i, m := range ms {
			if strings.HasSuffix(m.Source, source) && bytes.Contains(m.Data, []byte(kindName)) && bytes.Contains(m.Data, []byte(old)) {
				ms[i].Data = bytes.Replace(m.Data, []byte(old), []byte(new), 1)
				return
			}
		}
		t.Fatalf("no %q in %s (%s)", old, source, kindName)
	}
	edit("deployment.yaml", "name: keyflow-lifecycle\n", "httpGet: {path: /readyz, port: ops}", "httpGet: {path: /readyz, port: metrics}")
	edit("deployment.yaml", "name: keyflow-remediation\n", "- {name: tmp, mountPath: /tmp}", "- {name: scratch, mountPath: /tmp}")
	edit("service.yaml", "name: keyflow-gateway\n", "targetPort: xks", "targetPort: https")
	edit("servicemonitor.yaml", "ServiceMonitor", "- port: ops", "- port: web")
	edit("pdb.yaml", "name: keyflow-sealer\n", "      app.kubernetes.io/component: sealer", "      app.kubernetes.io/component: sealers")
	ms = append(ms, Manifest{Source: "injected", Data: []byte("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")})
	res := Check(ms, false)
	for _, want := range []string{
		`Deployment/keyflow-lifecycle container keyflow: the readiness probe's port metrics is not one of the container's ports [ops=9090]`,
		`Deployment/keyflow-remediation container keyflow: volume mount /tmp names volume "scratch", which the pod does not have`,
		`Service/keyflow-gateway: port xks targets https, which Deployment/keyflow-gateway's pods do not expose`,
		`ServiceMonitor/keyflow: endpoint port "web" is not a port of Service/keyflow-metrics`,
		`PodDisruptionBudget/keyflow-sealer: selector`,
		`Widget/w (injected): `,
	} {
		if !slices.ContainsFunc(res.Problems, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("no problem %q in:\n%s", want, strings.Join(res.Problems, "\n"))
		}
	}
}

// TestRenderedConfig keeps testdata/rendered/<group>.yaml equal to each
// role group's rendered keyflow.yaml (go test -update rewrites them). The
// main module parses these files with deploy/config, strictly
// (deploy/config's TestHelmChartConfigs): so a field the chart writes that
// keyflow does not know fails there, without this module's Helm in the
// main module's build.
func TestRenderedConfig(t *testing.T) {
	n := 0
	for _, m := range render(t) {
		var cm corev1.ConfigMap
		if !strings.HasSuffix(m.Source, "configmap.yaml") {
			continue
		}
		if err := yaml.Unmarshal(m.Data, &cm); err != nil {
			t.Fatal(err)
		}
		group := strings.TrimPrefix(cm.Name, rel.Name+"-")
		file := filepath.Join("testdata", "rendered", group+".yaml")
		got := cm.Data["keyflow.yaml"]
		n++
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil || string(want) != got {
			t.Errorf("%s differs from the rendered keyflow.yaml of %s (go test -update rewrites it): %v\n%s", file, group, err, got)
		}
	}
	if n != 5 {
		t.Errorf("%d role group ConfigMaps, want 5", n)
	}
}

// The values schema (deploy/helm/keyflow/values.schema.json) refuses a
// role group with a role keyflow does not have before anything renders.
func TestValuesSchema(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"-f", "testdata/unknown-role-values.yaml", chartDir}, &out, &errOut)
	want := "/roleGroups/crypto-admin/roles/0': value must be one of 'crypto', 'admin'"
	if code != 1 || !strings.Contains(errOut.String(), want) {
		t.Errorf("exit %d, want 1 and %q:\n%s", code, want, errOut.String())
	}
}

// region.name (multi-region keys) reaches every role group's keyflow.yaml,
// and the schema refuses a name keyflow would refuse.
func TestRegionValues(t *testing.T) {
	f := filepath.Join(t.TempDir(), "region-values.yaml")
	if err := os.WriteFile(f, []byte("region: {name: eu-west}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range render(t, f) {
		var cm corev1.ConfigMap
		if !strings.HasSuffix(m.Source, "configmap.yaml") {
			continue
		}
		if err := yaml.Unmarshal(m.Data, &cm); err != nil {
			t.Fatal(err)
		}
		n++
		if got := cm.Data["keyflow.yaml"]; !strings.Contains(got, "\nregion:\n  name: eu-west") {
			t.Errorf("%s has no region:\n%s", cm.Name, got)
		}
	}
	if n != 5 {
		t.Errorf("%d role group ConfigMaps, want 5", n)
	}
	if err := os.WriteFile(f, []byte("region: {name: EU_West}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(chartDir, []string{f}, rel); err == nil || !strings.Contains(err.Error(), "/region/name") {
		t.Errorf("the schema took region.name EU_West: %v", err)
	}
}
