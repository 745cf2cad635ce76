package gcpkms

import (
	"context"
	"fmt"

	"cloud.google.com/go/kms/apiv1/kmspb"

	"github.com/keyflow/keyflow/cloud"
)

var _ cloud.Restorer = (*Connector)(nil)

// Restore implements cloud.Restorer: RestoreCryptoKeyVersion on every
// version still DESTROY_SCHEDULED (Cloud KMS leaves it DISABLED; the
// step that follows enables it or not). The primary is the CryptoKey's
// and stays what it was. A version already DESTROYED cannot come back.
func (g *Connector) Restore(ctx context.Context, p cloud.RestoreParams) error {
	for _, name := range p.Key.Versions {
		v, err := g.c.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
		if err = note(ctx, "GetCryptoKeyVersion", name, err); err != nil {
			return err
		}
		switch v.GetState() {
		case kmspb.CryptoKeyVersion_DESTROY_SCHEDULED:
		case kmspb.CryptoKeyVersion_DESTROYED:
			return &cloud.Error{Operation: "RestoreCryptoKeyVersion", Code: "FailedPrecondition", Err: fmt.Errorf("version %s is destroyed", name)}
		default:
			continue
		}
		_, err = g.c.RestoreCryptoKeyVersion(ctx, &kmspb.RestoreCryptoKeyVersionRequest{Name: name})
		if err := note(ctx, "RestoreCryptoKeyVersion", name, err); err != nil {
			return err
		}
	}
	return nil
}
