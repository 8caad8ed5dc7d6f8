package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/postern/postern/central/broker/dynsec"
)

// DynsecPruneInterval is how often serve deletes the broker accounts of
// edges that are revoked or unknown (a revocation whose deletion failed at
// the time, or one made by another instance or the CLI).
var DynsecPruneInterval = time.Minute

// provisionAttempts bounds the tries of one enrolment's account creation
// (each waits up to the provisioner's timeout for the broker).
const provisionAttempts = 3

// provisionEdge creates edge id's broker account with the password issued
// at enrolment, retrying briefly; an error fails the enrolment, which then
// stores no credentials.
func provisionEdge(ctx context.Context, p *dynsec.Provisioner, id, password string, log *slog.Logger) error {
	var err error
	for i := range provisionAttempts {
		if err = p.CreateEdge(ctx, id, password); err == nil {
			return nil
		}
		log.Warn("creating the edge's broker account failed", "edge", id, "attempt", i+1, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("broker account of edge %s not created: %w", id, err)
}

// revokeOnBroker deletes edge id's broker account (which disconnects it).
// A failure is logged; pruneBroker retries.
func revokeOnBroker(ctx context.Context, p *dynsec.Provisioner, id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := p.DeleteEdge(ctx, id); err != nil {
		log.Error("deleting the revoked edge's broker account failed; retried every prune interval", "edge", id, "err", err)
	}
}

// pruneBroker deletes, at start and every DynsecPruneInterval, the broker
// accounts of edges that active says are revoked or unknown.
func pruneBroker(ctx context.Context, p *dynsec.Provisioner, active func(ctx context.Context, id string) (bool, error), log *slog.Logger) {
	tick := time.NewTicker(DynsecPruneInterval)
	defer tick.Stop()
	for {
		gone, err := p.Prune(ctx, active)
		if err != nil && ctx.Err() == nil {
			log.Warn("pruning broker accounts of revoked edges failed", "err", err)
		}
		for _, id := range gone {
			log.Info("broker account of revoked edge deleted", "edge", id)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
