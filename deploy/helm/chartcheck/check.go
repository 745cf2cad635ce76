package main

import (
	"fmt"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Result is what Check found.
type Result struct {
	// Objects are the rendered objects, "Kind/name", in order.
	Objects []string
	// Problems are the faults, one a line, each naming the object.
	Problems []string
	// ExternalSecrets are the Secrets the chart expects to exist and does
	// not render, with the keys it reads from each.
	ExternalSecrets map[string][]string
}

// serviceMonitor is the Prometheus operator's ServiceMonitor
// (monitoring.coreos.com/v1), the fields this chart may use: a CRD, so not
// in client-go's scheme; decoded strictly, an unknown field is a fault.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string              `json:"port,omitempty"`
			TargetPort    *intstr.IntOrString `json:"targetPort,omitempty"`
			Path          string              `json:"path,omitempty"`
			Scheme        string              `json:"scheme,omitempty"`
			Interval      string              `json:"interval,omitempty"`
			ScrapeTimeout string              `json:"scrapeTimeout,omitempty"`
			HonorLabels   bool                `json:"honorLabels,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// checker holds the decoded objects and the problems found.
type checker struct {
	requireSecrets bool
	res            Result
	seen           map[string]string // Kind/name → source

	deployments []*appsv1.Deployment
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*serviceMonitor
}

// Check decodes every manifest strictly into its k8s.io/api type through
// client-go's scheme (unknown or duplicate fields, wrong types and unknown
// kinds are faults; the ServiceMonitor CRD is decoded structurally), then
// checks that what the objects name exists: probes' ports, volume mounts'
// volumes, the ConfigMaps and Secrets (and their keys) behind volumes,
// every file keyflow.yaml names (mounted, and projected from its Secret),
// Service selectors and target ports, PodDisruptionBudget and
// ServiceMonitor selectors. With requireSecrets, every Secret must be
// rendered by the chart; else the ones it does not render are listed.
func Check(ms []Manifest, requireSecrets bool) Result {
	c := &checker{requireSecrets: requireSecrets, seen: map[string]string{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	c.res.ExternalSecrets = map[string][]string{}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	for _, m := range ms {
		c.decode(dec, m)
	}
	for _, d := range c.deployments {
		c.checkDeployment(d)
	}
	for _, s := range c.services {
		c.checkService(s)
	}
	for _, p := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			c.addf("PodDisruptionBudget/%s: selector %v: %v", p.Name, p.Spec.Selector, err)
			continue
		}
		if len(c.podsOf(sel)) == 0 {
			c.addf("PodDisruptionBudget/%s: selector %s matches no Deployment's pods", p.Name, sel)
		}
	}
	for _, m := range c.monitors {
		c.checkMonitor(m)
	}
	for k := range c.res.ExternalSecrets {
		slices.Sort(c.res.ExternalSecrets[k])
		c.res.ExternalSecrets[k] = slices.Compact(c.res.ExternalSecrets[k])
	}
	return c.res
}

func (c *checker) addf(format string, args ...any) {
	c.res.Problems = append(c.res.Problems, fmt.Sprintf(format, args...))
}

func (c *checker) decode(dec runtime.Decoder, m Manifest) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(m.Data, &head); err != nil {
		c.addf("%s: not YAML: %v", m.Source, err)
		return
	}
	id := head.Kind + "/" + head.Metadata.Name
	if head.Metadata.Name == "" {
		c.addf("%s (%s): no metadata.name", id, m.Source)
	}
	if prev, dup := c.seen[id]; dup {
		c.addf("%s (%s): rendered twice (also by %s)", id, m.Source, prev)
	}
	c.seen[id] = m.Source
	c.res.Objects = append(c.res.Objects, id)

	if head.APIVersion == "monitoring.coreos.com/v1" && head.Kind == "ServiceMonitor" {
		sm := &serviceMonitor{}
		if err := yaml.UnmarshalStrict(m.Data, sm); err != nil {
			c.addf("%s (%s): %v", id, m.Source, err)
			return
		}
		c.monitors = append(c.monitors, sm)
		return
	}
	obj, _, err := dec.Decode(m.Data, nil, nil)
	if err != nil {
		c.addf("%s (%s): %v", id, m.Source, err)
		if obj == nil || !runtime.IsStrictDecodingError(err) {
			return
		}
		// An unknown or duplicate field: the object decoded otherwise, so
		// its references are still checked (no cascade of false faults).
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		c.deployments = append(c.deployments, o)
	case *corev1.ConfigMap:
		c.configMaps[o.Name] = o
	case *corev1.Secret:
		c.secrets[o.Name] = o
	case *corev1.Service:
		c.services = append(c.services, o)
	case *policyv1.PodDisruptionBudget:
		c.pdbs = append(c.pdbs, o)
	default:
		c.addf("%s (%s): %T is a kind this checker does not know; teach it", id, m.Source, obj)
	}
}

// checkDeployment checks one Deployment's selector, probes, mounts,
// volumes and keyflow configuration.
func (c *checker) checkDeployment(d *appsv1.Deployment) {
	id := "Deployment/" + d.Name
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		c.addf("%s: selector %v does not select its own pod template (labels %v)", id, d.Spec.Selector, d.Spec.Template.Labels)
	}
	pod := d.Spec.Template.Spec
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		if _, dup := vols[v.Name]; dup {
			c.addf("%s: volume %q given twice", id, v.Name)
		}
		vols[v.Name] = v
		c.checkVolume(id, v)
	}
	for _, ct := range pod.Containers {
		cid := fmt.Sprintf("%s container %s", id, ct.Name)
		probes := map[string]*corev1.Probe{"liveness": ct.LivenessProbe, "readiness": ct.ReadinessProbe, "startup": ct.StartupProbe}
		for _, kind := range []string{"liveness", "readiness", "startup"} {
			if p := probes[kind]; p != nil {
				c.checkProbe(cid, kind, p, ct)
			}
		}
		for kind, want := range map[string]string{"liveness": "/healthz", "readiness": "/readyz"} {
			p := probes[kind]
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
				c.addf("%s: the %s probe must be an HTTP GET of %s", cid, kind, want)
			}
		}
		for _, vm := range ct.VolumeMounts {
			if _, ok := vols[vm.Name]; !ok {
				c.addf("%s: volume mount %s names volume %q, which the pod does not have", cid, vm.MountPath, vm.Name)
			}
		}
		c.checkKeyflowConfig(cid, ct, vols)
	}
}

// checkProbe: the probe's port is one of the container's ports.
func (c *checker) checkProbe(cid, kind string, p *corev1.Probe, ct corev1.Container) {
	var port *intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		port = &p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = &p.TCPSocket.Port
	case p.GRPC != nil:
		port = &intstr.IntOrString{IntVal: p.GRPC.Port}
	default:
		return
	}
	if !hasPort(ct, *port) {
		c.addf("%s: the %s probe's port %s is not one of the container's ports %s", cid, kind, port.String(), portList(ct))
	}
}

func hasPort(ct corev1.Container, p intstr.IntOrString) bool {
	return slices.ContainsFunc(ct.Ports, func(cp corev1.ContainerPort) bool {
		if p.Type == intstr.String {
			return cp.Name == p.StrVal
		}
		return cp.ContainerPort == p.IntVal
	})
}

func portList(ct corev1.Container) string {
	var s []string
	for _, p := range ct.Ports {
		s = append(s, fmt.Sprintf("%s=%d", p.Name, p.ContainerPort))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// checkVolume: a ConfigMap or Secret volume names one that exists, with
// the keys its items project.
func (c *checker) checkVolume(id string, v corev1.Volume) {
	keys := func(items []corev1.KeyToPath) []string {
		var k []string
		for _, it := range items {
			k = append(k, it.Key)
		}
		return k
	}
	switch {
	case v.ConfigMap != nil:
		cm, ok := c.configMaps[v.ConfigMap.Name]
		if !ok {
			c.addf("%s: volume %q names ConfigMap %q, which the chart does not render", id, v.Name, v.ConfigMap.Name)
			return
		}
		for _, k := range keys(v.ConfigMap.Items) {
			if _, ok := cm.Data[k]; !ok {
				c.addf("%s: volume %q projects key %q, which ConfigMap %s does not have", id, v.Name, k, cm.Name)
			}
		}
	case v.Secret != nil:
		s, ok := c.secrets[v.Secret.SecretName]
		switch {
		case ok:
			for _, k := range keys(v.Secret.Items) {
				_, inData := s.Data[k]
				_, inString := s.StringData[k]
				if !inData && !inString {
					c.addf("%s: volume %q projects key %q, which Secret %s does not have (it has %s)", id, v.Name, k, s.Name, secretKeys(s))
				}
			}
		case c.requireSecrets:
			c.addf("%s: volume %q names Secret %q, which the chart does not render", id, v.Name, v.Secret.SecretName)
		default:
			c.res.ExternalSecrets[v.Secret.SecretName] = append(c.res.ExternalSecrets[v.Secret.SecretName], keys(v.Secret.Items)...)
		}
	}
}

func secretKeys(s *corev1.Secret) string {
	var k []string
	for key := range s.Data {
		k = append(k, key)
	}
	for key := range s.StringData {
		k = append(k, key)
	}
	slices.Sort(k)
	return "[" + strings.Join(k, " ") + "]"
}

// mounted resolves a file path in the container: the mount it lies under,
// and the key of the ConfigMap or Secret that provides it.
type mounted struct {
	vol       corev1.Volume
	key       string
	projected bool // the volume provides that key
}

func (c *checker) resolve(ct corev1.Container, vols map[string]corev1.Volume, file string) (mounted, bool) {
	best := ""
	var vm corev1.VolumeMount
	for _, m := range ct.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/") + "/"
		if strings.HasPrefix(file, mp) && len(mp) > len(best) {
			best, vm = mp, m
		}
	}
	if best == "" {
		return mounted{}, false
	}
	v, ok := vols[vm.Name]
	if !ok {
		return mounted{}, false
	}
	rel := strings.TrimPrefix(file, best)
	if vm.SubPath != "" {
		rel = path.Join(vm.SubPath, rel)
	}
	var items []corev1.KeyToPath
	switch {
	case v.ConfigMap != nil:
		items = v.ConfigMap.Items
	case v.Secret != nil:
		items = v.Secret.Items
	default:
		return mounted{vol: v, key: rel, projected: true}, true // emptyDir, hostPath...: not checked
	}
	if len(items) == 0 {
		return mounted{vol: v, key: rel, projected: !strings.Contains(rel, "/")}, true
	}
	for _, it := range items {
		if it.Path == rel {
			return mounted{vol: v, key: it.Key, projected: true}, true
		}
	}
	return mounted{vol: v, key: rel}, true
}

// checkKeyflowConfig follows --config to its ConfigMap key and checks that
// every file the keyflow.yaml names is mounted and projected.
func (c *checker) checkKeyflowConfig(cid string, ct corev1.Container, vols map[string]corev1.Volume) {
	args := append(slices.Clone(ct.Command), ct.Args...)
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		c.addf("%s: runs %q without --config FILE", cid, args)
		return
	}
	file := args[i+1]
	m, ok := c.resolve(ct, vols, file)
	if !ok || m.vol.ConfigMap == nil || !m.projected {
		c.addf("%s: --config %s is not a file of a mounted ConfigMap", cid, file)
		return
	}
	cm, ok := c.configMaps[m.vol.ConfigMap.Name]
	if !ok {
		return // reported with the volume
	}
	text, ok := cm.Data[m.key]
	if !ok {
		c.addf("%s: --config %s: ConfigMap %s has no key %q", cid, file, cm.Name, m.key)
		return
	}
	var conf map[string]any
	if err := yaml.Unmarshal([]byte(text), &conf); err != nil {
		c.addf("%s: --config %s (ConfigMap %s) is not YAML: %v", cid, file, cm.Name, err)
		return
	}
	for _, f := range configFiles("", conf) {
		m, ok := c.resolve(ct, vols, f.path)
		switch {
		case !ok:
			c.addf("%s: keyflow.yaml's %s is %s, but no volume is mounted there", cid, f.field, f.path)
		case !m.projected:
			c.addf("%s: keyflow.yaml's %s is %s, but volume %q does not project it", cid, f.field, f.path, m.vol.Name)
		case m.vol.Secret != nil:
			if s, ok := c.secrets[m.vol.Secret.SecretName]; ok {
				if _, has := s.Data[m.key]; !has {
					if _, has := s.StringData[m.key]; !has {
						c.addf("%s: keyflow.yaml's %s is %s, key %q of Secret %s, which it does not have (it has %s)", cid, f.field, f.path, m.key, s.Name, secretKeys(s))
					}
				}
			} else if !c.requireSecrets {
				n := m.vol.Secret.SecretName
				c.res.ExternalSecrets[n] = append(c.res.ExternalSecrets[n], m.key)
			}
		case m.vol.ConfigMap != nil:
			if cm, ok := c.configMaps[m.vol.ConfigMap.Name]; ok {
				if _, has := cm.Data[m.key]; !has {
					c.addf("%s: keyflow.yaml's %s is %s, key %q of ConfigMap %s, which it does not have", cid, f.field, f.path, m.key, cm.Name)
				}
			}
		}
	}
}

type configFile struct{ field, path string }

// configFiles lists the files a keyflow.yaml names: every *_file field
// (deploy/config: secrets are file paths) and nats.role_creds' values.
func configFiles(prefix string, v any) []configFile {
	var out []configFile
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field := strings.TrimPrefix(prefix+"."+k, ".")
		switch val := m[k].(type) {
		case string:
			if (strings.HasSuffix(k, "_file") || strings.HasSuffix(prefix, "role_creds")) && val != "" {
				out = append(out, configFile{field, val})
			}
		case map[string]any:
			out = append(out, configFiles(field, val)...)
		}
	}
	return out
}

// podsOf are the Deployments whose pods sel selects.
func (c *checker) podsOf(sel labels.Selector) []*appsv1.Deployment {
	var ds []*appsv1.Deployment
	for _, d := range c.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			ds = append(ds, d)
		}
	}
	return ds
}

// checkService: the selector selects pods, and every port's target port
// is a port of each selected pod.
func (c *checker) checkService(s *corev1.Service) {
	id := "Service/" + s.Name
	if len(s.Spec.Selector) == 0 {
		c.addf("%s: no selector", id)
		return
	}
	ds := c.podsOf(labels.SelectorFromSet(s.Spec.Selector))
	if len(ds) == 0 {
		c.addf("%s: selector %v matches no Deployment's pods", id, s.Spec.Selector)
	}
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		for _, d := range ds {
			if !slices.ContainsFunc(d.Spec.Template.Spec.Containers, func(ct corev1.Container) bool { return hasPort(ct, target) }) {
				c.addf("%s: port %s targets %s, which Deployment/%s's pods do not expose", id, p.Name, target.String(), d.Name)
			}
		}
	}
}

// checkMonitor: the ServiceMonitor's kind, its selector selects Services,
// and each endpoint's port is a named port of every one of them.
func (c *checker) checkMonitor(m *serviceMonitor) {
	id := "ServiceMonitor/" + m.Metadata.Name
	sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
	if err != nil || sel.Empty() {
		c.addf("%s: selector %v: empty or invalid (%v)", id, m.Spec.Selector, err)
		return
	}
	var svcs []*corev1.Service
	for _, s := range c.services {
		if sel.Matches(labels.Set(s.Labels)) {
			svcs = append(svcs, s)
		}
	}
	if len(svcs) == 0 {
		c.addf("%s: selector %s matches no Service", id, sel)
	}
	if len(m.Spec.Endpoints) == 0 {
		c.addf("%s: no endpoints", id)
	}
	for _, e := range m.Spec.Endpoints {
		if e.Port == "" {
			c.addf("%s: an endpoint without a port name", id)
			continue
		}
		for _, s := range svcs {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				c.addf("%s: endpoint port %q is not a port of Service/%s", id, e.Port, s.Name)
			}
		}
	}
}
