package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/broker"
	"github.com/postern/postern/shared/allowlist"
)

// HTTP paths served by Handler (also in docs/CONTRACT.md).
const (
	EnrolPath    = "/api/v1/sync/enroll"
	SnapshotPath = "/api/v1/sync/allowlist"
)

// ErrBadToken is what an Enroller returns for an unknown, used or expired
// token.
var ErrBadToken = errors.New("sync: enrolment token invalid, used or expired")

// Enroller redeems one-time enrolment tokens and records the credentials
// issued to the edge.
type Enroller interface {
	// RedeemEnrolment consumes the token whose HashToken is tokenHash and
	// returns the edge's id; it fails (ErrBadToken) for an unknown, used or
	// expired token.
	RedeemEnrolment(ctx context.Context, tokenHash string) (edgeID string, err error)
	// SetEdgeCredentials stores the MQTT username and password hash
	// (broker.HashPassword) of an edge.
	SetEdgeCredentials(ctx context.Context, edgeID, username, passwordHash string) error
}

// EdgeAuth checks edge credentials (the broker's interface).
type EdgeAuth = broker.EdgeAuth

// EdgeSettings is what enrolment tells every new edge besides its
// credentials.
type EdgeSettings struct {
	// MQTTURL is the broker address edges connect to.
	MQTTURL string
	// CentralURL is central's externally visible base URL.
	CentralURL        string
	HeartbeatInterval time.Duration
	AffiliatedDomains []string
	// OnCredentials, if set, is called with each issued credential (for
	// example to add it to an external broker's password file). An error
	// fails the enrolment.
	OnCredentials func(username, password string) error
}

// EnrolRequest is the body of POST EnrolPath.
type EnrolRequest struct {
	Token string `json:"token"`
}

// EnrolResponse is the answer to a successful enrolment (the edge writes
// it to its data folder).
type EnrolResponse struct {
	EdgeID      string `json:"edge_id"`
	MQTTURL     string `json:"mqtt_url"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	TopicPrefix string `json:"topic_prefix"`
	PublicKey   string `json:"public_key"`
	CentralURL  string `json:"central_url"`
	// Config is the edge's initial configuration from central.
	Config EdgeConfig `json:"config"`
}

// EdgeConfig is the part of an edge's configuration central hands out.
type EdgeConfig struct {
	HeartbeatInterval string   `json:"heartbeat_interval,omitempty"`
	AffiliatedDomains []string `json:"affiliated_domains,omitempty"`
}

// HashToken is the stored form of an enrolment token; it is the same as
// central/auth's (SHA-256, hex), which issues the tokens.
func HashToken(token string) string { return auth.HashToken(token) }

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("sync: crypto/rand: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Handler serves EnrolPath and SnapshotPath. Mount it on central's HTTPS
// server (both paths are under /api/v1/sync/).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+EnrolPath, s.serveEnrol)
	mux.HandleFunc("GET "+SnapshotPath, s.serveSnapshot)
	return mux
}

func (s *Service) serveEnrol(w http.ResponseWriter, r *http.Request) {
	if s.o.Enrol == nil {
		http.Error(w, "enrolment not available", http.StatusServiceUnavailable)
		return
	}
	var req EnrolRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.Token == "" {
		http.Error(w, "body must be {\"token\": \"…\"}", http.StatusBadRequest)
		return
	}
	id, err := s.o.Enrol.RedeemEnrolment(r.Context(), HashToken(req.Token))
	if err != nil {
		s.log.Warn("enrolment refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "enrolment token invalid, used or expired", http.StatusForbidden)
		return
	}
	// The username is the edge id: both brokers' ACLs rely on it.
	password := randomString(32)
	if cb := s.o.Edge.OnCredentials; cb != nil {
		if err := cb(id, password); err != nil {
			s.log.Error("enrolment: broker credentials not provisioned", "edge", id, "err", err)
			// 424, not 5xx: the edge's HTTP client would retry a 5xx
			// and report only that it gave up, losing this message.
			http.Error(w, "enrolment failed: central could not create the edge's account on the MQTT broker, so nothing was enrolled; try again later (central's log has the details)", http.StatusFailedDependency)
			return
		}
	}
	if err := s.o.Enrol.SetEdgeCredentials(r.Context(), id, id, broker.HashPassword(password)); err != nil {
		s.log.Error("enrolment: storing credentials", "edge", id, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	resp := EnrolResponse{
		EdgeID:      id,
		MQTTURL:     s.o.Edge.MQTTURL,
		Username:    id,
		Password:    password,
		TopicPrefix: s.o.Topics.Prefix(),
		PublicKey:   allowlist.EncodePublicKey(s.PublicKey()),
		CentralURL:  s.o.Edge.CentralURL,
		Config:      EdgeConfig{AffiliatedDomains: s.o.Edge.AffiliatedDomains},
	}
	if s.o.Edge.HeartbeatInterval > 0 {
		resp.Config.HeartbeatInterval = s.o.Edge.HeartbeatInterval.String()
	}
	s.log.Info("edge enrolled", "edge", id, "remote", r.RemoteAddr)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Service) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	user, pw, ok := r.BasicAuth()
	if !ok || s.o.Auth == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="postern-edge"`)
		http.Error(w, "edge credentials required", http.StatusUnauthorized)
		return
	}
	hash, err := s.o.Auth.EdgePasswordHash(r.Context(), user)
	if err != nil || !broker.CheckPassword(hash, pw) {
		s.log.Warn("snapshot fetch refused", "username", user, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Basic realm="postern-edge"`)
		http.Error(w, "edge credentials required", http.StatusUnauthorized)
		return
	}
	wire, etag, _ := s.Current()
	if wire == nil {
		http.Error(w, "no snapshot yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.postern.allowlist")
	_, _ = w.Write(wire)
}
