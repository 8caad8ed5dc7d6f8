package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/postern/postern/central/store/postgres"
	"github.com/postern/postern/central/store/storetest"
)

// TestListPlansUseIndexes checks with EXPLAIN (sequential scans, bitmap
// scans and sorts priced out, so that an empty table does not make them
// cheapest) that every page
// query of the console's lists can walk an index in the list's order: a
// plan that still has a Seq Scan has no usable index, one with a Sort Key
// sorts the result.
func TestListPlansUseIndexes(t *testing.T) {
	ctx := context.Background()
	s, err := postgres.Open(ctx, freshSchema(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.DB().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, set := range []string{"SET enable_seqscan = off", "SET enable_sort = off", "SET enable_bitmapscan = off"} {
		if _, err := conn.ExecContext(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range storetest.PlanQueries() {
		rows, err := conn.QueryContext(ctx, "EXPLAIN "+q.SQL, q.Args...)
		if err != nil {
			t.Fatalf("%s: %v", q.Name, err)
		}
		var plan []string
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, strings.TrimSpace(l))
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		if strings.Contains(joined, "Seq Scan") || strings.Contains(joined, "Sort Key") {
			t.Errorf("%s: sequential scan or sort in plan %s", q.Name, joined)
		}
		t.Logf("%s: %s", q.Name, joined)
	}
}
