package natsauth

import (
	"encoding/json"
	"os"
	"slices"

	"github.com/keyflow/keyflow/kms/keypolicy"
)

// Issued users: the worker's second question about a request's identity.
//
// The NATS server stamps Nats-Request-Info only on requests that cross a
// tenant's service import; a message published inside keyflow's own
// account carries whatever header its sender wrote. So the worker checks
// that the user key the header names is one keyflow issued (IssuePrincipal,
// UserCreds) to that tenant's principal, with exactly the roles the header
// claims, and the request's signature proves that the sender holds that
// key's seed (client/api: request signatures).

// IssuedUser reports whether keyflow issued the user public key userPub to
// principal of tenant with exactly roles (in any order). A disabled
// principal's keys still count as issued: the deny list refuses them, with
// its own rule. When the key is unknown, the identity file is read again if
// another process changed it since (a principal created by the control
// plane, served by a separate crypto worker).
func (id *Identity) IssuedUser(tenant, principal, userPub string, roles []string) bool {
	if ok, known := id.issued(tenant, principal, userPub, roles); known || !id.refresh() {
		return ok
	}
	ok, _ := id.issued(tenant, principal, userPub, roles)
	return ok
}

// issued answers IssuedUser from memory; known is false when the key is
// not on record at all (worth a refresh).
func (id *Identity) issued(tenant, principal, userPub string, roles []string) (ok, known bool) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	rec := id.principals[tenant][principal]
	if rec == nil {
		return false, false
	}
	for _, u := range rec.Users {
		if u.Public != userPub {
			continue
		}
		want := u.Roles
		if want == nil {
			want = rec.Roles
		}
		return sameRoles(want, roles), true
	}
	return false, false
}

func sameRoles(issued []keypolicy.Role, claimed []string) bool {
	if len(issued) != len(claimed) {
		return false
	}
	for _, r := range issued {
		if !slices.Contains(claimed, string(r)) {
			return false
		}
	}
	return true
}

// refresh re-reads the tenants and principals from the identity file when
// another process wrote it since this one last read or wrote it (a stat
// per unknown tenant or user key; the file is read only when it changed),
// adopting what the other process added (merge). It reports whether
// anything was re-read.
func (id *Identity) refresh() bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	fi, err := os.Stat(id.path)
	if err != nil || (fi.ModTime().Equal(id.fileMod) && fi.Size() == id.fileSize) {
		return false
	}
	b, err := os.ReadFile(id.path)
	if err != nil {
		return false
	}
	var f identityFile
	if err := json.Unmarshal(b, &f); err != nil || id.merge(&f) != nil {
		return false
	}
	id.fileMod, id.fileSize = fi.ModTime(), fi.Size()
	return true
}

// noteFile remembers the identity file's state after this process read or
// wrote it. The caller holds id.mu (or owns id).
func (id *Identity) noteFile() {
	if fi, err := os.Stat(id.path); err == nil {
		id.fileMod, id.fileSize = fi.ModTime(), fi.Size()
	}
}
