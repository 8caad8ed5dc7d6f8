package spool

import (
	"errors"
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Bucket is a namespaced, durable key-value store inside the spool's Badger
// database, for edge packages that need state across restarts (suspensions
// "susp/", the persisted allowlist "allow/", the event outbox "outbox/").
// Buckets with different prefixes never see each other's keys, even when
// one prefix is a prefix of the other. Writes are group-committed and
// fsynced like spool writes.
type Bucket struct {
	s   *Spool
	pfx string // "k/" + prefix + "\x00"
}

// KV returns the bucket for prefix. The prefix must not contain a NUL
// byte (it separates the prefix from keys); NULs are replaced by "_".
func (s *Spool) KV(prefix string) *Bucket {
	return &Bucket{s: s, pfx: pKV + strings.ReplaceAll(prefix, "\x00", "_") + "\x00"}
}

func (b *Bucket) key(k string) []byte { return []byte(b.pfx + k) }

// Get returns the value of key, or ErrNotFound.
func (b *Bucket) Get(key string) ([]byte, error) {
	var val []byte
	err := b.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(b.key(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: key %q", ErrNotFound, key)
		}
		if err != nil {
			return fmt.Errorf("spool: kv get %q: %w", key, err)
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	return val, err
}

// Set durably stores val under key.
func (b *Bucket) Set(key string, val []byte) error {
	if key == "" {
		return errors.New("spool: kv set: empty key")
	}
	k, v := b.key(key), append([]byte{}, val...)
	err := b.s.submit(&request{
		need: spaceSmall,
		apply: func(*badger.Txn) ([]mutation, error) {
			return []mutation{{key: k, val: v}}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: kv set %q: %w", key, err)
	}
	return nil
}

// Delete durably removes key; deleting a missing key is not an error.
func (b *Bucket) Delete(key string) error {
	k := b.key(key)
	err := b.s.submit(&request{
		need: spaceNone,
		apply: func(*badger.Txn) ([]mutation, error) {
			return []mutation{{key: k, del: true}}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("spool: kv delete %q: %w", key, err)
	}
	return nil
}

// Iterate calls fn for every entry in key order, with the key stripped of
// the bucket prefix. An error from fn stops the walk and is returned.
func (b *Bucket) Iterate(fn func(key string, val []byte) error) error {
	return b.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(b.pfx), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			val, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("spool: kv iterate: %w", err)
			}
			if err := fn(string(item.Key()[len(b.pfx):]), val); err != nil {
				return err
			}
		}
		return nil
	})
}
