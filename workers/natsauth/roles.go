package natsauth

import (
	"fmt"

	"github.com/nats-io/jwt/v2"

	"github.com/keyflow/keyflow/events/jsaudit"
	"github.com/keyflow/keyflow/kms/keypolicy"
)

// keyflow's own NATS users: one kind per role, each with only what its job
// needs (docs/security-model.md has the table).
//
//   - Worker: serves the API (subscribes to kf.v1.>, replies) and publishes
//     audit records on kf.audit.>. It may not change, purge or delete the
//     audit streams, publish digests, or send requests on kf.v1.> (which
//     would let it act as a tenant by writing its own Nats-Request-Info).
//   - Sealer: reads KF_AUDIT and publishes digests on kf.auditdigest.>. It
//     may not publish audit records, change the audit streams, or act as a
//     tenant.
//   - Auditor (also the SIEM forwarder): read-only. An exact publish allow
//     list: JetStream info, direct gets of the audit and digest streams,
//     and its own pre-created pull durable (next message, info, acks). It
//     cannot create consumers (a push consumer can be told to deliver into
//     any subject), and it receives only its own inbox.
//   - Operator: administration (creates and configures the streams and the
//     auditor's durables). It may not publish audit records or digests, or
//     act as a tenant: what it changes in the streams' configuration is
//     recorded by the workers' config watch and reported by audit verify.

// AuditorDurable is the name of the auditor's pull durable on both audit
// streams, created by the operator (see jsaudit.Provision).
const AuditorDurable = "keyflow-auditor"

// auditStreams are the streams whose configuration only the operator may
// change.
var auditStreams = []string{jsaudit.StreamName, jsaudit.DigestStreamName}

// streamAdminSubjects are the JetStream API subjects that create, change or
// remove the audit streams or their messages.
func streamAdminSubjects() []string {
	var out []string
	for _, s := range auditStreams {
		for _, op := range []string{"CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"} {
			out = append(out, "$JS.API.STREAM."+op+"."+s)
		}
	}
	return out
}

// tenantRequests are the service subjects: only tenants send requests on
// them, through their imports, which stamp the caller's identity.
const tenantRequests = ServiceSubjectPrefix + ".>"

// WorkerCreds issues creds for a worker (crypto, admin, lifecycle,
// gateway roles): it serves requests and publishes audit records.
func (id *Identity) WorkerCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Deny.Add(streamAdminSubjects()...)
		uc.Pub.Deny.Add(jsaudit.DigestSubjectPrefix+".>", tenantRequests)
	})
}

// SealerCreds issues creds for the audit sealer.
func (id *Identity) SealerCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Deny.Add(streamAdminSubjects()...)
		uc.Pub.Deny.Add(jsaudit.AllSubjects, tenantRequests)
	})
}

// OperatorCreds issues creds for the operator: stream and consumer
// administration, but no audit records, digests or tenant requests.
func (id *Identity) OperatorCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Deny.Add(jsaudit.AllSubjects, jsaudit.DigestSubjectPrefix+".>", tenantRequests)
	})
}

// AuditorCreds issues creds for a read-only auditor or SIEM forwarder: see
// AuditorPublish for what it may send. It subscribes to its own inbox only.
func (id *Identity) AuditorCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Allow.Add(AuditorPublish()...)
		uc.Pub.Deny.Add(streamAdminSubjects()...)
		uc.Pub.Deny.Add(jsaudit.AllSubjects, jsaudit.DigestSubjectPrefix+".>", tenantRequests)
		uc.Sub.Allow.Add(InboxPrefix(uc.Subject) + ".>")
	})
}

// AuditorPublish is the auditor's exact publish allow list: JetStream
// account info, stream info and direct gets of the two audit streams, and
// its durable's info, next-message requests and acks.
func AuditorPublish() []string {
	out := []string{"$JS.API.INFO"}
	for _, s := range auditStreams {
		out = append(out,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.DIRECT.GET."+s,
			"$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.INFO."+s+"."+AuditorDurable,
			"$JS.API.CONSUMER.MSG.NEXT."+s+"."+AuditorDurable,
			"$JS.ACK."+s+"."+AuditorDurable+".>",
		)
	}
	return out
}

// CredsRestricted reports whether a creds file's user JWT carries any
// permission (a role's creds do; a full keyflow-account user's do not).
func CredsRestricted(creds []byte) bool {
	uc := credsClaims(creds)
	return uc != nil && (len(uc.Pub.Allow) > 0 || len(uc.Pub.Deny) > 0)
}

// TestingSharedInboxCreds issues creds for a principal with every role
// that, as keyflow did before per-user inboxes, may subscribe to the
// shared _INBOX.>. It exists for tests that replay the reply leak and for
// the benchmark that measures what the per-user inbox costs; never use it
// elsewhere. The key is not recorded, so nothing can revoke it but a new
// identity.
func (id *Identity) TestingSharedInboxCreds(tenant, principal string) ([]byte, error) {
	id.mu.RLock()
	kp, ok := id.tenants[tenant]
	id.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTenant, tenant)
	}
	return issueUser(ownKey(kp), principal, func(uc *jwt.UserClaims) {
		*uc = *userClaims(tenant, principal, uc.Subject, keypolicy.Roles())
		uc.Sub.Allow = jwt.StringList{"_INBOX.>"}
	})
}
