package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyflow/keyflow/client"
)

// Exit codes.
const (
	exitOK          = 0
	exitRefused     = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitPending     = 4
	exitRunning     = 5 // a workflow outlived the call and goes on (key rotate)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	os.Exit(report(err))
}

// report prints err as one line on stderr and picks the exit code.
func report(err error) int {
	if err == nil {
		return exitOK
	}
	var ke *client.Error
	var ue usageError
	var sr stillRunning
	switch {
	case errors.As(err, &sr):
		fmt.Fprintf(os.Stderr, "keyflow: %s\n", sr)
		return exitRunning
	case errors.As(err, &ke) && ke.ApprovalID != "":
		fmt.Fprintf(os.Stderr, "keyflow: %s: %s\n", ke.Code, ke.Message)
		fmt.Fprintf(os.Stdout, "approval ID: %s\n", ke.ApprovalID)
		return exitPending
	case errors.As(err, &ke):
		fmt.Fprintf(os.Stderr, "keyflow: %s: %s\n", ke.Code, ke.Message)
		return exitRefused
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "keyflow: UsageError: %s\n", ue.msg)
		return exitUsage
	case errors.Is(err, client.ErrNoService), errors.Is(err, errUnreachable):
		fmt.Fprintf(os.Stderr, "keyflow: Unreachable: %s\n", err)
		return exitUnreachable
	default:
		fmt.Fprintf(os.Stderr, "keyflow: Error: %s\n", err)
		return exitRefused
	}
}

// stillRunning reports a workflow that outlived the call: not a failure,
// but not done either.
type stillRunning struct{ workflowID string }

func (e stillRunning) Error() string { return "still running: " + e.workflowID }

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

var errUnreachable = errors.New("keyflow could not be reached")
