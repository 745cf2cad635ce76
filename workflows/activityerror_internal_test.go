package workflows

import (
	"errors"
	"fmt"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/keyflow/keyflow/kms"
)

// TestActivityErrorRefusalsAreBenign: an expected refusal (a self-approval
// is AccessDeniedException) is a benign, non-retryable application error,
// which the SDK logs at debug level instead of ERROR "Activity error.";
// internal and audit failures stay retryable errors.
func TestActivityErrorRefusalsAreBenign(t *testing.T) {
	for _, tc := range []struct {
		code      kms.Code
		benign    bool
		retryable bool
	}{
		{kms.CodeAccessDenied, true, false},
		{kms.CodeInvalidState, true, false},
		{kms.CodeInternal, false, true},
		{kms.CodeAuditUnavailable, false, true},
	} {
		var app *temporal.ApplicationError
		err := activityError(fmt.Errorf("wrapped: %w", &kms.Error{Code: tc.code, Message: "m"}))
		if !errors.As(err, &app) || app.Type() != string(tc.code) {
			t.Fatalf("%s: %v", tc.code, err)
		}
		if got := app.Category() == temporal.ApplicationErrorCategoryBenign; got != tc.benign {
			t.Errorf("%s: benign %v, want %v", tc.code, got, tc.benign)
		}
		if app.NonRetryable() == tc.retryable {
			t.Errorf("%s: non-retryable %v, want %v", tc.code, app.NonRetryable(), !tc.retryable)
		}
	}
}
