// Package keypolicy is keyflow's authorization language: the built-in
// roles, the table of which role may call which operation, and key
// policies and grants, in the manner of AWS KMS's, with their evaluation.
//
// It is a leaf. It imports nothing of keyflow but schemas (the JSON
// Schema of a key policy), holds no state and makes no calls: it says
// what a document means and decides one access at a time. Package kms
// enforces it (kms.Service.Authorize runs the role table and the key's
// policy and grants before every operation, and records each refusal);
// transports and the NATS account resolver (workers/natsauth) use its
// roles to name what a principal holds.
//
// Where to look:
//   - roles.go: [Role], [Action], the operation table ([PermissionOf]) and
//     a tenant's [RolePolicy] (separation of duties).
//   - policy.go: [KeyPolicy], [Grant], [Conditions] and their evaluation
//     ([KeyAuthz.Decide]).
//
// Every validation error matches [ErrInvalid] and carries a message fit
// for the caller; package kms turns it into a ValidationException.
package keypolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyflow/keyflow/schemas"
)

// KeyPolicyVersion is the policy language version keyflow understands.
const KeyPolicyVersion = "2026-11-01"

// Limits of a key policy and of a key's grants.
const (
	MaxKeyPolicyBytes = 32 << 10
	MaxGrantsPerKey   = 100
)

// Effect is what a matching statement does.
type Effect string

// Effects.
const (
	EffectAllow Effect = "Allow"
	EffectDeny  Effect = "Deny"
)

// KeyPolicy is a key's resource policy, in the manner of an AWS KMS key
// policy: statements that allow or deny operations on the key to
// principals, under conditions. The document is validated against
// schemas/policy/KeyPolicy.json when it is set.
//
// Evaluation (see Authorize): an explicit Deny that matches wins; else an
// Allow statement or a grant that matches allows; else the request is
// denied. A key without a policy has the default one: every principal of
// the tenant whose roles allow the operation may perform it.
type KeyPolicy struct {
	Version    string            `json:"version"`
	Statements []PolicyStatement `json:"statements"`
}

// PolicyStatement is one rule of a key policy.
type PolicyStatement struct {
	// Sid names the statement; denials name it in the audit trail.
	Sid    string `json:"sid"`
	Effect Effect `json:"effect"`
	// Principals are principal names of the key's tenant, "role:<role>"
	// for every principal holding that role, or "*" for all.
	Principals []string `json:"principals"`
	// Operations are actions ("Encrypt", "Decrypt", ...) or "*".
	Operations []Action    `json:"operations"`
	Conditions *Conditions `json:"conditions,omitempty"`
}

// Conditions narrow a statement or a grant. Every condition given must
// hold.
type Conditions struct {
	// EncryptionContextEquals: the request's encryption context must be
	// exactly these pairs (AWS EncryptionContextEquals).
	EncryptionContextEquals map[string]string `json:"encryptionContextEquals,omitempty"`
	// EncryptionContextSubset: the request's encryption context must
	// contain these pairs, and may contain more (AWS
	// EncryptionContextSubset, kms:EncryptionContext:<key>).
	EncryptionContextSubset map[string]string `json:"encryptionContextSubset,omitempty"`
	// SourcePrincipals: the calling principal, as the NATS server vouched
	// for it, must be one of these names; a trailing "*" matches a prefix.
	SourcePrincipals []string `json:"sourcePrincipals,omitempty"`
	// NotBefore and NotAfter bound the time window in which the statement
	// or grant applies, by the worker's clock.
	NotBefore *time.Time `json:"notBefore,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
}

// Grant gives one principal temporary, narrow use of one key.
type Grant struct {
	ID      string `json:"grantId"`
	KeyID   string `json:"keyId"`
	Grantee string `json:"grantee"`
	// Operations the grant allows (never "*").
	Operations []Action `json:"operations"`
	// Constraints narrow the grant; NotAfter is its expiry.
	Constraints *Conditions `json:"constraints,omitempty"`
	// RetiringPrincipal may retire the grant, besides the grantee.
	RetiringPrincipal string    `json:"retiringPrincipal,omitempty"`
	CreatedAt         time.Time `json:"creationDate"`
	CreatedBy         string    `json:"createdBy"`
}

// KeyAuthz is what the authorization store keeps per key: its policy (nil:
// the default) and its live grants. Retired and revoked grants are removed;
// the audit trail remembers them.
type KeyAuthz struct {
	Tenant string     `json:"tenant"`
	KeyID  string     `json:"keyId"`
	Policy *KeyPolicy `json:"policy,omitempty"`
	Grants []Grant    `json:"grants,omitempty"`
}

// ParseKeyPolicy validates a policy document against its schema and the
// rules a schema cannot say (unique sids, a sane time window), and decodes
// it strictly.
func ParseKeyPolicy(doc []byte) (*KeyPolicy, error) {
	if len(doc) > MaxKeyPolicyBytes {
		return nil, invalid("the key policy is %d bytes; the limit is %d", len(doc), MaxKeyPolicyBytes)
	}
	if err := schemas.ValidatePolicy("KeyPolicy", doc); err != nil {
		return nil, invalid("the key policy does not match schemas/policy/KeyPolicy.json: %s", schemaProblem(err))
	}
	var p KeyPolicy
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, invalid("the key policy is not valid JSON for a policy")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("the key policy has trailing data")
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// schemaProblem shortens a validator error to its first useful line.
func schemaProblem(err error) string {
	s := err.Error()
	if i := strings.Index(s, schemas.ErrInvalid.Error()+": "); i >= 0 {
		s = s[i+len(schemas.ErrInvalid.Error())+2:]
	}
	s = strings.Join(strings.Fields(s), " ")
	return truncate(s, 400)
}

func (p *KeyPolicy) validate() error {
	if p.Version != KeyPolicyVersion {
		return invalid("key policy version must be %q", KeyPolicyVersion)
	}
	sids := map[string]bool{}
	for _, st := range p.Statements {
		if sids[st.Sid] {
			return invalid("statement sid %q appears twice", st.Sid)
		}
		sids[st.Sid] = true
		for _, a := range st.Operations {
			if a != "*" && !slices.Contains(PolicyActions(), a) {
				return invalid("statement %s: unknown operation %q; operations: %v", st.Sid, truncate(string(a), 64), PolicyActions())
			}
		}
		for _, pr := range st.Principals {
			if r, ok := strings.CutPrefix(pr, "role:"); ok && !ValidRole(Role(r)) {
				return invalid("statement %s: unknown role %q", st.Sid, truncate(r, 64))
			}
		}
		if err := st.Conditions.Validate(); err != nil {
			return invalid("statement %s: %s", st.Sid, messageOf(err))
		}
	}
	return nil
}

// Validate checks what the language itself requires of conditions: a
// time window that is not empty. The limits on encryption-context pairs
// are the domain's (kms checks them where it accepts conditions).
func (c *Conditions) Validate() error {
	if c == nil {
		return nil
	}
	if c.NotBefore != nil && c.NotAfter != nil && !c.NotBefore.Before(*c.NotAfter) {
		return invalid("notBefore must be before notAfter")
	}
	return nil
}

// Condition names, as denials report them ("condition:<name>").
const (
	condEncryptionContext = "encryptionContext"
	condSourcePrincipal   = "sourcePrincipal"
	condTimeWindow        = "timeWindow"
)

// check returns "" when every condition holds, else the name of the first
// that does not.
func (c *Conditions) check(principal string, ec map[string]string, now time.Time) string {
	if c == nil {
		return ""
	}
	if c.NotBefore != nil && now.Before(*c.NotBefore) {
		return condTimeWindow
	}
	if c.NotAfter != nil && !now.Before(*c.NotAfter) {
		return condTimeWindow
	}
	if len(c.SourcePrincipals) > 0 && !slices.ContainsFunc(c.SourcePrincipals, func(p string) bool { return matchName(p, principal) }) {
		return condSourcePrincipal
	}
	if c.EncryptionContextEquals != nil {
		if len(ec) != len(c.EncryptionContextEquals) {
			return condEncryptionContext
		}
		for k, v := range c.EncryptionContextEquals {
			if got, ok := ec[k]; !ok || got != v {
				return condEncryptionContext
			}
		}
	}
	for k, v := range c.EncryptionContextSubset {
		if got, ok := ec[k]; !ok || got != v {
			return condEncryptionContext
		}
	}
	return ""
}

// matchName matches a name against a pattern: exact, "*", or a prefix
// ending in "*".
func matchName(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}

// matchesPrincipal reports whether a statement names the caller.
func (st *PolicyStatement) matchesPrincipal(principal string, roles []string) bool {
	for _, p := range st.Principals {
		switch {
		case p == "*":
			return true
		case strings.HasPrefix(p, "role:"):
			if slices.Contains(roles, strings.TrimPrefix(p, "role:")) {
				return true
			}
		case p == principal:
			return true
		}
	}
	return false
}

func (st *PolicyStatement) matchesAction(a Action) bool {
	return slices.Contains(st.Operations, a) || slices.Contains(st.Operations, "*")
}

// Request is one access to one key, as the transport established it.
type Request struct {
	Principal string
	Roles     []string
	Action    Action
	Context   map[string]string // the request's encryption context
	Now       time.Time
}

// Decide evaluates a key's policy and grants for one access. It returns ""
// when allowed, else the rule that denies: "key-policy:statement <sid>"
// (an explicit Deny), "condition:<name>" (a statement or grant would allow
// but its condition does not hold), or "grant:none" (no statement and no
// grant allows it).
func (a *KeyAuthz) Decide(r Request) string {
	if a == nil || a.Policy == nil {
		return "" // the default policy: roles decide
	}
	for i := range a.Policy.Statements {
		st := &a.Policy.Statements[i]
		if st.Effect == EffectDeny && st.matchesPrincipal(r.Principal, r.Roles) && st.matchesAction(r.Action) &&
			st.Conditions.check(r.Principal, r.Context, r.Now) == "" {
			return "key-policy:statement " + st.Sid
		}
	}
	failed := ""
	for i := range a.Policy.Statements {
		st := &a.Policy.Statements[i]
		if st.Effect != EffectAllow || !st.matchesPrincipal(r.Principal, r.Roles) || !st.matchesAction(r.Action) {
			continue
		}
		cond := st.Conditions.check(r.Principal, r.Context, r.Now)
		if cond == "" {
			return ""
		}
		if failed == "" {
			failed = cond
		}
	}
	for i := range a.Grants {
		g := &a.Grants[i]
		if g.Grantee != r.Principal || !slices.Contains(g.Operations, r.Action) {
			continue
		}
		cond := g.Constraints.check(r.Principal, r.Context, r.Now)
		if cond == "" {
			return ""
		}
		if failed == "" {
			failed = cond
		}
	}
	if failed != "" {
		return "condition:" + failed
	}
	return "grant:none"
}

// DenyMessage is what the caller is told about a key-level denial: the kind
// of rule, never the policy's contents (which only key admins and auditors
// may read) or the values a condition expected.
func DenyMessage(action Action, rule string) string {
	switch {
	case strings.HasPrefix(rule, "key-policy:"):
		return fmt.Sprintf("%s on this key is denied by a statement of its key policy", action)
	case strings.HasPrefix(rule, "condition:"):
		return fmt.Sprintf("%s on this key is allowed only under conditions this request does not meet (%s)", action, strings.TrimPrefix(rule, "condition:"))
	default:
		return fmt.Sprintf("no key policy statement or grant allows %s on this key for this principal", action)
	}
}

// ErrInvalid is matched (errors.Is) by every validation error of this
// package: a policy, role or role policy that breaks the language's rules.
var ErrInvalid = errors.New("keypolicy: invalid")

// InvalidError says what is wrong with a document, in words fit for the
// caller (never a value a condition expected of someone else).
type InvalidError struct{ Message string }

func (e *InvalidError) Error() string { return e.Message }

// Is makes every InvalidError match ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error {
	return &InvalidError{Message: fmt.Sprintf(format, args...)}
}

func messageOf(err error) string {
	var e *InvalidError
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// truncate shortens caller-supplied text for messages, without splitting
// a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
