// Package config is the configuration of `keyflow serve`: one YAML file,
// overridden field by field by KEYFLOW_* environment variables, checked
// as a whole before anything starts.
//
// Start with [Example] (what `keyflow config example` prints): every field,
// commented. [Load] reads a file strictly (an unknown or misspelt field is
// an error, not a silent default), applies the environment, and
// [Config.Problems] lists every problem at once, one message per problem,
// so an operator fixes a file in one pass (`keyflow config check FILE`).
//
// Rules:
//   - Secrets (the HSM PIN, NATS creds, TLS private keys, Temporal client
//     keys and API key) are named by file path only, in fields ending in
//     _file: never inline, never as flags, never in the environment's value
//     (a KEYFLOW_* variable may only point at a file).
//   - The environment overrides a field by its path in upper case, joined
//     by underscores: nats.urls is KEYFLOW_NATS_URLS (comma-separated for
//     lists), hsm.pin_file is KEYFLOW_HSM_PIN_FILE.
//   - The package only reads and checks; deploy/roles connects.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyflow/keyflow/kms"
)

// Config is the whole file.
type Config struct {
	// Roles this process runs (crypto, admin, lifecycle, sealer,
	// remediation, gateway); `keyflow serve --roles` overrides it.
	Roles    []string `yaml:"roles"`
	Log      Log      `yaml:"log"`
	NATS     NATS     `yaml:"nats"`
	Temporal Temporal `yaml:"temporal"`
	HSM      HSM      `yaml:"hsm"`
	Audit    Audit    `yaml:"audit"`
	Services Services `yaml:"services"`
	Gateway  Gateway  `yaml:"gateway"`
	Ops      Ops      `yaml:"ops"`
	Tracing  Tracing  `yaml:"tracing"`
	Region   Region   `yaml:"region"`
}

// Region makes the deployment one region of a multi-region keyflow
// (docs/multi-region.md). The link between regions is not keyflow's: it is
// a leaf-node connection in the nats-server configuration (`keyflow region
// nats-config` writes that part).
type Region struct {
	// Name is this deployment's region, e.g. eu-west: the name other
	// regions replicate keys to, and the JetStream domain its nats-servers
	// must have (jetstream { domain: eu-west }), which keyflow serve
	// checks at start. Empty: a single-region deployment.
	Name string `yaml:"name"`
	// ReplicaSwitchTimeout bounds how long a rotation of a multi-region
	// key whose primary is here waits for its replicas before the new
	// version becomes primary anyway (the lagging regions are recorded;
	// 0: 5 minutes, workflows.DefaultReplicaSwitchTimeout).
	ReplicaSwitchTimeout time.Duration `yaml:"replica_switch_timeout"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error (default info)
	Format string `yaml:"format"` // text or json (default text)
}

// TLS is a client's TLS: the CA that signs the server's certificate, and
// the client's own certificate for mutual TLS.
type TLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// Enabled reports whether any TLS setting is given.
func (t TLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// NATS is the connection to a NATS (JetStream) server or cluster.
type NATS struct {
	URLs []string `yaml:"urls"`
	// CredsFile is the default creds of every role; RoleCreds gives a
	// role its own (least privilege).
	CredsFile string            `yaml:"creds_file"`
	RoleCreds map[string]string `yaml:"role_creds"`
	TLS       TLS               `yaml:"tls"`
	// Domain is the JetStream domain (leaf-node deployments).
	Domain string `yaml:"jetstream_domain"`
	// Replicas of every stream and KV bucket keyflow creates: 1 for a
	// single server, 3 for a cluster.
	Replicas int `yaml:"replicas"`
	// IdentityFile holds keyflow's NATS account signing keys and the
	// tenants (accounts) and principals (users); the crypto and admin
	// roles need it.
	IdentityFile string `yaml:"identity_file"`
}

// Temporal is the connection to a Temporal frontend.
type Temporal struct {
	Address    string `yaml:"address"`
	Namespace  string `yaml:"namespace"`
	TLS        TLS    `yaml:"tls"`
	APIKeyFile string `yaml:"api_key_file"`
}

// HSM is the PKCS#11 token that holds the root key.
type HSM struct {
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	PINFile    string `yaml:"pin_file"`
	Sessions   int    `yaml:"sessions"`
}

// Audit is the audit stream's policy.
type Audit struct {
	FailOpen bool          `yaml:"fail_open"`
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
	MaxMsgs  int64         `yaml:"max_msgs"`
}

// Services tunes the NATS services of the crypto and admin roles.
type Services struct {
	Workers int `yaml:"workers"`
	// CursorKeyFile seals audit tail cursors (32 random bytes); every
	// process serving admin requests must have the same, or a cursor
	// works only on the process that issued it.
	CursorKeyFile string `yaml:"cursor_key_file"`
}

// Gateway is the HTTP front.
type Gateway struct {
	XKS XKS `yaml:"xks"`
}

// XKS is the gateway's AWS KMS External Key Store proxy.
type XKS struct {
	Listen     string `yaml:"listen"`
	ConfigFile string `yaml:"config_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
}

// Ops is the operations endpoint: /healthz, /readyz and /metrics.
type Ops struct {
	Listen string `yaml:"listen"`
	// SealerMaxLag is the most audit records left unsealed while the
	// sealer role reports ready (0: deploy/roles' default, 100000).
	SealerMaxLag int64 `yaml:"sealer_max_lag"`
}

// Tracing configures OpenTelemetry traces (off by default): where spans
// go and which share of the traces started here is kept.
type Tracing struct {
	// Exporter is "" (off), otlp (OTLP over gRPC), otlp-http, or stdout
	// (one JSON span a line, for a look).
	Exporter string `yaml:"exporter"`
	// Endpoint is the collector's host:port (otlp: default
	// 127.0.0.1:4317; otlp-http: 127.0.0.1:4318).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends OTLP without TLS (a collector on the same host or pod).
	Insecure bool `yaml:"insecure"`
	// CAFile verifies the collector's certificate (default: the system's).
	CAFile string `yaml:"ca_file"`
	// SampleRatio is the share of the traces started in this process that
	// are kept, 0 to 1 (default 1); a request that arrives with a sampled
	// traceparent is always traced (parent-based).
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource (default keyflow).
	ServiceName string `yaml:"service_name"`
}

// Enabled reports whether traces are exported.
func (t Tracing) Enabled() bool { return t.Exporter != "" }

// Defaults.
const (
	DefaultNamespace = "keyflow"
	DefaultOpsListen = "127.0.0.1:9090"
)

// knownRoles are the role names (deploy/roles owns their meaning).
var knownRoles = []string{"crypto", "admin", "lifecycle", "sealer", "remediation", "gateway"}

//go:embed example.yaml
var example string

// Example is a commented configuration file with every field.
func Example() string { return example }

// EnvPrefix starts every environment override.
const EnvPrefix = "KEYFLOW_"

// Load reads the file at path strictly and applies the KEYFLOW_*
// environment. It reports decoding errors only; call Problems for the
// rest.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the configuration: %w", err)
	}
	return Parse(b, os.LookupEnv)
}

// Parse decodes YAML strictly (unknown fields are errors) and applies the
// environment given by lookup (nil: none).
func Parse(b []byte, lookup func(string) (string, bool)) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("failed to decode the configuration: %w", err)
	}
	if lookup != nil {
		if err := applyEnv(reflect.ValueOf(c).Elem(), EnvPrefix, lookup); err != nil {
			return nil, err
		}
	}
	c.defaults()
	return c, nil
}

// An empty file decodes to the defaults (io.EOF).
func (c *Config) defaults() {
	if c.Temporal.Namespace == "" {
		c.Temporal.Namespace = DefaultNamespace
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	if c.Ops.Listen == "" {
		c.Ops.Listen = DefaultOpsListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// applyEnv overrides each field from KEYFLOW_<PATH>; maps are not
// overridable (role_creds lives in the file).
func applyEnv(v reflect.Value, prefix string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := prefix + strings.ToUpper(strings.Split(f.Tag.Get("yaml"), ",")[0])
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, name+"_", lookup); err != nil {
				return err
			}
			continue
		}
		s, ok := lookup(name)
		if !ok {
			continue
		}
		if err := setFromEnv(fv, s); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

func setFromEnv(fv reflect.Value, s string) error {
	switch {
	case fv.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration: %q", s)
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(s)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean: %q", s)
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Int || fv.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		fv.SetInt(n)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var list []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		fv.Set(reflect.ValueOf(list))
	default:
		return errors.New("cannot be set from the environment")
	}
	return nil
}

// Problems checks the configuration for the roles it runs and returns one
// message per problem (nil when it is fine). Files it names must exist.
func (c *Config) Problems() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	file := func(field, path string) {
		if path == "" {
			return
		}
		st, err := os.Stat(path)
		switch {
		case err != nil:
			add("%s: %s: %v", field, path, errors.Unwrap(err))
		case st.IsDir():
			add("%s: %s is a directory", field, path)
		}
	}
	required := func(field, v, why string) {
		if v == "" {
			add("%s is required %s", field, why)
		}
	}
	tls := func(field string, t TLS) {
		file(field+".ca_file", t.CAFile)
		file(field+".cert_file", t.CertFile)
		file(field+".key_file", t.KeyFile)
		if (t.CertFile == "") != (t.KeyFile == "") {
			add("%s: cert_file and key_file go together (mutual TLS)", field)
		}
	}

	has := func(r string) bool { return slices.Contains(c.Roles, r) }
	if len(c.Roles) == 0 {
		add("roles: none given (choose from %s)", strings.Join(knownRoles, ", "))
	}
	for i, r := range c.Roles {
		if !slices.Contains(knownRoles, r) {
			add("roles: unknown role %q (roles: %s)", r, strings.Join(knownRoles, ", "))
		} else if slices.Index(c.Roles, r) != i {
			add("roles: %q given twice", r)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		add("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		add("log.format: %q is not text or json", c.Log.Format)
	}

	if len(c.NATS.URLs) == 0 {
		add("nats.urls: at least one URL is required")
	}
	for _, u := range c.NATS.URLs {
		if !strings.Contains(u, "://") {
			add("nats.urls: %q is not a URL (nats://host:4222, tls://host:4222)", u)
		}
	}
	file("nats.creds_file", c.NATS.CredsFile)
	for _, r := range slices.Sorted(maps.Keys(c.NATS.RoleCreds)) {
		if !slices.Contains(knownRoles, r) {
			add("nats.role_creds: unknown role %q", r)
		}
		file("nats.role_creds."+r, c.NATS.RoleCreds[r])
	}
	tls("nats.tls", c.NATS.TLS)
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		add("nats.replicas: %d is not 1 to 5 (1 for one server, 3 for a cluster)", c.NATS.Replicas)
	}
	if has("crypto") || has("admin") {
		required("nats.identity_file", c.NATS.IdentityFile, "by the crypto and admin roles (tenants and principals)")
	}
	file("nats.identity_file", c.NATS.IdentityFile)

	if has("admin") || has("lifecycle") || has("remediation") {
		required("temporal.address", c.Temporal.Address, "by the admin, lifecycle and remediation roles")
	}
	tls("temporal.tls", c.Temporal.TLS)
	file("temporal.api_key_file", c.Temporal.APIKeyFile)

	if slices.ContainsFunc(c.Roles, func(r string) bool { return r != "remediation" }) {
		required("hsm.token_label", c.HSM.TokenLabel, "(every role but remediation holds the root key)")
		required("hsm.pin_file", c.HSM.PINFile, "(every role but remediation logs in to the HSM)")
	}
	if len(c.HSM.TokenLabel) > 32 {
		add("hsm.token_label: longer than 32 bytes")
	}
	file("hsm.module", c.HSM.Module)
	file("hsm.pin_file", c.HSM.PINFile)
	if c.HSM.Sessions < 0 {
		add("hsm.sessions: must not be negative")
	}

	if c.Audit.MaxAge < 0 || c.Audit.MaxBytes < 0 || c.Audit.MaxMsgs < 0 {
		add("audit: max_age, max_bytes and max_msgs must not be negative")
	}
	if c.Ops.SealerMaxLag < 0 {
		add("ops.sealer_max_lag: must not be negative")
	}
	if t := c.Tracing; t.Exporter != "" {
		if !slices.Contains([]string{"otlp", "otlp-http", "stdout"}, t.Exporter) {
			add("tracing.exporter: %q is not otlp, otlp-http or stdout (empty: no tracing)", t.Exporter)
		}
		if r := t.SampleRatio; r != nil && (*r < 0 || *r > 1) {
			add("tracing.sample_ratio: %v is not between 0 and 1", *r)
		}
		file("tracing.ca_file", t.CAFile)
	}
	if c.Services.Workers < 0 {
		add("services.workers: must not be negative")
	}
	file("services.cursor_key_file", c.Services.CursorKeyFile)
	if has("gateway") {
		x := c.Gateway.XKS
		if x.Listen == "" {
			add("gateway.xks.listen: the gateway role has nothing to serve without it")
		} else {
			required("gateway.xks.config_file", x.ConfigFile, "with gateway.xks.listen")
			required("gateway.xks.cert_file", x.CertFile, "with gateway.xks.listen (HTTPS)")
			required("gateway.xks.key_file", x.KeyFile, "with gateway.xks.listen (HTTPS)")
		}
	}
	file("gateway.xks.config_file", c.Gateway.XKS.ConfigFile)
	file("gateway.xks.cert_file", c.Gateway.XKS.CertFile)
	file("gateway.xks.key_file", c.Gateway.XKS.KeyFile)
	if c.Region.ReplicaSwitchTimeout < 0 {
		add("region.replica_switch_timeout must not be negative (0: the default, 5m)")
	}
	if r := c.Region.Name; r != "" {
		if !kms.ValidRegion(r) {
			add("region.name: %q is not a region name (lower-case letters, digits and '-', 1 to 63 characters, e.g. eu-west)", r)
		} else if d := c.NATS.Domain; d != "" && d != r {
			add("nats.jetstream_domain: %q differs from region.name %q: a region's JetStream domain is its name (leave jetstream_domain empty)", d, r)
		}
	}
	return p
}

// Err is Problems as one error (nil when there are none), one problem a
// line.
func (c *Config) Err() error {
	p := c.Problems()
	if len(p) == 0 {
		return nil
	}
	return &ProblemsError{Problems: p}
}

// ProblemsError lists every problem of a configuration.
type ProblemsError struct{ Problems []string }

func (e *ProblemsError) Error() string {
	return fmt.Sprintf("invalid configuration (%d problems):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// ReadSecret reads a secret file (a PIN, an API key), trimming the
// surrounding white space. Its content never appears in an error.
func ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("failed to read the secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("the secret file %s is empty", path)
	}
	return s, nil
}
