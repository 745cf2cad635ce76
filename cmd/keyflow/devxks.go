package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyflow/keyflow/deploy/devstack"
)

// reloadOnHUP reloads the XKS proxy configuration on SIGHUP, so its
// credentials rotate without a restart. It returns a stop function.
func reloadOnHUP(ctx context.Context, st *devstack.Stack, log *slog.Logger) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if err := st.ReloadXKS(); err != nil {
					log.Error("the XKS configuration was not reloaded", "err", err)
				} else {
					log.Warn("the XKS configuration was reloaded")
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
