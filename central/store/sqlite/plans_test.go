package sqlite_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/store/storetest"
)

// TestListPlansUseIndexes checks with EXPLAIN QUERY PLAN that every page
// query of the console's lists walks an index in the list's order: no
// full table scan and no sort of the whole result.
func TestListPlansUseIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range storetest.PlanQueries() {
		rows, err := s.DB().QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.SQL, q.Args...)
		if err != nil {
			t.Fatalf("%s: %v", q.Name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, l := range plan {
			if l == "SCAN devices" || l == "SCAN events" || strings.Contains(l, "TEMP B-TREE") {
				t.Errorf("%s: %q in plan %q", q.Name, l, plan)
			}
		}
		t.Logf("%s: %s", q.Name, strings.Join(plan, "; "))
	}
}
