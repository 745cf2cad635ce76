package kmip

import (
	"context"

	"github.com/keyflow/keyflow/kms"
	"github.com/keyflow/keyflow/workers/kmip/ttlv"
)

// HandleForTest answers one decoded request message as caller c, as a
// connection does after the handshake.
func (s *Server) HandleForTest(ctx context.Context, c kms.Caller, req ttlv.Item) ttlv.Item {
	return s.handle(ctx, conn{c: c}, req)
}
