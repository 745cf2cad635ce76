package cluster

import "testing"

func TestLabSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of processes")
	}
	lab := startLab(t, startTemporalStandIn(t))
	t.Log(lab.CLIEnv())
}
