package xks

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/keyflow/keyflow/kms"
)

// Config is the proxy's configuration file (JSON). Each key store is one
// URI path prefix with its own tenant, credentials, policy and keys:
//
//	{
//	  "requestTimeout": "240ms",
//	  "keyStores": [{
//	    "uriPrefix": "/keystores/ks1",
//	    "tenant": "default",
//	    "credentials": [
//	      {"accessKeyId": "…", "secretAccessKey": "…"},
//	      {"accessKeyId": "…", "secretAccessKey": "…"}
//	    ],
//	    "allowedPrincipals": ["arn:aws:iam::111122223333:role/app-*"],
//	    "keys": {"xks-demo": {"keyRef": "alias/xks-demo"}}
//	  }]
//	}
//
// The file holds secrets: keep it mode 0600.
type Config struct {
	KeyStores []KeyStore `json:"keyStores"`
	// RequestTimeout bounds each request's work (default 240ms: AWS KMS
	// gives up after 250ms, so a later answer is wasted). A request that
	// runs out of it is DependencyTimeoutException.
	RequestTimeout Duration `json:"requestTimeout,omitzero"`
	// ClockSkew is the SigV4 timestamp window (default 5m, as AWS uses
	// and as the spec asks).
	ClockSkew Duration `json:"clockSkew,omitzero"`
	// MTLS, when set, makes the listener require a client certificate.
	MTLS *MTLS `json:"mtls,omitempty"`
}

// MTLS configures client-certificate authentication, as the spec's
// Authentication section describes: a CA and the subject common name
// (AWS KMS presents CN=cks.kms.<region>.amazonaws.com).
type MTLS struct {
	ClientCAFile string   `json:"clientCaFile"`
	CommonNames  []string `json:"commonNames"`
}

// KeyStore is one logical XKS key store.
type KeyStore struct {
	// URIPrefix is the optional path prefix before /kms/xks/v1, e.g.
	// "/keystores/ks1" ("" for none). AWS KMS's XksProxyUriPath is
	// URIPrefix + "/kms/xks/v1".
	URIPrefix string `json:"uriPrefix"`
	// Tenant is the keyflow tenant whose keys the store exposes.
	Tenant string `json:"tenant"`
	// Disabled makes every request InvalidStateException (a store taken
	// out of service without removing its configuration).
	Disabled bool `json:"disabled,omitempty"`
	// Credentials are the SigV4 credentials AWS KMS signs with: one or
	// two (two while rotating them).
	Credentials []Credential `json:"credentials"`
	// The store-wide policy; a key may narrow it further.
	kms.XKSPolicy
	// Keys maps each externalKeyId to a keyflow key.
	Keys map[string]Key `json:"keys"`
	// RateLimit, when set, answers ThrottlingException beyond it.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
}

// Credential is one SigV4 credential pair.
type Credential struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

// Key exposes one keyflow key as an external key.
type Key struct {
	KeyRef string `json:"keyRef"`
	// A key's own policy applies on top of the store's.
	kms.XKSPolicy
}

// RateLimit is a token bucket per key store.
type RateLimit struct {
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	Burst             int     `json:"burst"`
}

// Duration is a time.Duration written as "240ms" in JSON.
type Duration time.Duration

// UnmarshalJSON reads "240ms", "5m", ...
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("failed to read a duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("failed to read a duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// The spec's character sets (Appendix A, and the external key ID rules).
var (
	accessKeyIDRE = regexp.MustCompile(`^[A-Z2-7]{20,30}$`)
	secretRE      = regexp.MustCompile(`^[A-Za-z0-9+/=]{43,64}$`)
	externalKeyRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	prefixRE      = regexp.MustCompile(`^(/[A-Za-z0-9_-]+)*$`)
)

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the XKS configuration: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("failed to parse the XKS configuration %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Save writes the configuration with mode 0600 (it holds secrets).
func (c *Config) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the XKS configuration: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("failed to write the XKS configuration: %w", err)
	}
	return nil
}

// normalizePrefix turns "ks1", "/ks1/" and "/ks1" into "/ks1", and "" or
// "/" into "".
func normalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return "/" + p
}

// Validate checks the configuration and normalises the URI prefixes. It
// never puts a secret in an error.
func (c *Config) Validate() error {
	if c.RequestTimeout < 0 || c.ClockSkew < 0 {
		return errors.New("xks: requestTimeout and clockSkew must not be negative")
	}
	if c.MTLS != nil && (c.MTLS.ClientCAFile == "" || len(c.MTLS.CommonNames) == 0) {
		return errors.New("xks: mtls needs clientCaFile and at least one of commonNames")
	}
	seen := map[string]bool{}
	for i := range c.KeyStores {
		ks := &c.KeyStores[i]
		ks.URIPrefix = normalizePrefix(ks.URIPrefix)
		// The whole XksProxyUriPath is at most 128 characters.
		if !prefixRE.MatchString(ks.URIPrefix) || len(ks.URIPrefix+apiPath) > 128 {
			return fmt.Errorf("xks: key store %d: uriPrefix %q must be path segments of A-Za-z0-9_- (XksProxyUriPath at most 128 characters)", i, ks.URIPrefix)
		}
		if seen[ks.URIPrefix] {
			return fmt.Errorf("xks: uriPrefix %q is configured twice", ks.URIPrefix)
		}
		seen[ks.URIPrefix] = true
		if !kms.ValidTenant(ks.Tenant) {
			return fmt.Errorf("xks: key store %q: tenant %q is not a valid tenant name", ks.URIPrefix, ks.Tenant)
		}
		if n := len(ks.Credentials); n < 1 || n > 2 {
			return fmt.Errorf("xks: key store %q: needs one or two credentials (two while rotating), not %d", ks.URIPrefix, n)
		}
		for j, cr := range ks.Credentials {
			if !accessKeyIDRE.MatchString(cr.AccessKeyID) {
				return fmt.Errorf("xks: key store %q: credential %d: accessKeyId must be 20-30 characters of A-Z and 2-7", ks.URIPrefix, j)
			}
			if !secretRE.MatchString(cr.SecretAccessKey) {
				return fmt.Errorf("xks: key store %q: credential %d: secretAccessKey must be 43-64 characters of A-Za-z0-9+/=", ks.URIPrefix, j)
			}
		}
		if len(ks.Credentials) == 2 && ks.Credentials[0].AccessKeyID == ks.Credentials[1].AccessKeyID {
			return fmt.Errorf("xks: key store %q: the two credentials have the same accessKeyId", ks.URIPrefix)
		}
		for id, k := range ks.Keys {
			if !externalKeyRE.MatchString(id) {
				return fmt.Errorf("xks: key store %q: external key ID %q must be 1-128 characters of A-Za-z0-9._-", ks.URIPrefix, id)
			}
			if k.KeyRef == "" {
				return fmt.Errorf("xks: key store %q: external key %q has no keyRef", ks.URIPrefix, id)
			}
		}
		if rl := ks.RateLimit; rl != nil && (rl.RequestsPerSecond <= 0 || rl.Burst < 1) {
			return fmt.Errorf("xks: key store %q: rateLimit needs requestsPerSecond > 0 and burst >= 1", ks.URIPrefix)
		}
	}
	return nil
}

// NewCredential draws a credential pair in the spec's format: a 26-char
// base32 access key ID (A-Z, 2-7) and a 43-char Base64 secret of 256
// random bits (as `openssl rand 32 | base64` would, without padding).
func NewCredential() (Credential, error) {
	id := make([]byte, 16)
	secret := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return Credential{}, fmt.Errorf("failed to draw a credential: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return Credential{}, fmt.Errorf("failed to draw a credential: %w", err)
	}
	akid := strings.TrimRight(base32.StdEncoding.EncodeToString(id), "=")[:26]
	return Credential{AccessKeyID: akid, SecretAccessKey: base64.RawStdEncoding.EncodeToString(secret)}, nil
}
