package azurekv

import (
	"context"
	"errors"
	"time"

	"github.com/keyflow/keyflow/cloud"
)

var _ cloud.Restorer = (*Connector)(nil)

// recoverPolls bound how long Restore waits for a recovered key to show:
// Key Vault recovers in the background, and the key answers GetKey some
// seconds after RecoverDeletedKey.
const (
	recoverPolls    = 10
	recoverInterval = time.Second
)

// Restore implements cloud.Restorer: RecoverDeletedKey of the
// soft-deleted key (every version comes back with the attributes it had;
// the step that follows enables it or not), then GetKey until the vault
// shows it. A key no longer deleted but present (an earlier attempt
// recovered it) is done; one neither deleted nor present was purged and
// cannot come back (a refusal). A recovery that has not shown within the
// polls is retryable.
func (a *Connector) Restore(ctx context.Context, p cloud.RestoreParams) error {
	name := KeyName(p.Key.KeyID)
	err := do(ctx, "GetDeletedKey", name, func(ctx context.Context) error {
		_, err := a.c.GetDeletedKey(ctx, name, nil)
		return err
	})
	recovering := err == nil
	switch {
	case recovering:
		if err := do(ctx, "RecoverDeletedKey", name, func(ctx context.Context) error {
			_, err := a.c.RecoverDeletedKey(ctx, name, nil)
			return err
		}); err != nil {
			return err
		}
	case !isNotFound(err):
		return err
	}
	for i := range recoverPolls {
		err := do(ctx, "GetKey", name, func(ctx context.Context) error {
			_, err := a.c.GetKey(ctx, name, "", nil)
			return err
		})
		switch {
		case err == nil:
			return nil
		case !isNotFound(err):
			return err
		case !recovering:
			return &cloud.Error{Operation: "RecoverDeletedKey", Code: "KeyNotFound", Err: errors.New("the key is neither in the vault nor soft-deleted (purged); it cannot come back")}
		case i+1 < recoverPolls:
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(recoverInterval):
			}
		}
	}
	return &cloud.Error{Operation: "RecoverDeletedKey", Code: "RecoveryPending", Retryable: true, Err: errors.New("the vault has not shown the recovered key yet")}
}
