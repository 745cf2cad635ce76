package awskms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/internal/loadbench"
	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// The AWS KMS API under load from the AWS SDK for Go v2, at 1, 8 and 64
// clients: Encrypt (32 bytes with an encryption context), Decrypt of that
// ciphertext, and GenerateDataKey (AES_256). Each reports ops/s and the
// per-request p50 and p99 in ms.
//
// "keyflow" is the gateway over loopback HTTP with SigV4 checked, the
// in-process dispatch (authorization, quotas, the domain on SoftHSM) and
// the durable audit record stored in JetStream before the reply.
// "localkms" is local-kms, the AWS KMS emulator, driven by the same load
// code when KEYFLOW_LOCALKMS_URL names a running one (the bench task
// starts it); otherwise that half is skipped. With KEYFLOW_LOCALKMS_PID
// its rows also report local-kms's own CPU per call
// (server-cpu-µs/op): keyflow's cpu-µs/op counts client and server, which
// share the process, local-kms's only the client.
//
//	go test -run '^$' -bench 'AWS' -benchtime 2s ./workers/awskms/
func BenchmarkAWSEncrypt(b *testing.B)         { benchAWS(b, "Encrypt") }
func BenchmarkAWSDecrypt(b *testing.B)         { benchAWS(b, "Decrypt") }
func BenchmarkAWSGenerateDataKey(b *testing.B) { benchAWS(b, "GenerateDataKey") }

// awsTarget is one server under test: a client factory (one SDK client
// per benchmark, connections kept alive up to the client count) and a key.
type awsTarget struct {
	name   string
	client func(conns int) *awskmssdk.Client
	pid    int // the server's process, when it is another one
}

func benchAWS(b *testing.B, op string) {
	var targets []awsTarget
	f := newFixture(b)
	id, secret := f.accessKey(b, "alpha", "bench", keypolicy.RoleKeyAdmin, keypolicy.RoleCryptoUser)
	targets = append(targets, awsTarget{"keyflow", func(conns int) *awskmssdk.Client {
		return sdkFor(f.url, id, secret, conns)
	}, 0})
	if u := os.Getenv("KEYFLOW_LOCALKMS_URL"); u != "" {
		pid, _ := strconv.Atoi(os.Getenv("KEYFLOW_LOCALKMS_PID"))
		targets = append(targets, awsTarget{"localkms", func(conns int) *awskmssdk.Client {
			return sdkFor(u, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", conns)
		}, pid})
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			ctx := context.Background()
			setup := tg.client(1)
			k, err := setup.CreateKey(ctx, &awskmssdk.CreateKeyInput{Description: aws.String("bench")})
			if err != nil {
				b.Fatal(err)
			}
			keyID := k.KeyMetadata.KeyId
			ec := map[string]string{"bench": "aws"}
			pt := make([]byte, 32)
			ct, err := setup.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: pt, EncryptionContext: ec})
			if err != nil {
				b.Fatal(err)
			}
			for _, n := range []int{1, 8, 64} {
				c := tg.client(n)
				call := map[string]func() error{
					"Encrypt": func() error {
						_, err := c.Encrypt(ctx, &awskmssdk.EncryptInput{KeyId: keyID, Plaintext: pt, EncryptionContext: ec})
						return err
					},
					"Decrypt": func() error {
						_, err := c.Decrypt(ctx, &awskmssdk.DecryptInput{CiphertextBlob: ct.CiphertextBlob, EncryptionContext: ec})
						return err
					},
					"GenerateDataKey": func() error {
						_, err := c.GenerateDataKey(ctx, &awskmssdk.GenerateDataKeyInput{KeyId: keyID, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
						return err
					},
				}[op]
				b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
					var wg sync.WaitGroup // warm up every connection
					for range n {
						wg.Go(func() {
							if err := call(); err != nil {
								b.Error(err)
							}
						})
					}
					wg.Wait()
					peer := loadbench.PeerCPU(tg.pid)
					r := loadbench.Run(b, n, func(int) error { return call() })
					r.Report(b, 1, time.Millisecond, "ms")
					r.ReportPeerCPU(b, 1, loadbench.PeerCPU(tg.pid)-peer)
				})
			}
		})
	}
}

// BenchmarkInvokeEncrypt is the keyflow half of BenchmarkAWSEncrypt
// without HTTP, SigV4 and AWS's JSON: rpc.Server.Invoke of crypto.encrypt
// (admission, authorization, the domain on SoftHSM, the audit record) from
// n goroutines. The difference to BenchmarkAWSEncrypt/keyflow is what the
// gateway and the SDK client cost.
func BenchmarkInvokeEncrypt(b *testing.B) {
	f := newFixture(b)
	c := kms.Caller{Tenant: "alpha", Principal: "bench", Roles: []string{string(keypolicy.RoleCryptoUser)}}
	ctx := context.Background()
	k, err := f.bed.KMS.CreateKey(ctx, kms.Caller{Tenant: "alpha", Principal: "ada"}, kms.CreateKeyParams{})
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(api.EncryptRequest{KeyID: k.ID, Plaintext: make([]byte, 32), EncryptionContext: map[string]string{"bench": "aws"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			runConcurrent(b, n, func() error {
				_, err := f.inv.Invoke(ctx, c, api.OpEncrypt, body)
				return err
			})
		})
	}
}

func sdkFor(url, id, secret string, conns int) *awskmssdk.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	return awskmssdk.New(awskmssdk.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(url), HTTPClient: &http.Client{Transport: tr},
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
		}),
		RetryMaxAttempts: 1,
	})
}

// runConcurrent runs b.N calls of op from n goroutines and reports ops/s
// and latency percentiles.
func runConcurrent(b *testing.B, n int, op func() error) {
	loadbench.Run(b, n, func(int) error { return op() }).Report(b, 1, time.Millisecond, "ms")
}
