package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/postern/postern/central/broker/dynsec"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/store"
)

// DynsecPruneInterval is how often serve deletes the broker accounts of
// edges that are revoked or unknown (a revocation whose deletion failed at
// the time, or one made by another instance or the CLI).
var DynsecPruneInterval = time.Minute

// RestoredTokenLifetime is how long an enrolment token stays usable again
// after its enrolment failed because the broker account could not be made.
const RestoredTokenLifetime = time.Hour

// provisioningEnroller makes each enrolling edge's broker account. The
// token is consumed before the account is made (so two enrolments with one
// token cannot both succeed); when the account cannot be made the
// enrolment fails, no credentials are stored, and the token is put back
// for RestoredTokenLifetime so that the installer can simply retry.
type provisioningEnroller struct {
	fleet.Enroller
	st   store.Store
	prov *dynsec.Provisioner
	log  *slog.Logger

	mu     sync.Mutex
	tokens map[string]string // edge id -> hash of the token being redeemed
}

func newProvisioningEnroller(e fleet.Enroller, st store.Store, p *dynsec.Provisioner, log *slog.Logger) *provisioningEnroller {
	return &provisioningEnroller{Enroller: e, st: st, prov: p, log: log, tokens: map[string]string{}}
}

// RedeemEnrolment implements fleet.Enroller.
func (e *provisioningEnroller) RedeemEnrolment(ctx context.Context, tokenHash string) (string, error) {
	id, err := e.Enroller.RedeemEnrolment(ctx, tokenHash)
	if err == nil {
		e.mu.Lock()
		e.tokens[id] = tokenHash
		e.mu.Unlock()
	}
	return id, err
}

// credentials is fleet.EdgeSettings.OnCredentials: it creates edge id's
// broker account with the password issued at enrolment.
func (e *provisioningEnroller) credentials(ctx context.Context, id, password string) error {
	e.mu.Lock()
	tokenHash := e.tokens[id]
	delete(e.tokens, id)
	e.mu.Unlock()
	err := e.prov.CreateEdge(ctx, id, password)
	if err == nil {
		return nil
	}
	if tokenHash != "" {
		if rerr := e.st.SetEdgeEnrolment(ctx, id, tokenHash, time.Now().Add(RestoredTokenLifetime)); rerr != nil {
			e.log.Error("putting back the enrolment token failed; staff must issue a new one", "edge", id, "err", rerr)
		}
	}
	return fmt.Errorf("broker account of edge %s not created (its enrolment token works again for %v): %w", id, RestoredTokenLifetime, err)
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
