package keypolicy

import (
	"regexp"
	"slices"
	"strings"
)

// Role is a built-in role. A principal holds one or more roles; the roles
// are facts the transport established (in keyflow, tags in the user JWT
// that the NATS server vouched for), never something the request body says.
//
// The roles separate duties (CSA CCM CEK-02): whoever manages a key does not
// use it, whoever uses it cannot change it, and whoever audits it can do
// neither.
type Role string

// Built-in roles.
const (
	// RoleKeyAdmin creates, describes, rotates keys, sets their policies and
	// manages grants; it may not encrypt, decrypt or sign.
	RoleKeyAdmin Role = "key-admin"
	// RoleCryptoUser uses the keys its key policies and grants allow; it
	// may not change them.
	RoleCryptoUser Role = "crypto-user"
	// RoleAuditor reads the audit trail and the inventory.
	RoleAuditor Role = "auditor"
	// RoleApprover approves pending requests (dual control).
	RoleApprover Role = "approver"
	// RoleTenantAdmin manages the tenant's principals.
	RoleTenantAdmin Role = "tenant-admin"
)

// Roles lists the built-in roles.
func Roles() []Role {
	return []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor, RoleApprover, RoleTenantAdmin}
}

// ValidRole reports whether r is a built-in role.
func ValidRole(r Role) bool { return slices.Contains(Roles(), r) }

// Action is the name a key policy or grant uses for an operation on a key,
// as in AWS KMS ("Encrypt", "Decrypt", ...).
type Action string

// Actions a key policy statement or grant may name.
const (
	ActionEncrypt             Action = "Encrypt"
	ActionDecrypt             Action = "Decrypt"
	ActionGenerateDataKey     Action = "GenerateDataKey"
	ActionGenerateDataKeyPair Action = "GenerateDataKeyPair"
	ActionReEncryptFrom       Action = "ReEncryptFrom"
	ActionReEncryptTo         Action = "ReEncryptTo"
	ActionSign                Action = "Sign"
	ActionVerify              Action = "Verify"
	ActionGenerateMac         Action = "GenerateMac"
	ActionVerifyMac           Action = "VerifyMac"
	ActionGetPublicKey        Action = "GetPublicKey"
	ActionSeal                Action = "Seal"
	ActionOpen                Action = "Open"
	ActionEncapsulate         Action = "Encapsulate"
	ActionDecapsulate         Action = "Decapsulate"
	ActionDescribeKey         Action = "DescribeKey"
	ActionRotateKey           Action = "RotateKey"
	ActionCreateGrant         Action = "CreateGrant"
	ActionListGrants          Action = "ListGrants"
	ActionRevokeGrant         Action = "RevokeGrant"
	// ActionPutKeyPolicy and ActionGetKeyPolicy are governed by roles only,
	// never by the key policy itself, so a key admin can always repair a
	// policy (no lockout). ActionRetireGrant is governed by the grant
	// itself: its grantee, its retiring principal or a key admin may
	// retire it, as in AWS KMS.
	ActionRetireGrant  Action = "RetireGrant"
	ActionPutKeyPolicy Action = "PutKeyPolicy"
	ActionGetKeyPolicy Action = "GetKeyPolicy"
)

// PolicyActions lists the actions a key policy or grant may name.
func PolicyActions() []Action {
	return []Action{
		ActionEncrypt, ActionDecrypt, ActionGenerateDataKey, ActionGenerateDataKeyPair,
		ActionReEncryptFrom, ActionReEncryptTo, ActionSign, ActionVerify,
		ActionGenerateMac, ActionVerifyMac, ActionGetPublicKey, ActionSeal, ActionOpen,
		ActionEncapsulate, ActionDecapsulate, ActionDescribeKey, ActionRotateKey,
		ActionCreateGrant, ActionListGrants, ActionRevokeGrant,
	}
}

// Permission is one row of the operation table: the roles of which the
// caller must hold at least one, and the key-policy action the operation
// performs on each key it names (empty for operations on no key).
type Permission struct {
	Roles  []Role
	Action Action
}

// permissions maps every operation of the transport (the "<group>.<op>"
// names of the NATS API) to who may call it. It is the one place roles are
// enforced: the transport calls Authorize before any operation, so the
// operations themselves stay free of role checks. An operation missing
// here is refused for everyone ("role:unmapped-operation"): a new
// endpoint must be added to this table.
var permissions = map[string]Permission{
	// Data plane: crypto users only (key admins and auditors never see
	// plaintext or produce signatures).
	"crypto.encrypt":      {Roles: []Role{RoleCryptoUser}, Action: ActionEncrypt},
	"crypto.decrypt":      {Roles: []Role{RoleCryptoUser}, Action: ActionDecrypt},
	"crypto.datakey":      {Roles: []Role{RoleCryptoUser}, Action: ActionGenerateDataKey},
	"crypto.datakeypair":  {Roles: []Role{RoleCryptoUser}, Action: ActionGenerateDataKeyPair},
	"crypto.reencrypt":    {Roles: []Role{RoleCryptoUser}}, // ReEncryptFrom / ReEncryptTo per key
	"crypto.sign":         {Roles: []Role{RoleCryptoUser}, Action: ActionSign},
	"crypto.verify":       {Roles: []Role{RoleCryptoUser}, Action: ActionVerify},
	"crypto.mac":          {Roles: []Role{RoleCryptoUser}, Action: ActionGenerateMac},
	"crypto.verifymac":    {Roles: []Role{RoleCryptoUser}, Action: ActionVerifyMac},
	"crypto.publickey":    {Roles: []Role{RoleCryptoUser, RoleKeyAdmin}, Action: ActionGetPublicKey},
	"crypto.random":       {Roles: []Role{RoleCryptoUser}},
	"crypto.batchencrypt": {Roles: []Role{RoleCryptoUser}, Action: ActionEncrypt},
	"crypto.batchdecrypt": {Roles: []Role{RoleCryptoUser}, Action: ActionDecrypt},
	"crypto.batchdatakey": {Roles: []Role{RoleCryptoUser}, Action: ActionGenerateDataKey},
	"crypto.seal":         {Roles: []Role{RoleCryptoUser}, Action: ActionSeal},
	"crypto.open":         {Roles: []Role{RoleCryptoUser}, Action: ActionOpen},
	"crypto.encapsulate":  {Roles: []Role{RoleCryptoUser}, Action: ActionEncapsulate},
	"crypto.decapsulate":  {Roles: []Role{RoleCryptoUser}, Action: ActionDecapsulate},

	// Control plane.
	"keys.create":         {Roles: []Role{RoleKeyAdmin}},
	"keys.describe":       {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}, Action: ActionDescribeKey},
	"keys.list":           {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}},
	"keys.rotate":         {Roles: []Role{RoleKeyAdmin}, Action: ActionRotateKey},
	"keys.inventory":      {Roles: []Role{RoleAuditor, RoleKeyAdmin}},
	"keys.setpolicy":      {Roles: []Role{RoleKeyAdmin}, Action: ActionPutKeyPolicy},
	"keys.getpolicy":      {Roles: []Role{RoleKeyAdmin, RoleAuditor}, Action: ActionGetKeyPolicy},
	"grants.create":       {Roles: []Role{RoleKeyAdmin}, Action: ActionCreateGrant},
	"grants.list":         {Roles: []Role{RoleKeyAdmin, RoleAuditor}, Action: ActionListGrants},
	"grants.retire":       {Roles: []Role{RoleCryptoUser, RoleKeyAdmin}, Action: ActionRetireGrant},
	"grants.revoke":       {Roles: []Role{RoleKeyAdmin}, Action: ActionRevokeGrant},
	"audit.tail":          {Roles: []Role{RoleAuditor}},
	"tenants.create":      {Roles: []Role{RoleTenantAdmin}},
	"principals.create":   {Roles: []Role{RoleTenantAdmin}},
	"principals.list":     {Roles: []Role{RoleTenantAdmin, RoleAuditor}},
	"principals.disable":  {Roles: []Role{RoleTenantAdmin}},
	"accesskeys.create":   {Roles: []Role{RoleTenantAdmin}},
	"keys.setalias":       {Roles: []Role{RoleKeyAdmin}},
	"keys.deletealias":    {Roles: []Role{RoleKeyAdmin}},
	"keys.tag":            {Roles: []Role{RoleKeyAdmin}},
	"keys.untag":          {Roles: []Role{RoleKeyAdmin}},
	"keys.setdescription": {Roles: []Role{RoleKeyAdmin}},
	// Anyone may list the grants it can retire; key admins and auditors
	// may ask about any principal (kms.ListRetirableGrants).
	"grants.listretirable": {Roles: []Role{RoleKeyAdmin, RoleAuditor, RoleCryptoUser}},
	"accesskeys.list":      {Roles: []Role{RoleTenantAdmin, RoleAuditor}},
	"accesskeys.disable":   {Roles: []Role{RoleTenantAdmin}},
	"accesskeys.delete":    {Roles: []Role{RoleTenantAdmin}},

	// Lifecycle changes are key administration (CSA CCM CEK-02: whoever
	// manages a key does not use it).
	"keys.setstate":         {Roles: []Role{RoleKeyAdmin}},
	"keys.scheduledeletion": {Roles: []Role{RoleKeyAdmin}},
	"keys.canceldeletion":   {Roles: []Role{RoleKeyAdmin}},
	"keys.compromise":       {Roles: []Role{RoleKeyAdmin}},
	"keys.setrotation":      {Roles: []Role{RoleKeyAdmin}},
	"keys.retireversion":    {Roles: []Role{RoleKeyAdmin}},
	"keys.rewrapstatus":     {Roles: []Role{RoleKeyAdmin, RoleAuditor}, Action: ActionDescribeKey},
	// Multi-region keys (docs/multi-region.md).
	"keys.replicate":             {Roles: []Role{RoleKeyAdmin}},
	"keys.updateprimaryregion":   {Roles: []Role{RoleKeyAdmin}},
	"keys.replicadeletion":       {Roles: []Role{RoleKeyAdmin}},
	"keys.cancelreplicadeletion": {Roles: []Role{RoleKeyAdmin}},

	// The data-key registry and rewraps are used by applications; the
	// migration campaign is run by key administrators, watched by
	// auditors, and its cutover approved by approvers.
	"crypto.rewrap":       {Roles: []Role{RoleCryptoUser}},
	"datakeys.register":   {Roles: []Role{RoleCryptoUser}},
	"datakeys.get":        {Roles: []Role{RoleCryptoUser, RoleKeyAdmin}},
	"datakeys.list":       {Roles: []Role{RoleCryptoUser, RoleKeyAdmin, RoleAuditor}},
	"datakeys.deregister": {Roles: []Role{RoleCryptoUser, RoleKeyAdmin}},
	"migrate.start":       {Roles: []Role{RoleKeyAdmin}},
	"migrate.status":      {Roles: []Role{RoleKeyAdmin, RoleAuditor, RoleApprover}},
	"migrate.pause":       {Roles: []Role{RoleKeyAdmin}},
	"migrate.resume":      {Roles: []Role{RoleKeyAdmin}},
	"migrate.rollback":    {Roles: []Role{RoleKeyAdmin}},
	"migrate.approve":     {Roles: []Role{RoleApprover}},

	// BYOK: importing material is key administration.
	"keys.importparams": {Roles: []Role{RoleKeyAdmin}},
	"keys.import":       {Roles: []Role{RoleKeyAdmin}},
	"keys.deleteimport": {Roles: []Role{RoleKeyAdmin}},

	// Backups and archives hold wrapped material only; restoring an
	// archived version is decided by an approver.
	"backup.create":   {Roles: []Role{RoleKeyAdmin}},
	"backup.restore":  {Roles: []Role{RoleKeyAdmin}},
	"backup.list":     {Roles: []Role{RoleKeyAdmin, RoleAuditor}},
	"archive.run":     {Roles: []Role{RoleKeyAdmin}},
	"archive.restore": {Roles: []Role{RoleKeyAdmin}},
	"archive.decide":  {Roles: []Role{RoleApprover}},

	// Dual control: anyone who may request a protected operation may
	// follow its approval; only approvers vote.
	"approvals.list":    {Roles: []Role{RoleApprover, RoleKeyAdmin, RoleTenantAdmin, RoleAuditor}},
	"approvals.show":    {Roles: []Role{RoleApprover, RoleKeyAdmin, RoleTenantAdmin, RoleAuditor}},
	"approvals.approve": {Roles: []Role{RoleApprover}},
	"approvals.deny":    {Roles: []Role{RoleApprover}},
	"tenantpolicy.get":  {Roles: []Role{RoleTenantAdmin, RoleKeyAdmin, RoleAuditor}},
	"tenantpolicy.set":  {Roles: []Role{RoleTenantAdmin}},

	// Cloud distribution (docs/multi-cloud.md). Registering a destination
	// decides where key material may go and which credentials file a
	// worker reads: tenant configuration, like principals, so a tenant
	// admin does it (as creating an AWS custom key store or a Vault
	// keymgmt provider is an administrator's act). Putting a key there is
	// key administration. A key admin alone can therefore not send a key
	// to an account of its own choosing, nor a tenant admin move a key.
	// Auditors read where keys live and how the destinations fare.
	"cloud.add":          {Roles: []Role{RoleTenantAdmin}},
	"cloud.remove":       {Roles: []Role{RoleTenantAdmin}},
	"cloud.list":         {Roles: []Role{RoleTenantAdmin, RoleKeyAdmin, RoleAuditor}},
	"cloud.status":       {Roles: []Role{RoleTenantAdmin, RoleKeyAdmin, RoleAuditor}},
	"cloud.distribute":   {Roles: []Role{RoleKeyAdmin}},
	"cloud.undistribute": {Roles: []Role{RoleKeyAdmin}},

	// KMIP (workers/kmip): the same separation as the NATS rows. Making
	// a key exportable is its own row, asked for in addition to
	// kmip.create or kmip.register; releasing material (kmip.get) is
	// data-plane use.
	"kmip.discoverversions": {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}},
	"kmip.query":            {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}},
	"kmip.locate":           {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}},
	"kmip.getattributes":    {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}, Action: ActionDescribeKey},
	"kmip.getattributelist": {Roles: []Role{RoleKeyAdmin, RoleCryptoUser, RoleAuditor}, Action: ActionDescribeKey},
	"kmip.create":           {Roles: []Role{RoleKeyAdmin}},
	"kmip.register":         {Roles: []Role{RoleKeyAdmin}},
	"kmip.exportable":       {Roles: []Role{RoleKeyAdmin}},
	"kmip.addattribute":     {Roles: []Role{RoleKeyAdmin}},
	"kmip.modifyattribute":  {Roles: []Role{RoleKeyAdmin}},
	"kmip.deleteattribute":  {Roles: []Role{RoleKeyAdmin}},
	"kmip.activate":         {Roles: []Role{RoleKeyAdmin}},
	"kmip.revoke":           {Roles: []Role{RoleKeyAdmin}},
	"kmip.destroy":          {Roles: []Role{RoleKeyAdmin}},
	"kmip.get":              {Roles: []Role{RoleCryptoUser}, Action: ActionDescribeKey},
	"kmip.encrypt":          {Roles: []Role{RoleCryptoUser}, Action: ActionEncrypt},
	"kmip.decrypt":          {Roles: []Role{RoleCryptoUser}, Action: ActionDecrypt},
	"kmip.mac":              {Roles: []Role{RoleCryptoUser}, Action: ActionGenerateMac},
	"kmip.macverify":        {Roles: []Role{RoleCryptoUser}, Action: ActionVerifyMac},
	"kmip.createkeypair":    {Roles: []Role{RoleKeyAdmin}},
	"kmip.rekey":            {Roles: []Role{RoleKeyAdmin}, Action: ActionRotateKey},
	"kmip.sign":             {Roles: []Role{RoleCryptoUser}, Action: ActionSign},
	"kmip.signatureverify":  {Roles: []Role{RoleCryptoUser}, Action: ActionVerify},
}

// PermissionOf returns the row of the operation table for op.
func PermissionOf(op string) (Permission, bool) {
	p, ok := permissions[op]
	return p, ok
}

// Operations lists the operations in the table, sorted (for tests that
// check every endpoint is mapped, and for documentation).
func Operations() []string {
	out := make([]string, 0, len(permissions))
	for op := range permissions {
		out = append(out, op)
	}
	slices.Sort(out)
	return out
}

// HeldBy reports whether held (the caller's roles, as the transport
// established them) contains one of the roles the operation requires.
func (p Permission) HeldBy(held []string) bool {
	for _, w := range p.Roles {
		if slices.Contains(held, string(w)) {
			return true
		}
	}
	return false
}

// Rule names the role rule that denies the operation, e.g.
// "role:crypto-user required" or "role:key-admin|auditor required".
func (p Permission) Rule() string {
	names := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		names[i] = string(r)
	}
	return "role:" + strings.Join(names, "|") + " required"
}

// RolePolicy is what a tenant forbids its principals. ForbiddenRoleSets
// lists combinations of roles no single principal may hold together, e.g.
// [[key-admin, crypto-user]] (whoever manages a key must not also use it).
type RolePolicy struct {
	ForbiddenRoleSets [][]Role `json:"forbiddenRoleSets,omitempty"`
}

// DefaultRolePolicy is the policy of a tenant created without one: a
// key admin may not also be a crypto user (whoever manages a key must not
// also use it).
func DefaultRolePolicy() RolePolicy {
	return RolePolicy{ForbiddenRoleSets: [][]Role{{RoleKeyAdmin, RoleCryptoUser}}}
}

// Validate checks that every set names at least two built-in roles.
func (p RolePolicy) Validate() error {
	for _, set := range p.ForbiddenRoleSets {
		if len(set) < 2 {
			return invalid("a forbidden role combination needs at least two roles, got %v", set)
		}
		for _, r := range set {
			if !ValidRole(r) {
				return invalid("unknown role %q in a forbidden combination; roles: %v", truncate(string(r), 64), Roles())
			}
		}
	}
	return nil
}

// CheckRoles refuses an unknown role, a role given twice, and a combination
// the tenant policy forbids, with a message that names the combination.
func (p RolePolicy) CheckRoles(roles []Role) error {
	if len(roles) == 0 {
		return invalid("a principal needs at least one role; roles: %v", Roles())
	}
	seen := map[Role]bool{}
	for _, r := range roles {
		if !ValidRole(r) {
			return invalid("unknown role %q; roles: %v", truncate(string(r), 64), Roles())
		}
		if seen[r] {
			return invalid("role %s is given twice", r)
		}
		seen[r] = true
	}
	for _, set := range p.ForbiddenRoleSets {
		all := true
		for _, r := range set {
			all = all && seen[r]
		}
		if all {
			return invalid("the tenant policy forbids one principal to hold %s together (separation of duties)", joinRoles(set, " and "))
		}
	}
	return nil
}

func joinRoles(rs []Role, sep string) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, sep)
}

// principalRE is what a principal name may be: it travels in a user JWT
// (as its name) and in audit records.
var principalRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidPrincipalName reports whether s may name a principal.
func ValidPrincipalName(s string) bool { return principalRE.MatchString(s) }

// ParseRoles turns names into roles, refusing unknown ones.
func ParseRoles(names []string) ([]Role, error) {
	out := make([]Role, 0, len(names))
	for _, n := range names {
		r := Role(strings.TrimSpace(n))
		if !ValidRole(r) {
			return nil, invalid("unknown role %q; roles: %v", truncate(n, 64), Roles())
		}
		out = append(out, r)
	}
	return out, nil
}

// RoleNames returns the names of rs, for records and wire formats.
func RoleNames(rs []Role) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}
