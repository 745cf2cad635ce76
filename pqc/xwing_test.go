package pqc

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// TestXWingDraftVectors runs the three vectors from the X-Wing draft; see
// testdata/xwing/README.md for where they come from.
func TestXWingDraftVectors(t *testing.T) {
	data, err := os.ReadFile("testdata/xwing/test-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Seed  hexBytes `json:"seed"`
		SK    hexBytes `json:"sk"`
		PK    hexBytes `json:"pk"`
		ESeed hexBytes `json:"eseed"`
		CT    hexBytes `json:"ct"`
		SS    hexBytes `json:"ss"`
	}
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	k, err := KEMByName(XWing)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vectors {
		pub, priv, err := k.DeriveKey(v.Seed)
		if err != nil {
			t.Fatalf("vector %d: DeriveKey: %v", i, err)
		}
		if !bytes.Equal(pub, v.PK) {
			t.Errorf("vector %d: public key mismatch", i)
		}
		if !bytes.Equal(priv, v.SK) {
			t.Errorf("vector %d: private key mismatch", i)
		}
		ct, ss, err := k.EncapsulateDeterministic(v.PK, v.ESeed)
		if err != nil {
			t.Fatalf("vector %d: EncapsulateDeterministic: %v", i, err)
		}
		if !bytes.Equal(ct, v.CT) {
			t.Errorf("vector %d: ciphertext mismatch", i)
		}
		if !bytes.Equal(ss, v.SS) {
			t.Errorf("vector %d: encapsulated shared secret mismatch", i)
		}
		ss, err = k.Decapsulate(v.SK, v.CT)
		if err != nil {
			t.Fatalf("vector %d: Decapsulate: %v", i, err)
		}
		if !bytes.Equal(ss, v.SS) {
			t.Errorf("vector %d: decapsulated shared secret mismatch", i)
		}
	}
	t.Logf("testdata/xwing/test-vectors.json: ran %d vectors", len(vectors))
	if len(vectors) != 3 {
		t.Errorf("got %d vectors, want the draft's 3", len(vectors))
	}
}
