// Package connect opens the connector of a cloud destination from its
// settings (the ones `keyflow cloud add` stores): AWS KMS, Google Cloud
// KMS or Azure Key Vault, each with its SDK's own credential chain. It is
// the one place that knows every provider, so that the lifecycle worker
// can serve any destination; each provider package stays on its own.
package connect

import (
	"context"
	"fmt"

	"github.com/keyflow/keyflow/cloud"
	"github.com/keyflow/keyflow/cloud/awskms"
	"github.com/keyflow/keyflow/cloud/azurekv"
	"github.com/keyflow/keyflow/cloud/gcpkms"
)

// Open opens provider's connector with settings (see kms.CloudDestination
// for the names each provider takes).
func Open(ctx context.Context, provider string, settings map[string]string) (cloud.Connector, error) {
	s := settings
	switch provider {
	case cloud.ProviderAWS:
		return awskms.Open(ctx, awskms.Settings{Region: s["region"], Endpoint: s["endpoint"], Profile: s["profile"], CredentialsFile: s["credentialsFile"],
			WrappingKeySpec: s["wrappingKeySpec"], Aliases: s["aliases"]})
	case cloud.ProviderGCP:
		return gcpkms.Open(ctx, gcpkms.Settings{Project: s["project"], Location: s["location"], KeyRing: s["keyRing"],
			Endpoint: s["endpoint"], CredentialsFile: s["credentialsFile"], ProtectionLevel: s["protectionLevel"]})
	case cloud.ProviderAzure:
		return azurekv.Open(azurekv.Settings{VaultURL: s["vaultURL"]})
	}
	return nil, fmt.Errorf("%w: provider %q", cloud.ErrUnsupported, provider)
}
