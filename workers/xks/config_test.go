package xks_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyflow/keyflow/workers/xks"
)

// TestConfigValidate refuses configurations AWS KMS could not use or that
// would be ambiguous, without ever quoting a secret.
func TestConfigValidate(t *testing.T) {
	good := func() *xks.Config {
		return &xks.Config{KeyStores: []xks.KeyStore{{
			URIPrefix: "ks1/", Tenant: "alpha",
			Credentials: []xks.Credential{newCred(t), newCred(t)},
			Keys:        map[string]xks.Key{"k.1_a-b": {KeyRef: "alias/a"}},
		}}}
	}
	c := good()
	if err := c.Validate(); err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	if c.KeyStores[0].URIPrefix != "/ks1" {
		t.Errorf("uriPrefix normalised to %q, want /ks1", c.KeyStores[0].URIPrefix)
	}
	secret := c.KeyStores[0].Credentials[0].SecretAccessKey
	for name, edit := range map[string]func(*xks.Config){
		"three credentials":       func(c *xks.Config) { c.KeyStores[0].Credentials = append(c.KeyStores[0].Credentials, newCred(t)) },
		"no credentials":          func(c *xks.Config) { c.KeyStores[0].Credentials = nil },
		"access key ID lowercase": func(c *xks.Config) { c.KeyStores[0].Credentials[0].AccessKeyID = "abcdefghijklmnopqrstuv" },
		"access key ID too short": func(c *xks.Config) { c.KeyStores[0].Credentials[0].AccessKeyID = "ABCDEFG" },
		"secret too short":        func(c *xks.Config) { c.KeyStores[0].Credentials[0].SecretAccessKey = "c2hvcnQ=" },
		"secret bad characters":   func(c *xks.Config) { c.KeyStores[0].Credentials[0].SecretAccessKey = strings.Repeat("-", 43) },
		"same access key twice": func(c *xks.Config) {
			c.KeyStores[0].Credentials[1].AccessKeyID = c.KeyStores[0].Credentials[0].AccessKeyID
		},
		"bad tenant":          func(c *xks.Config) { c.KeyStores[0].Tenant = "Alpha!" },
		"bad prefix":          func(c *xks.Config) { c.KeyStores[0].URIPrefix = "/ks 1" },
		"prefix too long":     func(c *xks.Config) { c.KeyStores[0].URIPrefix = "/" + strings.Repeat("a", 120) },
		"prefix twice":        func(c *xks.Config) { c.KeyStores = append(c.KeyStores, c.KeyStores[0]) },
		"bad external key ID": func(c *xks.Config) { c.KeyStores[0].Keys["a/b"] = xks.Key{KeyRef: "x"} },
		"no keyRef":           func(c *xks.Config) { c.KeyStores[0].Keys["k2"] = xks.Key{} },
		"bad rate limit":      func(c *xks.Config) { c.KeyStores[0].RateLimit = &xks.RateLimit{RequestsPerSecond: 0, Burst: 1} },
		"mtls without names":  func(c *xks.Config) { c.MTLS = &xks.MTLS{ClientCAFile: "ca.pem"} },
	} {
		c := good()
		c.KeyStores[0].Credentials[0].SecretAccessKey = secret
		edit(c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error quotes the secret", name)
		}
	}
}

// TestConfigSaveLoad: Save writes 0600 and LoadConfig reads it back.
func TestConfigSaveLoad(t *testing.T) {
	c := &xks.Config{RequestTimeout: xks.Duration(200e6), KeyStores: []xks.KeyStore{{
		URIPrefix: "/ks1", Tenant: "alpha", Credentials: []xks.Credential{newCred(t)},
		Keys: map[string]xks.Key{"k": {KeyRef: "alias/a"}},
	}}}
	c.KeyStores[0].AllowedPrincipals = []string{"arn:aws:iam::111122223333:role/*"}
	path := filepath.Join(t.TempDir(), "xks.json")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	got, err := xks.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.RequestTimeout != c.RequestTimeout || got.KeyStores[0].Credentials[0] != c.KeyStores[0].Credentials[0] ||
		got.KeyStores[0].AllowedPrincipals[0] != c.KeyStores[0].AllowedPrincipals[0] || got.KeyStores[0].Keys["k"].KeyRef != "alias/a" {
		t.Fatalf("round trip: %+v", got)
	}
}
