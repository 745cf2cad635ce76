package natsauth

import (
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/jwt/v2"
)

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

// CheckRegionLinkCreds reports whether creds are a region link's
// (RegionLinkCreds): a user that may publish and subscribe only
// RegionSubjects. Any other creds would carry more than replication
// across the link (tenant requests, JetStream, audit), so a region's
// configuration refuses them.
func CheckRegionLinkCreds(creds []byte) error {
	uc := credsClaims(creds)
	if uc == nil {
		return errors.New("not a NATS creds file (a user JWT and seed)")
	}
	only := func(l jwt.StringList) bool {
		return len(l) == len(RegionSubjects) && !slices.ContainsFunc(RegionSubjects, func(s string) bool { return !l.Contains(s) })
	}
	if !only(uc.Pub.Allow) || !only(uc.Sub.Allow) {
		list := func(l jwt.StringList) string {
			if len(l) == 0 {
				return "every subject"
			}
			return fmt.Sprint([]string(l))
		}
		return fmt.Errorf("user %q is not a region link user: it may publish %s and subscribe %s, a link user only %v", uc.Name, list(uc.Pub.Allow), list(uc.Sub.Allow), RegionSubjects)
	}
	return nil
}
