package kms

import (
	"errors"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// This file is where the domain meets its policy language (package
// kms/keypolicy): it turns the language's validation errors into
// ValidationExceptions, and adds the domain's own limits (encryption
// context sizes) to the conditions a policy or grant states.

// policyError turns a keypolicy validation error into a
// ValidationException with the same message; other errors pass.
func policyError(err error) error {
	var e *keypolicy.InvalidError
	if errors.As(err, &e) {
		return wrapError(CodeValidation, err, "%s", e.Message)
	}
	return err
}

// parseKeyPolicy is keypolicy.ParseKeyPolicy with the encryption-context
// limits of every statement's conditions checked.
func parseKeyPolicy(doc []byte) (*keypolicy.KeyPolicy, error) {
	p, err := keypolicy.ParseKeyPolicy(doc)
	if err != nil {
		return nil, policyError(err)
	}
	for _, st := range p.Statements {
		if err := checkContextLimits(st.Conditions); err != nil {
			return nil, newError(CodeValidation, "statement %s: %s", st.Sid, PublicMessage(err))
		}
	}
	return p, nil
}

// checkConditions validates conditions (of a grant) as the language and
// the domain require.
func checkConditions(c *keypolicy.Conditions) error {
	if err := c.Validate(); err != nil {
		return policyError(err)
	}
	return checkContextLimits(c)
}

// checkContextLimits applies EncryptionContext's limits to the pairs a
// condition names.
func checkContextLimits(c *keypolicy.Conditions) error {
	if c == nil {
		return nil
	}
	if c.EncryptionContextEquals != nil {
		if err := EncryptionContext(c.EncryptionContextEquals).validate(); err != nil {
			return err
		}
	}
	if c.EncryptionContextSubset != nil {
		if err := EncryptionContext(c.EncryptionContextSubset).validate(); err != nil {
			return err
		}
	}
	return nil
}

func checkPrincipalName(s string) error {
	if !keypolicy.ValidPrincipalName(s) {
		return newError(CodeValidation, "principal name %q must be 1-63 characters of a-z0-9._- starting with a letter or digit", truncate(s, 64))
	}
	return nil
}
