package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/store/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() store.Store {
		path := filepath.Join(t.TempDir(), sqlite.FileName)
		return func() store.Store {
			s, err := sqlite.Open(context.Background(), path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// TestReopen checks that migrations are applied once and data survives.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), sqlite.FileName)
	s, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.User(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
}
