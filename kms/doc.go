// Package kms is keyflow's key-management domain: customer keys, their
// versions and lifecycle, the operations on them (encrypt, decrypt, data
// keys, sign, verify, MACs, post-quantum seal and encapsulation, re-encrypt,
// rotation, import, backup, archival) and the audit record of every one.
//
// [Service] is the domain. Build one with [New] from a [Config]: an HSM
// backend (package hsm), a [Store] for key metadata and wrapped material,
// and an audit sink (package events). Every operation takes a context and
// the [Caller], and typed Params and Result structs.
//
// # Rules
//
//   - No transport. kms knows nothing of NATS, Temporal or HTTP. Every
//     protocol (the NATS services in workers/rpc, the AWS XKS proxy, the
//     Temporal activities in workflows) is a thin adapter onto the same
//     Service methods, so authorization ([Service.Authorize]), quotas, dual
//     control and audit happen once, here. e2e/deps_test.go keeps the arrows
//     true (README.md, "Dependency direction").
//   - The caller is established by the transport. A [Caller]'s tenant,
//     principal and roles come from what the transport vouched for (the NATS
//     server's request info), never from the request body.
//   - Every operation is audited. Each one starts with
//     `defer s.finish(...)`, which records its outcome (success, failure or
//     denial, with a stable error code) whether it returned or panicked.
//     The audit fails closed by default: no record, no result
//     ([CodeAuditUnavailable]); see Config.AuditFailOpen for the weaker mode.
//     The repeated defer is deliberate: it keeps "every operation is
//     audited" visible in each operation.
//   - Errors are a contract. Every error is an [*Error] with a stable
//     [Code] named as AWS KMS names it; the cause stays in server logs.
//     Every decryption failure (malformed, foreign key, wrong context, bad
//     tag) is the same [CodeInvalidCiphertext], so there is no oracle.
//   - No plaintext, key material or PIN in logs, errors or events. Key
//     material exists outside the HSM only wrapped under the root key.
//   - Every change to a key goes through updateKey (lifecycle_ops.go):
//     read, change, store with optimistic concurrency, retry on conflict,
//     invalidate the caches.
//
// # Where things are
//
// Vocabulary, one file each:
//   - key.go: [Key] and [Version], and every [KeySpec], [KeyUsage],
//     [KeyState] and [Origin].
//   - spec.go: what each spec is made of (algorithms, usages, HSM material).
//   - errors.go: [Error] and every [Code].
//   - store.go: [Store] and every optional store ability ([ArchiveStore],
//     [AuthzStore], [DataKeyStore], [GovernanceStore], ...).
//   - envelope.go: the ciphertext format and [EncryptionContext].
//
// The service:
//   - new.go: [Config] and [New].
//   - service.go: [Service], [Caller], audit (emit, finish), key lookup and
//     caches, CreateKey, DescribeKey, ListKeys and loading versions into the
//     HSM (withHandle); cache.go and aliascache.go hold the caches.
//   - symmetric.go: Encrypt, Decrypt, GenerateDataKey (AES-256-GCM).
//   - asym.go, rsa.go: Sign, Verify, MACs, RSA-OAEP.
//   - pqkeys.go: post-quantum keys (ML-KEM, X-Wing, ML-DSA, SLH-DSA) and HPKE.
//   - reencrypt.go: ReEncrypt and GenerateDataKeyPair; rewrap.go: moving
//     ciphertexts to the current version; datakeys.go: the registry of
//     wrapped data keys.
//
// Lifecycle:
//   - lifecycle.go: the NIST SP 800-57 states, transitions and what each
//     state permits; lifecycle_ops.go: state changes, deletion, destruction
//     and updateKey.
//   - rotation.go: new versions and the primary; retire.go: retiring old
//     versions; archive.go: archival and restore; fleet.go: fleet campaigns.
//   - migration.go: post-quantum migration campaigns; inventory.go: the
//     inventory and its CBOM (kms/cbom).
//   - imports.go, importtoken.go: BYOK (bring your own key).
//   - backup.go: backups and restore; kms/shamir and kms/rootceremony hold
//     the root-key share ceremony.
//   - xks.go: the domain half of the AWS External Key Store proxy.
//
// Who may do what:
//   - authz.go: [Service.Authorize], run by the transport before every
//     operation: roles, the key's policy and grants, the deny list.
//   - kms/keypolicy: the policy language itself (roles, the operation
//     table, key policies, grants), a leaf package; keypolicy.go adapts its
//     errors and adds the domain's limits. grants.go: key policies and
//     grants as operations.
//   - principals.go: tenants and principals ([Directory]).
//   - tenantpolicy.go, approval.go, dualcontrol.go, quota.go: tenant
//     governance: policies, dual control (approvals and the gates that ask
//     for them) and quotas.
//
// Tests use the real parts: SoftHSM through PKCS#11 (see main_test.go).
// export_test.go holds what only tests may call, such as importing a key
// from a known seed for known-answer vectors; it is never in a product
// binary, so `go list -deps ./kms` lists no "testing".
package kms
