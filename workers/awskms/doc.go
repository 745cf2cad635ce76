// Package awskms serves the AWS KMS JSON API (TrentService), so that the
// AWS CLI, every AWS SDK, Terraform, the Vault/OpenBao awskms seal and
// SOPS use keyflow by changing only their endpoint and credentials.
//
// The protocol is AWS's: POST /, Content-Type application/x-amz-json-1.1,
// X-Amz-Target: TrentService.<Operation>, a JSON body with AWS's field
// names, SigV4 (service kms, AWS's five-minute clock window; workers/sigv4)
// and errors as {"__type": "<Exception>", "message": "..."} with status
// 400 (the caller's fault) or 500, the request ID in x-amzn-RequestId.
//
// Who is asking comes from the access key that signed the request
// (kms.AccessKeyIdentity: tenant, principal and roles); a tenant appears
// as a 12-digit account ID in ARNs (AccountID). A refused authentication
// is recorded (io.keyflow.request.rejected.v1, operation aws.request) and
// answered with AWS's exception names: MissingAuthenticationTokenException,
// IncompleteSignatureException, InvalidSignatureException (also for an
// expired date), UnrecognizedClientException (an unknown or disabled key).
//
// It is a thin adapter. Each supported operation (ops.go) translates the
// AWS request into keyflow's NATS request and runs it through
// rpc.Server.Invoke, the NATS path without the network hop: the same
// tenant admission and quotas, kms.Authorize, dual-control gates, handler
// and single audit record. Then it translates the reply (ARNs, KeyState,
// epoch-second timestamps). An unknown target is UnknownOperationException;
// an AWS operation keyflow cannot honour is UnsupportedOperationException
// naming it. docs/aws-api.md lists them all.
package awskms
