// Package app assembles the running central service.
package app

import (
	"context"
	"log/slog"

	"github.com/postern/postern/central/config"
)

// Serve runs central and blocks until ctx is cancelled.
func Serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	log.Info("central placeholder running", "http", cfg.HTTP.Listen)
	<-ctx.Done()
	return nil
}
