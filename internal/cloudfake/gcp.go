// Package cloudfake holds small fakes of the cloud KMSs that have no
// emulator here (Google Cloud KMS, Azure Key Vault), for tests only. They
// speak each provider's real wire protocol, so keyflow's connectors drive
// them through the official SDK clients (an endpoint option away from the
// real service), and they do the one thing that proves the wrapping
// format: they unwrap every import with the wrapping private key they
// issued and keep the material, which a test compares with keyflow's
// (Material). They implement only the calls the connectors make, and
// nothing of the providers' authorization, quotas or durability.
package cloudfake

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// GCP is a fake Cloud KMS (gRPC).
type GCP struct {
	kmspb.UnimplementedKeyManagementServiceServer
	Addr string

	mu       sync.Mutex
	keys     map[string]*kmspb.CryptoKey
	versions map[string]*kmspb.CryptoKeyVersion // by name
	order    map[string][]string                // key -> version names
	jobs     map[string]*kmspb.ImportJob
	privs    map[string]*rsa.PrivateKey // import job -> private key
	material map[string][]byte          // version -> unwrapped material
	// Down makes every call fail with Unavailable.
	Down bool
}

// StartGCP serves a fake Cloud KMS on a loopback port until the test ends.
func StartGCP(t testing.TB) *GCP {
	t.Helper()
	g := &GCP{keys: map[string]*kmspb.CryptoKey{}, versions: map[string]*kmspb.CryptoKeyVersion{}, order: map[string][]string{},
		jobs: map[string]*kmspb.ImportJob{}, privs: map[string]*rsa.PrivateKey{}, material: map[string][]byte{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		g.mu.Lock()
		down := g.Down
		g.mu.Unlock()
		if down {
			return nil, status.Error(codes.Unavailable, "the fake is down")
		}
		return h(ctx, req)
	}))
	kmspb.RegisterKeyManagementServiceServer(s, g)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	g.Addr = l.Addr().String()
	return g
}

// Material returns the material the fake unwrapped for a version.
func (g *GCP) Material(version string) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.material[version]
}

// SetState changes a version's state behind keyflow's back.
func (g *GCP) SetState(version string, s kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.versions[version].State = s
}

func notFound(name string) error { return status.Errorf(codes.NotFound, "%s not found", name) }

func (g *GCP) GetCryptoKey(_ context.Context, r *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.keys[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	out := proto.Clone(k).(*kmspb.CryptoKey)
	if k.Primary != nil {
		out.Primary = g.versions[k.Primary.Name]
	}
	return out, nil
}

func (g *GCP) CreateCryptoKey(_ context.Context, r *kmspb.CreateCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	name := r.Parent + "/cryptoKeys/" + r.CryptoKeyId
	if _, ok := g.keys[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "%s exists", name)
	}
	if !r.SkipInitialVersionCreation || !r.CryptoKey.GetImportOnly() {
		return nil, status.Error(codes.InvalidArgument, "the fake makes import-only keys without an initial version")
	}
	k := &kmspb.CryptoKey{Name: name, Purpose: r.CryptoKey.Purpose, VersionTemplate: r.CryptoKey.VersionTemplate, Labels: r.CryptoKey.Labels, ImportOnly: true}
	g.keys[name] = k
	return k, nil
}

func (g *GCP) GetImportJob(_ context.Context, r *kmspb.GetImportJobRequest) (*kmspb.ImportJob, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	j, ok := g.jobs[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	return j, nil
}

func (g *GCP) CreateImportJob(_ context.Context, r *kmspb.CreateImportJobRequest) (*kmspb.ImportJob, error) {
	if r.ImportJob.GetImportMethod() != kmspb.ImportJob_RSA_OAEP_3072_SHA256_AES_256 {
		return nil, status.Error(codes.InvalidArgument, "the fake issues RSA_OAEP_3072_SHA256_AES_256 jobs only")
	}
	priv, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	g.mu.Lock()
	defer g.mu.Unlock()
	name := r.Parent + "/importJobs/" + r.ImportJobId
	if _, ok := g.jobs[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "%s exists", name)
	}
	j := &kmspb.ImportJob{Name: name, ImportMethod: r.ImportJob.ImportMethod, ProtectionLevel: r.ImportJob.ProtectionLevel, State: kmspb.ImportJob_ACTIVE,
		PublicKey: &kmspb.ImportJob_WrappingPublicKey{Pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}}
	g.jobs[name], g.privs[name] = j, priv
	return j, nil
}

func (g *GCP) ImportCryptoKeyVersion(_ context.Context, r *kmspb.ImportCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.keys[r.Parent]
	if !ok {
		return nil, notFound(r.Parent)
	}
	priv, ok := g.privs[r.ImportJob]
	if !ok {
		return nil, notFound(r.ImportJob)
	}
	if r.Algorithm != k.GetVersionTemplate().GetAlgorithm() {
		return nil, status.Errorf(codes.InvalidArgument, "algorithm %s does not match the key's %s", r.Algorithm, k.GetVersionTemplate().GetAlgorithm())
	}
	want, ok := gcpMaterial[r.Algorithm]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "the fake does not import %s", r.Algorithm)
	}
	material, err := UnwrapRSAAES(priv, crypto.SHA256, r.WrappedKey)
	if err == nil {
		err = CheckMaterial(material, want)
	}
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the wrapped key does not unwrap to %s material: %v", r.Algorithm, err)
	}
	name := fmt.Sprintf("%s/cryptoKeyVersions/%d", k.Name, len(g.order[k.Name])+1)
	v := &kmspb.CryptoKeyVersion{Name: name, State: kmspb.CryptoKeyVersion_ENABLED, Algorithm: r.Algorithm, ImportJob: r.ImportJob,
		ProtectionLevel: k.GetVersionTemplate().GetProtectionLevel()}
	g.versions[name], g.material[name] = v, material
	g.order[k.Name] = append(g.order[k.Name], name)
	return v, nil
}

func (g *GCP) GetCryptoKeyVersion(_ context.Context, r *kmspb.GetCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.versions[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	return v, nil
}

func (g *GCP) ListCryptoKeyVersions(_ context.Context, r *kmspb.ListCryptoKeyVersionsRequest) (*kmspb.ListCryptoKeyVersionsResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.keys[r.Parent]; !ok {
		return nil, notFound(r.Parent)
	}
	out := &kmspb.ListCryptoKeyVersionsResponse{}
	for _, n := range g.order[r.Parent] {
		out.CryptoKeyVersions = append(out.CryptoKeyVersions, g.versions[n])
	}
	out.TotalSize = int32(len(out.CryptoKeyVersions))
	return out, nil
}

func (g *GCP) UpdateCryptoKeyPrimaryVersion(_ context.Context, r *kmspb.UpdateCryptoKeyPrimaryVersionRequest) (*kmspb.CryptoKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, ok := g.keys[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	if k.Purpose != kmspb.CryptoKey_ENCRYPT_DECRYPT {
		return nil, status.Error(codes.FailedPrecondition, "only ENCRYPT_DECRYPT keys have a primary version")
	}
	v, ok := g.versions[r.Name+"/cryptoKeyVersions/"+r.CryptoKeyVersionId]
	if !ok || v.State != kmspb.CryptoKeyVersion_ENABLED {
		return nil, status.Error(codes.FailedPrecondition, "the primary must be an enabled version")
	}
	k.Primary = v
	return k, nil
}

func (g *GCP) UpdateCryptoKeyVersion(_ context.Context, r *kmspb.UpdateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.versions[r.CryptoKeyVersion.GetName()]
	if !ok {
		return nil, notFound(r.CryptoKeyVersion.GetName())
	}
	if len(r.UpdateMask.GetPaths()) != 1 || r.UpdateMask.Paths[0] != "state" {
		return nil, status.Error(codes.InvalidArgument, "the fake updates state only")
	}
	switch r.CryptoKeyVersion.State {
	case kmspb.CryptoKeyVersion_ENABLED, kmspb.CryptoKeyVersion_DISABLED:
	default:
		return nil, status.Error(codes.InvalidArgument, "state must be ENABLED or DISABLED")
	}
	if v.State == kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		return nil, status.Error(codes.FailedPrecondition, "the version is scheduled for destruction")
	}
	v.State = r.CryptoKeyVersion.State
	return v, nil
}

func (g *GCP) DestroyCryptoKeyVersion(_ context.Context, r *kmspb.DestroyCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.versions[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	v.State = kmspb.CryptoKeyVersion_DESTROY_SCHEDULED
	return v, nil
}

// gcpMaterial is what each imported algorithm's material must be.
var gcpMaterial = map[kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm]string{
	kmspb.CryptoKeyVersion_GOOGLE_SYMMETRIC_ENCRYPTION:  "AES-256",
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_3072_SHA256:   "RSA-3072",
	kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_3072_SHA256: "RSA-3072",
	kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA256:   "RSA-4096",
	kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_4096_SHA256: "RSA-4096",
	kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256:          "P-256",
	kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384:          "P-384",
}

// privateOf returns an enabled version's imported private key.
func (g *GCP) privateOf(name string) (crypto.Signer, *kmspb.CryptoKeyVersion, error) {
	v, ok := g.versions[name]
	if !ok {
		return nil, nil, notFound(name)
	}
	if v.State != kmspb.CryptoKeyVersion_ENABLED {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "%s is %s", name, v.State)
	}
	priv, err := x509.ParsePKCS8PrivateKey(g.material[name])
	if err != nil {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "%s is not an asymmetric key", name)
	}
	return priv.(crypto.Signer), v, nil
}

// AsymmetricSign signs a digest with an imported private key: PKCS#1
// v1.5 for RSA, DER ECDSA for EC, as Cloud KMS does.
func (g *GCP) AsymmetricSign(_ context.Context, r *kmspb.AsymmetricSignRequest) (*kmspb.AsymmetricSignResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	priv, v, err := g.privateOf(r.Name)
	if err != nil {
		return nil, err
	}
	digest, h := r.GetDigest().GetSha256(), crypto.SHA256
	if v.Algorithm == kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384 {
		digest, h = r.GetDigest().GetSha384(), crypto.SHA384
	}
	if len(digest) != h.Size() || v.Algorithm == kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_3072_SHA256 || v.Algorithm == kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_4096_SHA256 {
		return nil, status.Errorf(codes.InvalidArgument, "%s does not sign that digest", r.Name)
	}
	sig, err := priv.Sign(rand.Reader, digest, h)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &kmspb.AsymmetricSignResponse{Name: r.Name, Signature: sig}, nil
}

// AsymmetricDecrypt decrypts RSA-OAEP (SHA-256) with an imported key.
func (g *GCP) AsymmetricDecrypt(_ context.Context, r *kmspb.AsymmetricDecryptRequest) (*kmspb.AsymmetricDecryptResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	priv, v, err := g.privateOf(r.Name)
	if err != nil {
		return nil, err
	}
	rk, ok := priv.(*rsa.PrivateKey)
	if !ok || (v.Algorithm != kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_3072_SHA256 && v.Algorithm != kmspb.CryptoKeyVersion_RSA_DECRYPT_OAEP_4096_SHA256) {
		return nil, status.Errorf(codes.InvalidArgument, "%s does not decrypt", r.Name)
	}
	pt, err := rsa.DecryptOAEP(crypto.SHA256.New(), nil, rk, r.Ciphertext, nil)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "decryption failed")
	}
	return &kmspb.AsymmetricDecryptResponse{Plaintext: pt}, nil
}

// GetPublicKey returns an imported key pair's public key (PEM).
func (g *GCP) GetPublicKey(_ context.Context, r *kmspb.GetPublicKeyRequest) (*kmspb.PublicKey, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	priv, v, err := g.privateOf(r.Name)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &kmspb.PublicKey{Name: r.Name, Algorithm: v.Algorithm, Pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}, nil
}

// CheckMaterial checks that unwrapped material is what a spec wants:
// "AES-256" (32 bytes), "RSA-3072", "RSA-4096", "P-256" or "P-384" (a
// PKCS#8 private key of that size or curve).
func CheckMaterial(material []byte, want string) error {
	if want == "AES-256" {
		if len(material) != 32 {
			return fmt.Errorf("%d bytes, not an AES-256 key", len(material))
		}
		return nil
	}
	priv, err := x509.ParsePKCS8PrivateKey(material)
	if err != nil {
		return fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	got := ""
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		got = fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PrivateKey:
		got = k.Curve.Params().Name
	}
	if got != want {
		return fmt.Errorf("a %s key, not %s", got, want)
	}
	return nil
}

// UnwrapRSAAES undoes CKM_RSA_AES_KEY_WRAP: RSA-OAEP (hash) of an
// AES key as long as the modulus, then AES-KWP (RFC 5649) of the
// material under it.
func UnwrapRSAAES(priv *rsa.PrivateKey, hash crypto.Hash, wrapped []byte) ([]byte, error) {
	n := priv.Size()
	if len(wrapped) <= n {
		return nil, errors.New("too short")
	}
	kek, err := rsa.DecryptOAEP(hash.New(), nil, priv, wrapped[:n], nil)
	if err != nil {
		return nil, err
	}
	return unwrapKWP(kek, wrapped[n:])
}

func unwrapKWP(kek, c []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(c)%8 != 0 || len(c) < 16 {
		return nil, errors.New("bad KWP length")
	}
	n := len(c)/8 - 1
	a := append([]byte(nil), c[:8]...)
	r := append([]byte(nil), c[8:]...)
	buf := make([]byte, 16)
	if n == 1 {
		block.Decrypt(buf, c)
		a, r = buf[:8], buf[8:]
	} else {
		for j := 5; j >= 0; j-- {
			for i := n - 1; i >= 0; i-- {
				binary.BigEndian.PutUint64(buf, binary.BigEndian.Uint64(a)^uint64(n*j+i+1))
				copy(buf[8:], r[8*i:8*i+8])
				block.Decrypt(buf, buf)
				copy(a, buf[:8])
				copy(r[8*i:], buf[8:])
			}
		}
	}
	if binary.BigEndian.Uint32(a) != 0xA65959A6 {
		return nil, errors.New("bad KWP integrity value")
	}
	size := int(binary.BigEndian.Uint32(a[4:]))
	if size > len(r) || size <= len(r)-8 {
		return nil, errors.New("bad KWP size")
	}
	return r[:size], nil
}
