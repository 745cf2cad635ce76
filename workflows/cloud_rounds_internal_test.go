package workflows

import (
	"slices"
	"testing"
)

// collapseRounds drops queued repeats of the round about to run, but
// never across an undistribute, nor an undistribute across a distribute:
// the last of "distribute, undistribute" asked for is the one that holds.
func TestCollapseRoundsKeepsUndistributeOrder(t *testing.T) {
	r := func(step string, dests ...string) CloudSyncParams {
		return CloudSyncParams{Step: step, Destinations: dests}
	}
	steps := func(q []CloudSyncParams) []string {
		var out []string
		for _, p := range q {
			out = append(out, cloudRoundKey(p))
		}
		return out
	}
	dist, undist, rot := r(CloudStepDistribute, "d"), r(CloudStepUndistribute, "d"), r(CloudStepRotate)
	for _, tc := range []struct {
		name        string
		p           CloudSyncParams
		queue, want []CloudSyncParams
	}{
		{"repeats collapse", rot, []CloudSyncParams{rot, r(CloudStepDisable), rot}, []CloudSyncParams{r(CloudStepDisable)}},
		{"distribute after undistribute stays", dist, []CloudSyncParams{undist, dist}, []CloudSyncParams{undist, dist}},
		{"undistribute after distribute stays", undist, []CloudSyncParams{dist, undist}, []CloudSyncParams{dist, undist}},
		{"undistribute repeats collapse", undist, []CloudSyncParams{undist, rot}, []CloudSyncParams{rot}},
		{"rotation after undistribute stays", rot, []CloudSyncParams{rot, undist, rot}, []CloudSyncParams{undist, rot}},
	} {
		if got := collapseRounds(tc.queue, tc.p); !slices.Equal(steps(got), steps(tc.want)) {
			t.Errorf("%s: got %v, want %v", tc.name, steps(got), steps(tc.want))
		}
	}
}
