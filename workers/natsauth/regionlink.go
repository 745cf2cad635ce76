package natsauth

import "github.com/nats-io/jwt/v2"

// RegionSubjects is what a region link carries: keyflow's replication
// requests and their replies (package region), nothing else. JetStream,
// the audit stream, the KV buckets and every tenant subject stay local.
var RegionSubjects = []string{"kf.region.v1.>", "_INBOX.>"}

// RegionLinkCreds issues the creds another deployment's server uses to
// connect to this one as a leaf node: a user of the keyflow service
// account that may publish and subscribe only RegionSubjects, so the link
// carries replication messages and nothing else.
func (id *Identity) RegionLinkCreds(name string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Allow.Add(RegionSubjects...)
		uc.Sub.Allow.Add(RegionSubjects...)
	})
}

// ServiceAccount is the public key of the keyflow service account, the
// local account a region link binds to.
func (id *Identity) ServiceAccount() string { return id.service.pub }
