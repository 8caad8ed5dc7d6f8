package registration

import (
	"errors"
	"net/http"

	"github.com/postern/postern/central/store"
)

// HTTPStatus is the HTTP status for an error of the registry or the store,
// the one mapping the web console and the API share: 404 for what does
// not exist (device, request, action), 409 for what the current state
// does not allow (lifecycle, unconfirmed senders, duplicates), 422 for bad
// input, 500 for anything else.
func HTTPStatus(err error) int {
	if errors.Is(err, ErrUnacknowledged) {
		return http.StatusConflict
	}
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, store.ErrNotFound), errors.Is(err, ErrUnknownAction), errors.Is(err, ErrBadDecision):
		return http.StatusNotFound
	case errors.Is(err, store.ErrTransition), errors.Is(err, store.ErrExists), errors.Is(err, ErrUnconfirmed),
		errors.Is(err, ErrRenewTooEarly), errors.Is(err, ErrNotOwnerAction):
		return http.StatusConflict
	case errors.Is(err, ErrReasonRequired), errors.Is(err, ErrReasonTooLong), errors.Is(err, ErrLimitRange), errors.Is(err, ErrReservedEdgeID):
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}
