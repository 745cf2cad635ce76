package pkcs11

import (
	"context"
	"errors"
	"os"
	"time"
)

// Config says which token to open and how.
type Config struct {
	// Module is the path of the PKCS#11 library. Empty means
	// DefaultModule().
	Module string
	// TokenLabel selects the token. Slot numbers are not stable, labels
	// are.
	TokenLabel string
	// PIN is the user PIN. It is never logged nor put in an error. The
	// Token keeps it in memory, to log in again if the device drops the
	// login (a token removed and reinserted).
	PIN string
	// Sessions is the size of the session pool; 0 means 4. More than
	// about two sessions adds no AES-GCM throughput on SoftHSM, but a
	// few more keep slow operations (unwraps, token writes) from
	// starving fast ones.
	Sessions int
	// Observe, when set, is told of every operation on the token: its
	// name (a constant such as "decrypt"), how long it took with the
	// wait for a session, and its error (metrics).
	Observe func(op string, d time.Duration, err error)
	// Trace, when set, is called as every operation starts, with the
	// request's context and the operation's name; it returns the context
	// the operation runs in and a function told of its end (a tracing
	// span; this package knows nothing of the tracer).
	Trace func(ctx context.Context, op string) (context.Context, func(err error))
}

// ModuleEnv names the environment variable that overrides the PKCS#11
// library path.
const ModuleEnv = "KEYFLOW_PKCS11_MODULE"

const defaultSessions = 4

// softHSMPaths are where Debian and its derivatives install SoftHSM2.
var softHSMPaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
}

// DefaultModule returns the PKCS#11 library to use when Config.Module is
// empty: $KEYFLOW_PKCS11_MODULE if set, else the first SoftHSM2 library
// that exists. It returns "" if there is none.
func DefaultModule() string {
	if m := os.Getenv(ModuleEnv); m != "" {
		return m
	}
	for _, p := range softHSMPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// ErrTokenExists is returned (wrapped) by InitToken when a token with the
// requested label already exists.
var ErrTokenExists = errors.New("pkcs11: token already exists")

// maxLabelLen is the size of CK_TOKEN_INFO.label; PKCS#11 pads shorter
// labels with spaces, so trailing spaces cannot round-trip either.
const maxLabelLen = 32

func validTokenLabel(label string) bool {
	return label != "" && len(label) <= maxLabelLen && label[len(label)-1] != ' '
}
