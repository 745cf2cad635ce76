package xks

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/sigv4"
)

const (
	apiPath = "/kms/xks/v1"
	// maxBody bounds a request body: the spec's largest request (4300
	// bytes of plaintext and 8192 of AAD in Base64, plus seven metadata
	// fields of up to 2048 characters) is about 31 KiB.
	maxBody               = 64 << 10
	defaultRequestTimeout = 240 * time.Millisecond
)

// pathRE is every path the router looks at further: anything else cannot
// name a key store or an external key.
var pathRE = regexp.MustCompile(`^[A-Za-z0-9/._-]*$`)

// Options wires a Server.
type Options struct {
	KMS    *kms.Service
	Config *Config
	Logger *slog.Logger
	// Now is the clock of the SigV4 timestamp window and of the rate
	// limits; tests set it. Default time.Now.
	Now func() time.Time
	// Model describes the HSM in GetHealthStatus (ekmFleetDetails.model).
	Model string
}

// Server is the XKS proxy: an http.Handler, and optionally its own HTTPS
// listener (Listen).
type Server struct {
	kms   *kms.Service
	log   *slog.Logger
	now   func() time.Time
	model string
	state atomic.Pointer[state]

	mu   sync.Mutex
	http *http.Server
}

type state struct {
	cfg     *Config
	sig     *sigv4.Verifier
	stores  map[string]*store
	timeout time.Duration
}

type store struct {
	*KeyStore
	secrets map[string][]byte
	bucket  *bucket
}

// New returns a Server for the configuration.
func New(o Options) (*Server, error) {
	if o.KMS == nil || o.Config == nil {
		return nil, errors.New("xks: KMS and Config are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Model == "" {
		o.Model = "keyflow over PKCS#11"
	}
	s := &Server{kms: o.KMS, log: o.Logger, now: o.Now, model: o.Model}
	if err := s.SetConfig(o.Config); err != nil {
		return nil, err
	}
	return s, nil
}

// SetConfig swaps the configuration in without stopping the server, so
// credentials rotate as the spec asks: add the new pair, update AWS KMS
// (UpdateCustomKeyStore), then remove the old pair. Requests in flight
// finish under the configuration they started with.
func (s *Server) SetConfig(c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	st := &state{cfg: c, stores: map[string]*store{}, timeout: time.Duration(c.RequestTimeout),
		sig: &sigv4.Verifier{Service: "kms-xks-proxy", Window: time.Duration(c.ClockSkew)}}
	if st.timeout == 0 {
		st.timeout = defaultRequestTimeout
	}
	for i := range c.KeyStores {
		ks := &c.KeyStores[i]
		sto := &store{KeyStore: ks, secrets: map[string][]byte{}}
		for _, cr := range ks.Credentials {
			sto.secrets[cr.AccessKeyID] = []byte(cr.SecretAccessKey)
		}
		if ks.RateLimit != nil {
			sto.bucket = newBucket(ks.RateLimit.RequestsPerSecond, ks.RateLimit.Burst, s.now())
		}
		st.stores[ks.URIPrefix] = sto
	}
	s.state.Store(st)
	return nil
}

// xksError is an error as the spec's table names it.
type xksError struct {
	status int
	name   string
}

// errorFor maps a keyflow error to the spec's error table.
func errorFor(err error) xksError {
	if errors.Is(err, context.DeadlineExceeded) {
		return xksError{http.StatusServiceUnavailable, "DependencyTimeoutException"}
	}
	switch kms.CodeOf(err) {
	case kms.CodeValidation:
		return xksError{http.StatusBadRequest, "ValidationException"}
	case kms.CodeInvalidState, kms.CodeDisabled:
		return xksError{http.StatusBadRequest, "InvalidStateException"}
	case kms.CodeInvalidCiphertext:
		return xksError{http.StatusBadRequest, "InvalidCiphertextException"}
	case kms.CodeInvalidKeyUsage:
		return xksError{http.StatusBadRequest, "InvalidKeyUsageException"}
	case kms.CodeXKSAuthenticationFailed:
		return xksError{http.StatusUnauthorized, "AuthenticationFailedException"}
	case kms.CodeAccessDenied:
		return xksError{http.StatusForbidden, "AccessDeniedException"}
	case kms.CodeNotFound:
		return xksError{http.StatusNotFound, "KeyNotFoundException"}
	case kms.CodeXKSInvalidURIPath:
		return xksError{http.StatusNotFound, "InvalidUriPathException"}
	case kms.CodeThrottling:
		return xksError{http.StatusTooManyRequests, "ThrottlingException"}
	case kms.CodeUnsupportedOperation:
		return xksError{http.StatusNotImplemented, "UnsupportedOperationException"}
	case kms.CodeDependencyTimeout:
		return xksError{http.StatusServiceUnavailable, "DependencyTimeoutException"}
	default:
		return xksError{http.StatusInternalServerError, "InternalException"}
	}
}

// errorMessage is the spec's optional errorMessage: printable ASCII,
// fewer than 512 characters.
func errorMessage(err error) string {
	msg := kms.PublicMessage(err)
	b := make([]byte, 0, len(msg))
	for i := 0; i < len(msg) && len(b) < 500; i++ {
		if c := msg[i]; c >= 0x20 && c <= 0x7e {
			b = append(b, c)
		}
	}
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	e := errorFor(err)
	writeJSON(w, e.status, map[string]string{"errorName": e.name, "errorMessage": errorMessage(err)})
}

func kmsError(code kms.Code, msg string) error { return &kms.Error{Code: code, Message: msg} }

// route splits /<prefix>/kms/xks/v1/<rest> into the prefix, the operation
// and the external key ID. ok is false when the path is not an XKS API
// path at all.
func route(path string) (prefix, op, keyID string, ok bool) {
	i := strings.LastIndex(path, apiPath+"/")
	if i < 0 {
		return "", "", "", false
	}
	prefix, rest := path[:i], path[i+len(apiPath)+1:]
	if rest == "health" {
		return prefix, "health", "", true
	}
	f := strings.Split(rest, "/")
	if len(f) == 3 && f[0] == "keys" && f[1] != "" {
		switch f[2] {
		case "metadata", "encrypt", "decrypt":
			return prefix, f[2], f[1], true
		}
	}
	return prefix, "", "", true
}

// request is every field of every XKS request body. Unknown fields are
// ignored: the spec lets AWS KMS add request metadata over time.
type request struct {
	RequestMetadata                       kms.XKSRequestMetadata `json:"requestMetadata"`
	Plaintext                             string                 `json:"plaintext"`
	EncryptionAlgorithm                   string                 `json:"encryptionAlgorithm"`
	AdditionalAuthenticatedData           string                 `json:"additionalAuthenticatedData"`
	CiphertextDataIntegrityValueAlgorithm string                 `json:"ciphertextDataIntegrityValueAlgorithm"`
	Ciphertext                            string                 `json:"ciphertext"`
	CiphertextMetadata                    string                 `json:"ciphertextMetadata"`
	InitializationVector                  string                 `json:"initializationVector"`
	AuthenticationTag                     string                 `json:"authenticationTag"`
}

// b64 decodes standard, padded Base64 (RFC 4648 section 4), as the spec
// requires; "" is nil.
func b64(field, s string, errs *[]string) []byte {
	if s == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		*errs = append(*errs, field)
		return nil
	}
	return b
}

// ServeHTTP answers one XKS request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	if path == "/ping" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// For load balancers (the spec's "Load balancer health checks"):
		// no authentication, no key use, no audit record.
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	okPath := pathRE.MatchString(path)
	prefix, op, keyID, isAPI := route(path)
	if r.Method != http.MethodPost {
		if okPath && isAPI {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"errorName": "ValidationException", "errorMessage": "XKS API calls are POST requests"})
			return
		}
		writeError(w, kmsError(kms.CodeXKSInvalidURIPath, "no such XKS API path"))
		return
	}
	st := s.state.Load()
	ctx := r.Context()
	c := kms.Caller{Tenant: "-"}
	rp := kms.XKSRejectParams{KeyStore: prefix, Operation: op, ExternalKeyID: keyID}
	reject := func(code kms.Code, msg string) {
		writeError(w, s.kms.XKSReject(ctx, c, rp, kmsError(code, msg)))
	}
	sto := st.stores[prefix]
	if !okPath || !isAPI || sto == nil {
		rp.KeyStore = ""
		if okPath && sto != nil {
			rp.KeyStore = prefix
		}
		reject(kms.CodeXKSInvalidURIPath, "no such XKS API path")
		return
	}
	c.Tenant = sto.Tenant
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		reject(kms.CodeValidation, "failed to read the request body")
		return
	}
	if len(body) > maxBody {
		reject(kms.CodeUnsupportedOperation, fmt.Sprintf("the request body is larger than %d bytes", maxBody))
		return
	}
	auth, err := st.sig.Verify(r, body, s.now(), func(id string) ([]byte, bool) {
		sec, ok := sto.secrets[id]
		return sec, ok
	})
	akid := auth.AccessKeyID
	if err != nil {
		rp.AccessKeyID = akid
		s.log.Info("XKS request failed authentication", "keyStore", prefix, "operation", op, "reason", err.Error())
		reject(kms.CodeXKSAuthenticationFailed, "the request signature could not be verified")
		return
	}
	c.Principal = "xks:" + akid
	rp.AccessKeyID = akid
	if op == "" {
		reject(kms.CodeXKSInvalidURIPath, "no such XKS API path")
		return
	}
	if sto.Disabled {
		reject(kms.CodeInvalidState, "this external key store is disabled")
		return
	}
	if sto.bucket != nil && !sto.bucket.take(s.now()) {
		reject(kms.CodeThrottling, "the request rate of this key store is over its limit")
		return
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		reject(kms.CodeValidation, "the request body is not a JSON object of the XKS API")
		return
	}
	rp.Metadata = req.RequestMetadata
	c.RequestID = req.RequestMetadata.KMSRequestID
	if len(c.RequestID) > 128 {
		c.RequestID = strings.ToValidUTF8(c.RequestID[:128], "")
	}
	var bad []string
	aad := b64("additionalAuthenticatedData", req.AdditionalAuthenticatedData, &bad)
	pt := b64("plaintext", req.Plaintext, &bad)
	ct := b64("ciphertext", req.Ciphertext, &bad)
	meta := b64("ciphertextMetadata", req.CiphertextMetadata, &bad)
	iv := b64("initializationVector", req.InitializationVector, &bad)
	tag := b64("authenticationTag", req.AuthenticationTag, &bad)
	defer clear(pt)
	if len(bad) > 0 {
		reject(kms.CodeValidation, "not standard Base64: "+strings.Join(bad, ", "))
		return
	}
	if op != "health" && len(meta) > kms.XKSMaxCiphertextMeta {
		reject(kms.CodeValidation, fmt.Sprintf("ciphertextMetadata is longer than %d bytes", kms.XKSMaxCiphertextMeta))
		return
	}

	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	key := kms.XKSKey{KeyStore: prefix, ExternalKeyID: keyID}
	if k, ok := sto.Keys[keyID]; ok {
		key.KeyRef = k.KeyRef
		key.Policy = kms.XKSPolicy{
			AllowedPrincipals: k.AllowedPrincipals, AllowedKMSKeyARNs: k.AllowedKMSKeyARNs,
		}
	}
	switch op {
	case "health":
		s.health(ctx, w, c, prefix, req.RequestMetadata)
	case "metadata":
		res, err := s.kms.XKSGetKeyMetadata(ctx, c, kms.XKSKeyMetadataParams{Key: s.policy(sto, key), Metadata: req.RequestMetadata})
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	case "encrypt":
		res, err := s.kms.XKSEncrypt(ctx, c, kms.XKSEncryptParams{
			Key: s.policy(sto, key), Metadata: req.RequestMetadata, Plaintext: pt, AAD: aad,
			Algorithm: req.EncryptionAlgorithm, IntegrityAlgorithm: req.CiphertextDataIntegrityValueAlgorithm,
		})
		if err != nil {
			writeError(w, err)
			return
		}
		out := map[string]string{
			"ciphertext":           base64.StdEncoding.EncodeToString(res.Ciphertext),
			"ciphertextMetadata":   base64.StdEncoding.EncodeToString(res.CiphertextMetadata),
			"initializationVector": base64.StdEncoding.EncodeToString(res.IV),
			"authenticationTag":    base64.StdEncoding.EncodeToString(res.AuthenticationTag),
		}
		if res.IntegrityValue != nil {
			out["ciphertextDataIntegrityValue"] = base64.StdEncoding.EncodeToString(res.IntegrityValue)
		}
		writeJSON(w, http.StatusOK, out)
	case "decrypt":
		res, err := s.kms.XKSDecrypt(ctx, c, kms.XKSDecryptParams{
			Key: s.policy(sto, key), Metadata: req.RequestMetadata, Ciphertext: ct, CiphertextMetadata: meta,
			IV: iv, AuthenticationTag: tag, AAD: aad, Algorithm: req.EncryptionAlgorithm,
		})
		if err != nil {
			writeError(w, err)
			return
		}
		// The Base64 string lives until the response is written and
		// collected; the decrypted bytes themselves are zeroed now.
		enc := base64.StdEncoding.EncodeToString(res.Plaintext)
		clear(res.Plaintext)
		writeJSON(w, http.StatusOK, map[string]string{"plaintext": enc})
	}
}

// policy joins the store's policy and the key's: a key's own lists, where
// set, replace the store's (they can only be narrower in intent, and an
// operator reads one list per key).
func (s *Server) policy(sto *store, k kms.XKSKey) kms.XKSKey {
	if len(k.Policy.AllowedPrincipals) == 0 {
		k.Policy.AllowedPrincipals = sto.AllowedPrincipals
	}
	if len(k.Policy.AllowedKMSKeyARNs) == 0 {
		k.Policy.AllowedKMSKeyARNs = sto.AllowedKMSKeyARNs
	}
	return k
}

type fleetDetail struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

type healthResponse struct {
	XKSProxyFleetSize int           `json:"xksProxyFleetSize"`
	XKSProxyVendor    string        `json:"xksProxyVendor"`
	XKSProxyModel     string        `json:"xksProxyModel"`
	EKMVendor         string        `json:"ekmVendor"`
	EKMFleetDetails   []fleetDetail `json:"ekmFleetDetails"`
}

func (s *Server) health(ctx context.Context, w http.ResponseWriter, c kms.Caller, prefix string, m kms.XKSRequestMetadata) {
	res, err := s.kms.XKSGetHealthStatus(ctx, c, kms.XKSHealthParams{KeyStore: prefix, Metadata: m})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, healthResponse{
		XKSProxyFleetSize: 1, XKSProxyVendor: "keyflow", XKSProxyModel: "keyflow XKS proxy (API v1)",
		EKMVendor:       "keyflow",
		EKMFleetDetails: []fleetDetail{{ID: "keyflow-hsm-1", Model: s.model, HealthStatus: res.Status}},
	})
}

// TLSConfig is the listener's TLS configuration: TLS 1.2 or later (Go's
// defaults include the spec's cipher suites) and, if configured, mTLS
// with the CA and subject common names of Config.MTLS.
func (s *Server) TLSConfig(cert tls.Certificate) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if m := s.state.Load().cfg.MTLS; m != nil {
		if err := configureMTLS(tc, m); err != nil {
			return nil, err
		}
	}
	return tc, nil
}

// Listen serves HTTPS on addr with cert until Close, and returns the
// address it listens on.
func (s *Server) Listen(addr string, cert tls.Certificate) (net.Addr, error) {
	tc, err := s.TLSConfig(cert)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the XKS proxy on %s: %w", addr, err)
	}
	hs := &http.Server{
		Handler: s, TLSConfig: tc, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.http = hs
	s.mu.Unlock()
	go func() {
		if err := hs.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("the XKS proxy listener stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}

// Close stops the listener started by Listen, letting requests in flight
// finish for up to five seconds.
func (s *Server) Close() error {
	s.mu.Lock()
	hs := s.http
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(ctx)
}

// bucket is a token bucket on the injected clock.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now time.Time) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
