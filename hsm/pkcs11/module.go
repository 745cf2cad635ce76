//go:build cgo

package pkcs11

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// module is one loaded PKCS#11 library. C_Initialize and C_Finalize act on
// the whole process, so every Token that uses the same library must share
// one module, counted by refs.
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
	// initialized says whether this package called C_Initialize and so
	// owes the C_Finalize. It stays false when someone else in the process
	// had already initialised the library.
	initialized bool

	// loginMu guards logins, and is held while sessions are opened and
	// logged in, or closed, so that the login bookkeeping matches what
	// the library believes.
	loginMu sync.Mutex
	logins  map[uint]*login
	// pinKey keys the PIN digests in logins, so that they reveal nothing
	// about the PIN.
	pinKey [32]byte

	// roots are the root keys that Tokens of this module have found or
	// created, indexed by the KeyHandles that stand for them (see
	// rootHandle). Object handles are the application's, not a
	// session's, so every Token on a token shares them.
	rootsMu sync.Mutex
	roots   []rootKey
}

// login records that this package logged the user in to the token in a
// slot, for how many open Tokens, and with which PIN.
//
// PKCS#11 login state belongs to the application and the token, so a
// second C_Login while Tokens are open returns CKR_USER_ALREADY_LOGGED_IN
// without checking the PIN (SoftHSM does so). Without this record, a
// second Open with a wrong PIN would succeed.
type login struct {
	tokens    int
	pinDigest []byte
}

func (m *module) pinDigest(pin string) []byte {
	h := hmac.New(sha256.New, m.pinKey[:])
	h.Write([]byte(pin))
	return h.Sum(nil)
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

// acquireModule returns the shared, initialised module for path, loading
// and initialising it on first use.
func acquireModule(path string) (*module, error) {
	if path == "" {
		return nil, errors.New("pkcs11: failed to find a PKCS#11 module: install softhsm2 or set " + ModuleEnv)
	}
	key := moduleKey(path)

	modulesMu.Lock()
	defer modulesMu.Unlock()
	m := modules[key]
	if m == nil {
		ctx := p11.New(key)
		if ctx == nil {
			return nil, fmt.Errorf("pkcs11: failed to load module %s", path)
		}
		m = &module{path: key, ctx: ctx, logins: map[uint]*login{}}
		rand.Read(m.pinKey[:])
		modules[key] = m
	}
	if m.refs == 0 {
		switch err := m.ctx.Initialize(); {
		case err == nil:
			m.initialized = true
		case isCKR(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
			m.initialized = false
		default:
			return nil, fmt.Errorf("pkcs11: failed to initialize module %s: %w", path, err)
		}
	}
	m.refs++
	return m, nil
}

// moduleKey names a library by its real path, so that two spellings of
// one path share one module.
func moduleKey(path string) string {
	key := filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(key); err == nil {
		key = real
	}
	return key
}

// release drops one reference and finalises the library when the last
// user is gone, so that a process which closes every Token leaves no
// PKCS#11 state behind. The library stays loaded: unloading SoftHSM (and
// the OpenSSL it links) from a running process is not safe, and a later
// acquireModule only needs to initialise it again.
func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m.refs <= 0 {
		return
	}
	m.refs--
	if m.refs == 0 && m.initialized {
		// Nothing useful can be done with a failure here: the sessions
		// are already closed and the process goes on either way.
		_ = m.ctx.Finalize()
		m.initialized = false
	}
}

// isCKR reports whether err is the PKCS#11 return value rv.
func isCKR(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}
