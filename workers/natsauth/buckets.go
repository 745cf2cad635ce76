package natsauth

import "github.com/nats-io/jwt/v2"

// Bucket access.
//
// Every keyflow worker is a user of the KF account, which holds the KV
// buckets, so by default every worker can reach every bucket. A bucket
// with a stricter rule (the archive, kf_archive: only the archival and
// recovery workflows need it) is fenced off per user with deny
// permissions on the subjects that reach it, which the server enforces:
// the JetStream API for its stream (info, message get, direct get,
// consumers) and its $KV subjects, for publishing and subscribing alike
// (a subscriber to $KV.<bucket>.> would see every value as it is written).

// BucketSubjects returns the subjects through which a user reaches the KV
// bucket named bucket.
func BucketSubjects(bucket string) []string {
	stream := "KV_" + bucket
	return []string{
		"$KV." + bucket + ".>",
		"$JS.API.STREAM.*." + stream,
		"$JS.API.STREAM.*." + stream + ".>",
		"$JS.API.STREAM.*.*." + stream,
		"$JS.API.CONSUMER.*." + stream,
		"$JS.API.CONSUMER.*." + stream + ".>",
		"$JS.API.CONSUMER.*.*." + stream + ".>",
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
	}
}

// ServiceCredsDenying issues creds for a keyflow worker in the KF account
// that may neither publish nor subscribe to the deny subjects, for
// example BucketSubjects("kf_archive") for a crypto worker.
func (id *Identity) ServiceCredsDenying(name string, deny []string) ([]byte, error) {
	return issueUser(id.service, name, func(uc *jwt.UserClaims) {
		uc.Pub.Deny.Add(deny...)
		uc.Sub.Deny.Add(deny...)
	})
}
