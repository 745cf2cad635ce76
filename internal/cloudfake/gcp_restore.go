package cloudfake

import (
	"context"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RestoreCryptoKeyVersion takes back a scheduled destruction, as Cloud
// KMS does: DESTROY_SCHEDULED becomes DISABLED; any other state is
// refused with FAILED_PRECONDITION.
func (g *GCP) RestoreCryptoKeyVersion(_ context.Context, r *kmspb.RestoreCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.versions[r.Name]
	if !ok {
		return nil, notFound(r.Name)
	}
	if v.State != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is %s, not DESTROY_SCHEDULED", r.Name, v.State)
	}
	v.State = kmspb.CryptoKeyVersion_DISABLED
	return v, nil
}
