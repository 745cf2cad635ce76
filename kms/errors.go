package kms

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Codes follow AWS KMS's
// exception names where AWS has one, so that clients written for AWS branch
// the same way here. They never change once released.
type Code string

// Error codes.
const (
	CodeValidation        Code = "ValidationException"
	CodeNotFound          Code = "NotFoundException"
	CodeAlreadyExists     Code = "AlreadyExistsException"
	CodeInvalidCiphertext Code = "InvalidCiphertextException"
	CodeInvalidState      Code = "KMSInvalidStateException"
	CodeDisabled          Code = "DisabledException"
	CodeAccessDenied      Code = "AccessDeniedException"
	CodeInvalidKeyUsage   Code = "InvalidKeyUsageException"
	CodeLimitExceeded     Code = "LimitExceededException"
	CodeAuditUnavailable  Code = "AuditUnavailableException"
	CodeConflict          Code = "ConflictException"
	CodeThrottling        Code = "ThrottlingException"
	CodePendingApproval   Code = "PendingApprovalException"
	CodeInternal          Code = "KMSInternalException"
)

// Error codes of signatures and MACs (asym.go).
const (
	// CodeInvalidSignature is the code of a signature that does not verify.
	CodeInvalidSignature Code = "KMSInvalidSignatureException"
	// CodeInvalidMAC is the code of a MAC that does not verify.
	CodeInvalidMAC Code = "KMSInvalidMacException"
)

// Error codes of imports (BYOK, imports.go), AWS's names.
const (
	CodeInvalidImportToken   Code = "InvalidImportTokenException"
	CodeExpiredImportToken   Code = "ExpiredImportTokenException"
	CodeIncorrectKeyMaterial Code = "IncorrectKeyMaterialException"
	CodeUnsupportedOperation Code = "UnsupportedOperationException"
)

// XKS error codes, named as the XKS proxy API names them (xks.go). They
// extend the codes above for what only the XKS adapter can see.
const (
	CodeXKSAuthenticationFailed Code = "AuthenticationFailedException"
	CodeXKSInvalidURIPath       Code = "InvalidUriPathException"
	CodeDependencyTimeout       Code = "DependencyTimeoutException"
	// CodeCloudProvider: a cloud provider (cloud.go) refused a request or
	// did not answer; the record names the provider's own code.
	CodeCloudProvider Code = "CloudProviderException"
)

// Sentinel errors for callers that branch with errors.Is. Every *Error
// matches the sentinel of its code.
var (
	ErrValidation        = &Error{Code: CodeValidation}
	ErrNotFound          = &Error{Code: CodeNotFound}
	ErrAlreadyExists     = &Error{Code: CodeAlreadyExists}
	ErrInvalidCiphertext = &Error{Code: CodeInvalidCiphertext}
	ErrInvalidState      = &Error{Code: CodeInvalidState}
	ErrDisabled          = &Error{Code: CodeDisabled}
	ErrAccessDenied      = &Error{Code: CodeAccessDenied}
	ErrInvalidKeyUsage   = &Error{Code: CodeInvalidKeyUsage}
	ErrLimitExceeded     = &Error{Code: CodeLimitExceeded}
	ErrAuditUnavailable  = &Error{Code: CodeAuditUnavailable}
	ErrConflict          = &Error{Code: CodeConflict}
	ErrThrottling        = &Error{Code: CodeThrottling}
	ErrPendingApproval   = &Error{Code: CodePendingApproval}
	ErrInternal          = &Error{Code: CodeInternal}
)

// Error is the error every keyflow operation returns: a stable code and a
// message meant for the caller. Message never contains plaintext, key
// material or PINs. The wrapped cause, if any, is for logs on the server
// side and is not sent to callers.
type Error struct {
	Code    Code
	Message string
	cause   error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.cause }

// Is matches any *Error with the same code, so errors.Is(err, ErrNotFound)
// works for every not-found error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func newError(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func wrapError(code Code, cause error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), cause: cause}
}

// CodeOf returns the stable code of err: its own if it is an *Error, and
// KMSInternalException for anything else, so no internal detail leaks.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// PublicMessage returns what may be told to the caller about err.
func PublicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Message != "" {
			return e.Message
		}
		return string(e.Code)
	}
	return "internal error"
}

// errDecrypt is the one error every decryption failure returns, whatever
// check failed (header, key, version, state, tag, context): no oracle.
func errDecrypt(cause error) *Error {
	return &Error{Code: CodeInvalidCiphertext, Message: "the ciphertext could not be decrypted", cause: cause}
}
