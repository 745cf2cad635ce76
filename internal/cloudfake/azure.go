package cloudfake

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyflow/keyflow/hsm"
)

// Azure is a fake Key Vault (Managed HSM) over HTTPS, with the REST shapes
// of the key operations the connector uses, bearer-challenge
// authentication (any token is accepted) and x-ms-request-id on every
// answer.
type Azure struct {
	URL    string
	Client *http.Client // trusts the fake's certificate

	mu       sync.Mutex
	kek      *rsa.PrivateKey
	kekID    string
	keys     map[string][]*azVersion // name -> versions, oldest first
	deleted  map[string]*azDeleted   // soft-deleted keys, by name
	material map[string][]byte       // kid -> unwrapped material
	reqs     int
}

// azDeleted is a soft-deleted key: its versions, recoverable until the
// vault's retention ends (the fake never purges).
type azDeleted struct {
	versions []*azVersion
	at       time.Time
}

type azVersion struct {
	KID     string            `json:"kid"`
	Kty     string            `json:"kty"`
	Crv     string            `json:"crv,omitempty"`
	Ops     []string          `json:"key_ops,omitempty"`
	Enabled bool              `json:"-"`
	Tags    map[string]string `json:"-"`
	priv    crypto.Signer     // an imported key pair's private key
}

// StartAzure serves a fake vault until the test ends.
func StartAzure(t testing.TB) *Azure {
	t.Helper()
	a := &Azure{keys: map[string][]*azVersion{}, deleted: map[string]*azDeleted{}, material: map[string][]byte{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(srv.Close)
	a.URL, a.Client = srv.URL, srv.Client()
	return a
}

// Material returns what the fake unwrapped for a version (its kid).
func (a *Azure) Material(kid string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.material[kid]
}

// SetEnabled changes a version behind keyflow's back.
func (a *Azure) SetEnabled(kid string, on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, vs := range a.keys {
		for _, v := range vs {
			if v.KID == kid {
				v.Enabled = on
			}
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func (a *Azure) bundle(v *azVersion) map[string]any {
	key := map[string]any{"kid": v.KID, "kty": v.Kty, "key_ops": v.Ops}
	pub := crypto.PublicKey(nil)
	if v.priv != nil {
		pub = v.priv.Public()
	} else if v.KID == a.kekID {
		pub = &a.kek.PublicKey
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		key["n"], key["e"] = b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		raw, _ := pub.Bytes() // 0x04 || X || Y
		n := (len(raw) - 1) / 2
		key["crv"], key["x"], key["y"] = v.Crv, b64(raw[1:1+n]), b64(raw[1+n:])
	}
	return map[string]any{"key": key, "attributes": map[string]any{"enabled": v.Enabled}, "tags": v.Tags}
}

func (a *Azure) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs++
	w.Header().Set("x-ms-request-id", fmt.Sprintf("az-req-%d", a.reqs))
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://managedhsm.azure.net"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	fail := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	}
	ok := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) >= 2 && parts[0] == "deletedkeys" {
		a.serveDeleted(r, parts, fail, ok)
		return
	}
	if len(parts) < 2 || parts[0] != "keys" {
		fail(http.StatusNotFound, "NotFound", "no such path")
		return
	}
	name := parts[1]
	vs := a.keys[name]
	find := func(version string) *azVersion {
		if version == "" && len(vs) > 0 {
			return vs[len(vs)-1]
		}
		for _, v := range vs {
			if strings.HasSuffix(v.KID, "/"+version) {
				return v
			}
		}
		return nil
	}
	sub := ""
	if len(parts) > 2 {
		sub = parts[2]
	}
	switch {
	case r.Method == http.MethodGet && sub == "versions":
		if len(vs) == 0 {
			fail(http.StatusNotFound, "KeyNotFound", "no key "+name)
			return
		}
		var out []map[string]any
		for _, v := range vs {
			out = append(out, map[string]any{"kid": v.KID, "attributes": map[string]any{"enabled": v.Enabled}, "tags": v.Tags})
		}
		ok(map[string]any{"value": out, "nextLink": nil})
	case r.Method == http.MethodGet:
		v := find(sub)
		if v == nil {
			fail(http.StatusNotFound, "KeyNotFound", "no key "+name)
			return
		}
		ok(a.bundle(v))
	case r.Method == http.MethodPost && sub == "create":
		var req struct {
			Kty    string   `json:"kty"`
			KeyOps []string `json:"key_ops"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Kty != "RSA-HSM" || len(req.KeyOps) != 1 || req.KeyOps[0] != "import" || name != "keyflow-kek" {
			fail(http.StatusBadRequest, "BadParameter", "the fake creates only the key-exchange key (RSA-HSM, key_ops [import])")
			return
		}
		priv, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			fail(http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		a.kek = priv
		v := &azVersion{KID: fmt.Sprintf("https://%s/keys/%s/%032x", r.Host, name, a.reqs), Kty: "RSA-HSM", Ops: []string{"import"}, Enabled: true}
		a.kekID = v.KID
		a.keys[name] = append(a.keys[name], v)
		ok(a.bundle(v))
	case r.Method == http.MethodPut && sub == "" && a.deleted[name] != nil:
		fail(http.StatusConflict, "Conflict", "Key "+name+" is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.")
	case r.Method == http.MethodPut && sub == "":
		var req struct {
			Key struct {
				Kty    string   `json:"kty"`
				Crv    string   `json:"crv"`
				Ops    []string `json:"key_ops"`
				KeyHSM string   `json:"key_hsm"`
			} `json:"key"`
			HSM  bool              `json:"hsm"`
			Tags map[string]string `json:"tags"`
		}
		err := json.NewDecoder(r.Body).Decode(&req)
		want := map[string]string{"oct-HSM": "AES-256", "RSA-HSM": "RSA", "EC-HSM": req.Key.Crv}[req.Key.Kty]
		if err != nil || want == "" || !req.HSM || (req.Key.Kty == "EC-HSM") != (req.Key.Crv != "") {
			fail(http.StatusBadRequest, "BadParameter", "the fake imports oct-HSM, RSA-HSM and EC-HSM (with crv) keys with hsm=true")
			return
		}
		raw, err := unb64(req.Key.KeyHSM)
		var blob struct {
			SchemaVersion string `json:"schema_version"`
			Header        struct{ KID, Alg, Enc string }
			Ciphertext    string `json:"ciphertext"`
		}
		if err == nil {
			err = json.Unmarshal(raw, &blob)
		}
		if err != nil || blob.SchemaVersion != "1.0.0" || blob.Header.KID != a.kekID || blob.Header.Alg != "dir" || blob.Header.Enc != "CKM_RSA_AES_KEY_WRAP" {
			fail(http.StatusBadRequest, "BadParameter", "not a key-transfer blob for this vault's key-exchange key")
			return
		}
		ct, err := unb64(blob.Ciphertext)
		var material []byte
		if err == nil {
			material, err = UnwrapRSAAES(a.kek, crypto.SHA1, ct)
		}
		var priv crypto.Signer
		if err == nil && want == "RSA" {
			// Key Vault takes RSA 2048, 3072 and 4096.
			err = CheckMaterial(material, "RSA-3072")
			if err != nil {
				err = CheckMaterial(material, "RSA-4096")
			}
		} else if err == nil {
			err = CheckMaterial(material, want)
		}
		if err == nil && want != "AES-256" {
			k, _ := x509.ParsePKCS8PrivateKey(material)
			priv = k.(crypto.Signer)
		}
		if err != nil {
			fail(http.StatusBadRequest, "BadParameter", "the transfer blob does not unwrap to a "+req.Key.Kty+" key")
			return
		}
		v := &azVersion{KID: fmt.Sprintf("https://%s/keys/%s/%032x", r.Host, name, a.reqs), Kty: req.Key.Kty, Crv: req.Key.Crv, Ops: req.Key.Ops, Enabled: true, Tags: req.Tags, priv: priv}
		a.keys[name] = append(a.keys[name], v)
		a.material[v.KID] = material
		ok(a.bundle(v))
	case r.Method == http.MethodPost && len(parts) == 4 && (parts[3] == "sign" || parts[3] == "decrypt"):
		a.operate(w, r, find(sub), parts[3], fail, ok)
	case r.Method == http.MethodPatch:
		v := find(sub)
		if v == nil || sub == "" {
			fail(http.StatusNotFound, "KeyNotFound", "no key version "+name+"/"+sub)
			return
		}
		var req struct {
			Attributes struct {
				Enabled *bool `json:"enabled"`
			} `json:"attributes"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Attributes.Enabled != nil {
			v.Enabled = *req.Attributes.Enabled
		}
		ok(a.bundle(v))
	case r.Method == http.MethodDelete && sub == "":
		if len(vs) == 0 {
			fail(http.StatusNotFound, "KeyNotFound", "no key "+name)
			return
		}
		delete(a.keys, name)
		a.deleted[name] = &azDeleted{versions: vs, at: time.Now()}
		ok(a.deletedBundle(r.Host, name))
	default:
		fail(http.StatusBadRequest, "BadParameter", "the fake does not serve "+r.Method+" "+r.URL.Path)
	}
}

// deletedBundle is a soft-deleted key's DeletedKeyBundle: its current
// version, with the recovery ID and dates (Unix seconds) Key Vault gives.
func (a *Azure) deletedBundle(host, name string) map[string]any {
	d := a.deleted[name]
	b := a.bundle(d.versions[len(d.versions)-1])
	b["recoveryId"] = "https://" + host + "/deletedkeys/" + name
	b["deletedDate"] = d.at.Unix()
	b["scheduledPurgeDate"] = d.at.Add(90 * 24 * time.Hour).Unix()
	return b
}

// serveDeleted answers GET deletedkeys/{name} and POST
// deletedkeys/{name}/recover, which brings every version back as it was
// (enabled or not), as Key Vault's soft-delete does.
func (a *Azure) serveDeleted(r *http.Request, parts []string, fail func(int, string, string), ok func(any)) {
	name := parts[1]
	if a.deleted[name] == nil {
		fail(http.StatusNotFound, "KeyNotFound", "no deleted key "+name)
		return
	}
	switch {
	case r.Method == http.MethodGet && len(parts) == 2:
		ok(a.deletedBundle(r.Host, name))
	case r.Method == http.MethodPost && len(parts) == 3 && parts[2] == "recover":
		if len(a.keys[name]) > 0 {
			fail(http.StatusConflict, "Conflict", "a key "+name+" exists")
			return
		}
		vs := a.deleted[name].versions
		delete(a.deleted, name)
		a.keys[name] = vs
		ok(a.bundle(vs[len(vs)-1]))
	default:
		fail(http.StatusBadRequest, "BadParameter", "the fake does not serve "+r.Method+" "+r.URL.Path)
	}
}

// Deleted reports whether a key is soft-deleted (recoverable).
func (a *Azure) Deleted(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.deleted[name] != nil
}

// operate signs a digest (RS256, ES256, ES384; ECDSA as r||s, as Key
// Vault answers) or decrypts RSA-OAEP-256 with an imported key pair.
func (a *Azure) operate(w http.ResponseWriter, r *http.Request, v *azVersion, op string, fail func(int, string, string), ok func(any)) {
	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	in, err := []byte(nil), json.NewDecoder(r.Body).Decode(&req)
	if err == nil {
		in, err = unb64(req.Value)
	}
	switch {
	case err != nil:
		fail(http.StatusBadRequest, "BadParameter", "bad request")
		return
	case v == nil || v.priv == nil:
		fail(http.StatusNotFound, "KeyNotFound", "no key pair")
		return
	case !v.Enabled:
		fail(http.StatusForbidden, "Forbidden", "Operation "+op+" is not allowed on a disabled key.")
		return
	case !slices.Contains(v.Ops, op):
		fail(http.StatusForbidden, "Forbidden", "Operation "+op+" is not permitted on this key.")
		return
	}
	var out []byte
	switch {
	case op == "decrypt" && req.Alg == "RSA-OAEP-256":
		rk, isRSA := v.priv.(*rsa.PrivateKey)
		if isRSA {
			out, err = rsa.DecryptOAEP(crypto.SHA256.New(), nil, rk, in, nil)
		}
		if !isRSA || err != nil {
			fail(http.StatusBadRequest, "BadParameter", "decryption failed")
			return
		}
	case op == "sign" && (req.Alg == "RS256" || req.Alg == "ES256" || req.Alg == "ES384"):
		h := crypto.SHA256
		if req.Alg == "ES384" {
			h = crypto.SHA384
		}
		if len(in) != h.Size() {
			fail(http.StatusBadRequest, "BadParameter", "the digest is not "+req.Alg+"'s")
			return
		}
		if out, err = v.priv.Sign(rand.Reader, in, h); err == nil && req.Alg != "RS256" {
			out, err = hsm.ECDSASigFromDER(out, h.Size()) // scalar size = digest size for ES256/ES384
		}
		if err != nil {
			fail(http.StatusBadRequest, "BadParameter", err.Error())
			return
		}
	default:
		fail(http.StatusBadRequest, "BadParameter", "the fake does not "+op+" with "+req.Alg)
		return
	}
	ok(map[string]any{"kid": v.KID, "value": b64(out)})
}
