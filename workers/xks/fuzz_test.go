package xks

import (
	"strings"
	"testing"

	"github.com/keyflow/keyflow/internal/fuzzseed"
)

// Fuzz targets for what the XKS proxy reads before any key is used: the
// request path and the SigV4 Authorization header. They run without an
// HSM; the request bodies' Base64 and the decryption refusals are covered
// by the kms targets and xks_test.go.

const fuzzPath = "/keystores/ks1/kms/xks/v1/keys/xks-demo/decrypt"

// FuzzRoute: a path the router takes as an operation is exactly
// prefix + /kms/xks/v1/keys/<id>/<op> (or .../health), so a key ID never
// carries a slash and nothing of the path is ignored.
func FuzzRoute(f *testing.F) {
	for _, p := range []string{fuzzPath, "/keystores/ks1/kms/xks/v1/health", "/kms/xks/v1/keys/a/encrypt", "/p/kms/xks/v1/keys//metadata", "/p/kms/xks/v1/keys/a/b/decrypt", "/p/kms/xks/v1/kms/xks/v1/health", "/p/kms/xks/v1/", "/ping"} {
		fuzzseed.Add(f, p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		prefix, op, keyID, ok := route(path)
		if !ok {
			if strings.Contains(path, apiPath+"/") {
				t.Fatalf("%q contains the API path and is not routed", path)
			}
			return
		}
		want := ""
		switch op {
		case "":
			return
		case "health":
			want = prefix + apiPath + "/health"
		default:
			if keyID == "" || strings.Contains(keyID, "/") {
				t.Fatalf("%q routed to key ID %q", path, keyID)
			}
			want = prefix + apiPath + "/keys/" + keyID + "/" + op
		}
		if path != want {
			t.Fatalf("%q routed as %q %q %q, which is the path %q", path, prefix, op, keyID, want)
		}
	})
}
