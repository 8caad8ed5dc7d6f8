package fleet_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/testkit"
)

// TestPublishedOnceAtStart: an instance that starts publishes its
// version once (snapshot and delta), whether it leads alone or through an
// election, however its first publish races with the broker connection.
func TestPublishedOnceAtStart(t *testing.T) {
	env := brokertest.Mosquitto(t)
	for _, elected := range []bool{false, true} {
		t.Run(map[bool]string{false: "alone", true: "elected"}[elected], func(t *testing.T) {
			for i := range 3 {
				st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), nil)
				if err != nil {
					t.Fatal(err)
				}
				var l fleet.Leader
				if elected {
					sl := &switchLeader{}
					sl.Store(true)
					l = sl
				}
				svc, stop := startInstance(t, env, st, []string{"postern-central", "postern-central-2"}[i%2], l, "")
				testkit.WaitFor(t, 5*time.Second, "first publish", func() bool { return svc.Stats().Published > 0 })
				time.Sleep(time.Second)
				s := svc.Stats()
				stop()
				st.Close()
				if s.Published != 1 || s.Deltas != 1 {
					t.Fatalf("start %d: %d snapshots and %d deltas published for one version", i, s.Published, s.Deltas)
				}
			}
		})
	}
}
