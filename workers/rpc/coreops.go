package rpc

import (
	"context"
	"fmt"
	"sync"

	"github.com/keyflow/keyflow/client/api"
	"github.com/keyflow/keyflow/kms"
)

// The crypto-core operations: signatures, MACs, public keys, random bytes,
// re-encryption, data key pairs and batches. Each is a decode, one domain
// call and an encode.

func (s *Server) sign(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.SignRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpSign, err)
	}
	res, err := s.cfg.KMS.Sign(ctx, c, kms.SignParams{KeyRef: req.KeyID, Message: req.Message,
		MessageType: kms.MessageType(req.MessageType), Algorithm: kms.SigningAlgorithm(req.SigningAlgorithm), Context: req.SignatureContext})
	if err != nil {
		return nil, err
	}
	out := api.SignReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, SigningAlgorithm: string(res.Algorithm), Signature: res.Signature}
	for _, a := range res.Additional {
		out.AdditionalSignatures = append(out.AdditionalSignatures, api.AdditionalSignature{KeyID: a.KeyID, KeyVersion: a.KeyVersion, SigningAlgorithm: string(a.Algorithm), Signature: a.Signature})
	}
	return out, nil
}

func (s *Server) verify(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.VerifyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpVerify, err)
	}
	res, err := s.cfg.KMS.Verify(ctx, c, kms.VerifyParams{KeyRef: req.KeyID, KeyVersion: req.KeyVersion, Message: req.Message,
		MessageType: kms.MessageType(req.MessageType), Algorithm: kms.SigningAlgorithm(req.SigningAlgorithm), Signature: req.Signature, Context: req.SignatureContext,
		AllowCompromised: req.AllowCompromised})
	if err != nil {
		return nil, err
	}
	return api.VerifyReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, SignatureValid: true, SigningAlgorithm: string(res.Algorithm)}, nil
}

func (s *Server) generateMac(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.MacRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGenerateMac, err)
	}
	res, err := s.cfg.KMS.GenerateMac(ctx, c, kms.MACParams{KeyRef: req.KeyID, Message: req.Message, Algorithm: kms.MACAlgorithm(req.MacAlgorithm)})
	if err != nil {
		return nil, err
	}
	return api.MacReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, MacAlgorithm: string(res.Algorithm), Mac: res.MAC}, nil
}

func (s *Server) verifyMac(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.MacRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpVerifyMac, err)
	}
	res, err := s.cfg.KMS.VerifyMac(ctx, c, kms.MACParams{KeyRef: req.KeyID, Message: req.Message, Algorithm: kms.MACAlgorithm(req.MacAlgorithm), MAC: req.Mac})
	if err != nil {
		return nil, err
	}
	return api.MacReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, MacAlgorithm: string(res.Algorithm), MacValid: true}, nil
}

func (s *Server) getPublicKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.PublicKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpGetPublicKey, err)
	}
	res, err := s.cfg.KMS.GetPublicKey(ctx, c, req.KeyID, req.KeyVersion)
	if err != nil {
		return nil, err
	}
	out := api.PublicKeyReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, KeySpec: string(res.KeySpec), KeyUsage: string(res.KeyUsage), PublicKey: res.PublicKeyDER}
	for _, a := range res.SigningAlgorithms {
		out.SigningAlgorithms = append(out.SigningAlgorithms, string(a))
	}
	for _, a := range res.EncryptionAlgorithms {
		out.EncryptionAlgorithms = append(out.EncryptionAlgorithms, string(a))
	}
	return out, nil
}

func (s *Server) random(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.RandomRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpRandom, err)
	}
	b, err := s.cfg.KMS.GenerateRandom(ctx, c, req.NumberOfBytes)
	if err != nil {
		return nil, err
	}
	return api.RandomReply{Plaintext: b}, nil
}

func (s *Server) reEncrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.ReEncryptRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpReEncrypt, err)
	}
	res, err := s.cfg.KMS.ReEncrypt(ctx, c, kms.ReEncryptParams{Ciphertext: req.CiphertextBlob, SourceContext: req.SourceEncryptionContext,
		SourceKeyRef: req.SourceKeyID, DestinationKeyRef: req.DestinationKeyID, DestinationContext: req.DestinationEncryptionContext})
	if err != nil {
		return nil, err
	}
	return api.ReEncryptReply{SourceKeyID: res.SourceKeyID, SourceKeyVersion: res.SourceKeyVersion, KeyID: res.KeyID, KeyVersion: res.KeyVersion, CiphertextBlob: res.Ciphertext}, nil
}

func (s *Server) dataKeyPair(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.DataKeyPairRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpDataKeyPair, err)
	}
	res, err := s.cfg.KMS.GenerateDataKeyPair(ctx, c, kms.DataKeyPairParams{KeyRef: req.KeyID, KeyPairSpec: kms.KeySpec(req.KeyPairSpec),
		Context: req.EncryptionContext, WithoutPlaintext: req.WithoutPlaintext})
	if err != nil {
		return nil, err
	}
	return api.DataKeyPairReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, KeyPairSpec: string(res.KeyPairSpec), PublicKey: res.PublicKey,
		PrivateKeyPlaintext: res.PrivateKeyPlaintext, PrivateKeyCiphertextBlob: res.PrivateKeyCiphertextBlob}, nil
}

// batchParallelism bounds how many items of one batch run at once: enough
// to keep the HSM sessions and the audit stream busy, without one batch
// starving other requests.
const batchParallelism = 16

// runBatch runs one single-item handler over every item and collects one
// result per item. Each item is audited by the domain call it makes; a batch
// refused as a whole is audited as a rejected request of op.
func runBatch[Req, Rep any](ctx context.Context, s *Server, op string, c kms.Caller, items []Req, one func(context.Context, kms.Caller, Req) (any, error)) (any, error) {
	if len(items) == 0 || len(items) > api.MaxBatchItems {
		return nil, s.rejectWith(ctx, c, op, &kms.Error{Code: kms.CodeValidation, Message: "a batch holds 1 to 1000 items"})
	}
	out := api.BatchReply[Rep]{Results: make([]api.BatchResult[Rep], len(items))}
	sem := make(chan struct{}, batchParallelism)
	var wg sync.WaitGroup
	for i := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() {
				// serve's recover does not reach this goroutine: a panic
				// here would take the whole worker down.
				if p := recover(); p != nil {
					s.cfg.Logger.Error("batch item panic", "op", op, "request", c.RequestID, "panic", fmt.Sprint(p))
					out.Results[i] = api.BatchResult[Rep]{Error: &api.ErrorBody{Code: string(kms.CodeInternal), Message: "internal error"}}
				}
				<-sem
				wg.Done()
			}()
			res, err := one(ctx, c, items[i])
			if err != nil {
				out.Results[i].Error = &api.ErrorBody{Code: string(kms.CodeOf(err)), Message: kms.PublicMessage(err)}
				return
			}
			r := res.(Rep)
			out.Results[i].Result = &r
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *Server) batchEncrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.BatchEncryptRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBatchEncrypt, err)
	}
	return runBatch[api.EncryptRequest, api.EncryptReply](ctx, s, api.OpBatchEncrypt, c, req.Items, func(ctx context.Context, c kms.Caller, r api.EncryptRequest) (any, error) {
		res, err := s.cfg.KMS.Encrypt(ctx, c, kms.EncryptParams{KeyRef: r.KeyID, Plaintext: r.Plaintext, Context: r.EncryptionContext, Algorithm: kms.EncryptionAlgorithm(r.EncryptionAlgorithm)})
		if err != nil {
			return nil, err
		}
		return api.EncryptReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, CiphertextBlob: res.Ciphertext}, nil
	})
}

func (s *Server) batchDecrypt(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.BatchDecryptRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBatchDecrypt, err)
	}
	return runBatch[api.DecryptRequest, api.DecryptReply](ctx, s, api.OpBatchDecrypt, c, req.Items, func(ctx context.Context, c kms.Caller, r api.DecryptRequest) (any, error) {
		res, err := s.cfg.KMS.Decrypt(ctx, c, kms.DecryptParams{KeyRef: r.KeyID, Ciphertext: r.CiphertextBlob, Context: r.EncryptionContext, Algorithm: kms.EncryptionAlgorithm(r.EncryptionAlgorithm)})
		if err != nil {
			return nil, err
		}
		return api.DecryptReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Plaintext: res.Plaintext}, nil
	})
}

func (s *Server) batchDataKey(ctx context.Context, c kms.Caller, body []byte) (any, error) {
	var req api.BatchDataKeyRequest
	if err := decode(body, &req); err != nil {
		return nil, s.rejectWith(ctx, c, api.OpBatchDataKey, err)
	}
	return runBatch[api.DataKeyRequest, api.DataKeyReply](ctx, s, api.OpBatchDataKey, c, req.Items, func(ctx context.Context, c kms.Caller, r api.DataKeyRequest) (any, error) {
		res, err := s.cfg.KMS.GenerateDataKey(ctx, c, kms.GenerateDataKeyParams{KeyRef: r.KeyID, NumberOfBytes: r.NumberOfBytes, Context: r.EncryptionContext})
		if err != nil {
			return nil, err
		}
		if r.WithoutPlaintext {
			clear(res.Plaintext)
			res.Plaintext = nil
		}
		return api.DataKeyReply{KeyID: res.KeyID, KeyVersion: res.KeyVersion, Plaintext: res.Plaintext, CiphertextBlob: res.CiphertextBlob}, nil
	})
}
