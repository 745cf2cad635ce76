package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The multi-region proof of issue 15 with two separate deployments: two
// `keyflow dev` processes, each with its own data directory (so its own
// SoftHSM token and root key, embedded NATS with its own JetStream domain,
// and embedded Temporal), linked the way docs/multi-region.md tells an
// operator: `keyflow region link` on both sides, the hub's
// region-link.creds handed to the other side, a plain `keyflow dev`. Every
// step is a CLI command, as a user would type it.

// mrKey is `key describe` of a multi-region key.
type mrKey struct {
	keyMetadata
	MultiRegion   bool   `json:"multiRegion"`
	PrimaryRegion string `json:"primaryRegion"`
	Replicas      []struct {
		Region            string `json:"region"`
		State             string `json:"state"`
		LastSyncedVersion int    `json:"lastSyncedVersion"`
	} `json:"replicas"`
}

// replica returns the key's replica in region (state "" when none).
func (k mrKey) replica(region string) (state string, synced int) {
	for _, r := range k.Replicas {
		if r.Region == region {
			return r.State, r.LastSyncedVersion
		}
	}
	return "", 0
}

func (k mrKey) versions() []int {
	var v []int
	for _, kv := range k.Versions {
		v = append(v, kv.Version)
	}
	return v
}

// describeMR describes key in s; ok is false when s does not know it.
func describeMR(t *testing.T, s *stack, key string) (k mrKey, ok bool) {
	t.Helper()
	r := s.kf(t, "", "key", "describe", key)
	if r.code != 0 {
		return k, false
	}
	decodeJSON(t, r, &k)
	return k, true
}

// encryptMR encrypts pt under key in s and returns the ciphertext and the
// version it was made with.
func encryptMR(t *testing.T, s *stack, key, pt string) (ct string, version int) {
	t.Helper()
	var out struct {
		KeyVersion     int    `json:"keyVersion"`
		CiphertextBlob string `json:"ciphertextBlob"`
	}
	decodeJSON(t, mustOK(t, s.kf(t, pt, "encrypt", "--key", key, "-o", "json")), &out)
	return out.CiphertextBlob, out.KeyVersion
}

// mustDecrypt checks that s decrypts ct to want.
func mustDecrypt(t *testing.T, s *stack, where, ct, want string) {
	t.Helper()
	if got := mustOK(t, s.kf(t, ct, "decrypt")).stdout; got != want {
		t.Fatalf("%s decrypted %q, want %q", where, got, want)
	}
}

// replicatedTo reports whether key's describe in the primary s shows its
// replica in region ACTIVE with last synced version v.
func replicatedTo(t *testing.T, s *stack, key, region string, v int) func() bool {
	return func() bool {
		k, _ := describeMR(t, s, key)
		st, synced := k.replica(region)
		return st == "ACTIVE" && synced == v
	}
}

// rotateAndReach rotates key in primary, checks that it made version
// want, and waits until replica (in region) encrypts with it and the
// primary's describe shows region at it. It returns the time from the
// rotate command to the replica's first encryption under the version.
func rotateAndReach(t *testing.T, primary, replica *stack, region, key string, want int) time.Duration {
	t.Helper()
	start := time.Now()
	var rot rotateResult
	decodeJSON(t, mustOK(t, primary.kf(t, "", "key", "rotate", key, "-o", "json")), &rot)
	if rot.NewVersion != want {
		t.Fatalf("rotation made version %d, want %d", rot.NewVersion, want)
	}
	if !waitFor(t, 60*time.Second, func() bool { _, v := encryptMR(t, replica, key, "x"); return v == want }) {
		t.Fatalf("%s does not encrypt with version %d", region, want)
	}
	took := time.Since(start)
	if !waitFor(t, 30*time.Second, replicatedTo(t, primary, key, region, want)) {
		k, _ := describeMR(t, primary, key)
		t.Fatalf("the primary does not show %s at version %d: %+v", region, want, k)
	}
	return took
}

// trailOf reads key's audit records in s as an operator would, with
// `audit tail --key KEY` and any more flags (--type GLOB).
func trailOf(t *testing.T, s *stack, key string, flags ...string) []cloudEvent {
	t.Helper()
	r := mustOK(t, s.kf(t, "", append([]string{"audit", "tail", "--key", key}, flags...)...))
	var evs []cloudEvent
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		var e cloudEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v\n%s", err, line)
		}
		evs = append(evs, e)
	}
	return evs
}

// replicaRecords are key's multi-region records in s, read with
// `audit tail --type 'io.keyflow.key.replica.*'` (docs/multi-region.md).
func replicaRecords(t *testing.T, s *stack, key string) []cloudEvent {
	t.Helper()
	evs := trailOf(t, s, key, "--type", "io.keyflow.key.replica.*")
	for _, e := range evs {
		if !strings.HasPrefix(e.Type, "io.keyflow.key.replica.") {
			t.Fatalf("audit tail --type io.keyflow.key.replica.* printed a %s record", e.Type)
		}
	}
	return evs
}

// recordVersions lists the "version" of every successful record of typ,
// in trail order.
func recordVersions(t *testing.T, evs []cloudEvent, typ string) []int {
	t.Helper()
	var vs []int
	for _, e := range evs {
		if e.Type != typ || e.Outcome != "success" {
			continue
		}
		var d struct {
			Version int `json:"version"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatalf("%s data: %v", typ, err)
		}
		vs = append(vs, d.Version)
	}
	return vs
}

// seq is from..to.
func seq(from, to int) []int {
	var v []int
	for i := from; i <= to; i++ {
		v = append(v, i)
	}
	return v
}

// TestMultiRegionTwoDeployments: replication both ways, rotation, a cut
// link and its catch-up, failover and the refusals, across two keyflow
// dev processes linked by a NATS leaf node (docs/multi-region.md).
func TestMultiRegionTwoDeployments(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	kfIn := func(dir string, args ...string) result {
		t.Helper()
		return runKF(t, cliEnv("", dir), "", args...)
	}

	// The switch timeout must be positive (checked before anything starts).
	expectFailure(t, kfIn(dirA, "dev", "--replica-switch-timeout", "0s"), 2, "UsageError")

	// Region A (us-east) accepts links. A short switch timeout lets A's
	// rotations during the cut below switch after seconds, not minutes.
	mustOK(t, kfIn(dirA, "region", "link", "--region", "us-east", "--leaf-listen", "127.0.0.1:0"))
	a := startStack(t, dirA, "127.0.0.1:0", "127.0.0.1:0", "--replica-switch-timeout", "4s")
	var leafURL, hubCreds string
	for _, line := range strings.Split(a.stdout.String(), "\n") {
		if !strings.HasPrefix(line, "keyflow region=us-east link ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok && k == "endpoint" {
				leafURL = v
			} else if ok && k == "creds" {
				hubCreds = v
			}
		}
	}
	if !strings.HasPrefix(leafURL, "nats-leaf://127.0.0.1:") || hubCreds != filepath.Join(dirA, "region-link.creds") {
		t.Fatalf("A's region line: endpoint %q creds %q\nstdout:\n%s", leafURL, hubCreds, a.stdout)
	}
	fileMode(t, hubCreds, 0o600)
	// The creds travel out of band to B's operator.
	linkCreds := filepath.Join(t.TempDir(), "us-east-link.creds")
	b, err := os.ReadFile(hubCreds)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(linkCreds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	linkB := func() {
		t.Helper()
		var s struct{ Region, LinkTo, LinkCreds string }
		decodeJSON(t, mustOK(t, kfIn(dirB, "region", "link", "--region", "eu-west", "--to", leafURL, "--creds", linkCreds)), &s)
		if s.Region != "eu-west" || s.LinkTo != leafURL || s.LinkCreds != linkCreds {
			t.Fatalf("region link saved %+v", s)
		}
	}
	linkB()
	bst := startStack(t, dirB, "127.0.0.1:0", "127.0.0.1:0")

	// A multi-region key in A, replicated to B.
	kid := strings.TrimSpace(mustOK(t, a.kf(t, "", "key", "create", "--multi-region", "--alias", "orders", "-o", "raw")).stdout)
	mustOK(t, a.kf(t, "", "key", "replicate", kid, "--region", "eu-west"))
	replicated := func(s *stack, region string, v int) func() bool { return replicatedTo(t, s, kid, region, v) }
	if !waitFor(t, 60*time.Second, replicated(a, "eu-west", 1)) {
		k, _ := describeMR(t, a, kid)
		t.Fatalf("eu-west did not get version 1: %+v\nA stderr:\n%s\nB stderr:\n%s", k, a.stderr, bst.stderr)
	}
	rk, ok := describeMR(t, bst, kid)
	if !ok || rk.KeyID != kid || !rk.MultiRegion || rk.PrimaryRegion != "us-east" || !slices.Equal(rk.versions(), []int{1}) {
		t.Fatalf("B's replica: %+v (found %v)", rk, ok)
	}

	// Both ways: each region decrypts the other's ciphertext with no call
	// across (the same key ID, the same material under different roots).
	ctA1, _ := encryptMR(t, a, kid, "made in us-east")
	mustDecrypt(t, bst, "B", ctA1, "made in us-east")
	ctB1, _ := encryptMR(t, bst, kid, "made in eu-west")
	mustDecrypt(t, a, "A", ctB1, "made in eu-west")

	// Refusals: the replica does not rotate (a stable code, and the
	// refusal on B's trail); a key that is not replicated does not exist
	// in B, and its ciphertext gets B's one generic decryption error.
	expectFailure(t, bst.kf(t, "", "key", "rotate", kid), 1, "UnsupportedOperationException")
	if !slices.ContainsFunc(trailOf(t, bst, kid), func(e cloudEvent) bool {
		return e.Type == "io.keyflow.key.rotation.started.v1" && e.Outcome == "failure" && e.ErrorCode == "UnsupportedOperationException"
	}) {
		t.Error("B's trail has no refused rotation of the replica (rotation.started, failure, UnsupportedOperationException)")
	}
	local := strings.TrimSpace(mustOK(t, a.kf(t, "", "key", "create", "--alias", "local-only", "-o", "raw")).stdout)
	expectFailure(t, bst.kf(t, "", "key", "describe", local), 1, "NotFoundException")
	expectFailure(t, bst.kf(t, "", "key", "describe", "alias/local-only"), 1, "NotFoundException")
	localCT, _ := encryptMR(t, a, local, "stays in us-east")
	expectFailure(t, bst.kf(t, localCT, "decrypt"), 1, "InvalidCiphertextException")
	expectFailure(t, a.kf(t, "", "key", "replicate", local, "--region", "eu-west"), 1, "UnsupportedOperationException")

	// Rotation in A reaches B: B encrypts with the new version and
	// decrypts A's ciphertext under it; A's describe shows B's last synced
	// version. Timed from the rotate command to B's first encryption
	// under the new version.
	var lat []time.Duration
	version := 1
	for range 3 {
		version++
		lat = append(lat, rotateAndReach(t, a, bst, "eu-west", kid, version))
	}
	ctA, v := encryptMR(t, a, kid, "rotated in us-east")
	if v != version {
		t.Fatalf("A encrypted with version %d, want %d", v, version)
	}
	mustDecrypt(t, bst, "B", ctA, "rotated in us-east")
	slices.Sort(lat)
	t.Logf("FIGURE two processes: rotation in us-east until eu-west encrypts with the new version: p50 %v (n=%d, min %v, max %v)",
		lat[len(lat)/2].Round(time.Millisecond), len(lat), lat[0].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))

	// A cut link, the documented way: B's operator unlinks and restarts
	// B's dev stack, which then runs without the leaf connection.
	appliedBefore := recordVersions(t, replicaRecords(t, bst, kid), "io.keyflow.key.replica.applied.v1")
	if !slices.Equal(appliedBefore, seq(1, version)) {
		t.Fatalf("B applied %v before the cut, want %v", appliedBefore, seq(1, version))
	}
	var shown struct{ Region, LinkTo string }
	decodeJSON(t, mustOK(t, kfIn(dirB, "region", "unlink")), &shown)
	if shown.Region != "eu-west" || shown.LinkTo != "" {
		t.Fatalf("region unlink left %+v", shown)
	}
	bst.stop(t)
	bst = startStack(t, dirB, "127.0.0.1:0", "127.0.0.1:0")
	cutVersion := version

	// B serves on: it encrypts with the version it has and decrypts its
	// own and A's earlier ciphertexts.
	ctCut, v := encryptMR(t, bst, kid, "during the cut")
	if v != cutVersion {
		t.Fatalf("B encrypted with version %d during the cut, want %d", v, cutVersion)
	}
	mustDecrypt(t, bst, "B during the cut", ctCut, "during the cut")
	mustDecrypt(t, bst, "B during the cut", ctA, "rotated in us-east")
	mustDecrypt(t, bst, "B during the cut", ctA1, "made in us-east")

	// A rotates twice; each rotation switches after the timeout and
	// records eu-west as lagging.
	var made []int
	var cutCTs []string
	for range 2 {
		start := time.Now()
		var rot rotateResult
		decodeJSON(t, mustOK(t, a.kf(t, "", "key", "rotate", kid, "-o", "json")), &rot)
		made = append(made, rot.NewVersion)
		ct, v := encryptMR(t, a, kid, "made in us-east during the cut")
		if v != rot.NewVersion {
			t.Fatalf("A encrypted with version %d after rotating to %d", v, rot.NewVersion)
		}
		cutCTs = append(cutCTs, ct)
		t.Logf("rotation to version %d during the cut took %v", rot.NewVersion, time.Since(start).Round(time.Millisecond))
	}
	if !slices.Equal(made, seq(cutVersion+1, cutVersion+2)) {
		t.Fatalf("A's rotations during the cut made %v", made)
	}
	ak, _ := describeMR(t, a, kid)
	if _, synced := ak.replica("eu-west"); synced != cutVersion {
		t.Errorf("A shows eu-west at version %d during the cut, want %d", synced, cutVersion)
	}
	if lagging := recordVersions(t, replicaRecords(t, a, kid), "io.keyflow.key.replica.lagging.v1"); !slices.Equal(lagging, made) {
		t.Errorf("A's replica.lagging records are for versions %v, want %v", lagging, made)
	}
	if !hasEvent(replicaRecords(t, a, kid), "io.keyflow.key.replica.lagging.v1", "success", map[string]any{"regions": []string{"eu-west"}}) {
		t.Errorf("A's replica.lagging records do not name eu-west")
	}
	rk, _ = describeMR(t, bst, kid)
	if !slices.Equal(rk.versions(), seq(1, cutVersion)) || rk.PrimaryVersion != cutVersion {
		t.Fatalf("B changed during the cut: versions %v, primary %d", rk.versions(), rk.PrimaryVersion)
	}
	// The cut is real: B cannot decrypt what A made under the new versions.
	expectFailure(t, bst.kf(t, cutCTs[0], "decrypt"), 1, "InvalidCiphertextException")

	// The link returns: B's operator links again and restarts. B catches
	// up exactly those two versions, in order, with one record each.
	linkB()
	bst.stop(t)
	restored := time.Now()
	bst = startStack(t, dirB, "127.0.0.1:0", "127.0.0.1:0")
	if !waitFor(t, 90*time.Second, func() bool {
		k, _ := describeMR(t, bst, kid)
		return k.PrimaryVersion == made[1] && slices.Equal(k.versions(), seq(1, made[1]))
	}) {
		k, _ := describeMR(t, bst, kid)
		t.Fatalf("B did not catch up: versions %v, primary %d\nA stderr:\n%s\nB stderr:\n%s", k.versions(), k.PrimaryVersion, a.stderr, bst.stderr)
	}
	t.Logf("FIGURE two processes: catch-up after a cut of %d versions: %v from B's ready line (%v from its restart with the link)",
		len(made), (time.Since(restored) - bst.startup).Round(time.Millisecond), time.Since(restored).Round(time.Millisecond))
	applied := recordVersions(t, replicaRecords(t, bst, kid), "io.keyflow.key.replica.applied.v1")
	if got := applied[len(appliedBefore):]; !slices.Equal(got, made) {
		t.Fatalf("B applied %v after the cut, want exactly %v (whole trail %v)", got, made, applied)
	}
	for _, ct := range cutCTs {
		mustDecrypt(t, bst, "B after the cut", ct, "made in us-east during the cut")
	}
	mustDecrypt(t, a, "A", ctCut, "during the cut")
	if !waitFor(t, 30*time.Second, replicated(a, "eu-west", made[1])) {
		k, _ := describeMR(t, a, kid)
		t.Fatalf("A does not show eu-west at version %d: %+v", made[1], k)
	}
	if synced := recordVersions(t, replicaRecords(t, a, kid), "io.keyflow.key.replica.synced.v1"); !slices.Equal(synced, seq(1, made[1])) {
		t.Errorf("A's replica.synced records are for versions %v, want one each for %v", synced, seq(1, made[1]))
	}
	version = made[1]

	// Failover: B becomes the primary; a rotation in B reaches A, and A,
	// now a replica, refuses to rotate.
	var moved mrKey
	decodeJSON(t, mustOK(t, a.kf(t, "", "key", "update-primary-region", kid, "--region", "eu-west")), &moved)
	if moved.PrimaryRegion != "eu-west" {
		t.Fatalf("update-primary-region: %+v", moved)
	}
	if !waitFor(t, 60*time.Second, func() bool { k, _ := describeMR(t, bst, kid); return k.PrimaryRegion == "eu-west" }) {
		t.Fatal("B did not become the primary")
	}
	version++
	t.Logf("two processes: rotation in eu-west until us-east encrypts with the new version: %v",
		rotateAndReach(t, bst, a, "us-east", kid, version).Round(time.Millisecond))
	ctB, _ := encryptMR(t, bst, kid, "rotated in eu-west")
	mustDecrypt(t, a, "A", ctB, "rotated in eu-west")
	expectFailure(t, a.kf(t, "", "key", "rotate", kid), 1, "UnsupportedOperationException")
}
