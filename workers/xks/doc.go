// Package xks serves the AWS KMS External Key Store (XKS) proxy API, v1
// (github.com/aws/aws-kms-xksproxy-api-spec), over HTTPS, so that AWS KMS
// can use keys whose material never leaves keyflow's HSM: the External
// KMS (hold-your-own-key) pattern.
//
// It is a thin adapter. It routes
//
//	POST /<uriPrefix>/kms/xks/v1/keys/<externalKeyId>/metadata
//	POST /<uriPrefix>/kms/xks/v1/keys/<externalKeyId>/encrypt
//	POST /<uriPrefix>/kms/xks/v1/keys/<externalKeyId>/decrypt
//	POST /<uriPrefix>/kms/xks/v1/health
//
// (any other method: 405), verifies the AWS SigV4 signature (service
// kms-xks-proxy, a clock-skew window, one or two credential pairs per
// key store so they can rotate), decodes the JSON, and calls the XKS
// operations of package kms, which do the cryptography in the HSM and
// write the audit record. Errors come back with the spec's error names
// and HTTP codes (errorFor).
//
// Each URI prefix is one logical key store: its own keyflow tenant,
// credentials, policy on the request metadata (allowed AWS principals,
// allowed AWS KMS key ARNs) and map from external key IDs to keyflow keys.
// See Config; SetConfig swaps a new configuration in while serving.
//
// A request refused before it reaches an operation (a bad signature, an
// unknown path, a malformed body, throttling) is recorded as
// io.keyflow.xks.rejected.v1. Plaintext is never logged or recorded.
package xks
