-- Central registry schema (PostgreSQL). Times are Unix milliseconds (0: unset).
CREATE TABLE counters (
	name  TEXT PRIMARY KEY,
	value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('allowlist_version', 1);

CREATE TABLE devices (
	name                TEXT PRIMARY KEY,
	ips                 TEXT NOT NULL DEFAULT '',
	owner               TEXT NOT NULL,
	department          TEXT NOT NULL DEFAULT '',
	contact_email       TEXT NOT NULL,
	purpose             TEXT NOT NULL DEFAULT '',
	behind_firewall     BOOLEAN NOT NULL DEFAULT FALSE,
	firewall_accepted   BOOLEAN NOT NULL DEFAULT FALSE,
	messages_per_hour   BIGINT NOT NULL DEFAULT 0,
	recipients_per_hour BIGINT NOT NULL DEFAULT 0,
	status              TEXT NOT NULL,
	status_reason       TEXT NOT NULL DEFAULT '',
	owner_key_hash      TEXT NOT NULL DEFAULT '',
	fcrdns              TEXT NOT NULL DEFAULT '',
	fcrdns_ok           BOOLEAN NOT NULL DEFAULT FALSE,
	expires_at          BIGINT NOT NULL DEFAULT 0,
	created_at          BIGINT NOT NULL,
	updated_at          BIGINT NOT NULL
);
CREATE INDEX devices_status ON devices (status);
CREATE INDEX devices_owner ON devices (owner_key_hash);

CREATE TABLE senders (
	device             TEXT NOT NULL REFERENCES devices (name) ON DELETE CASCADE,
	address            TEXT NOT NULL,
	personal           BOOLEAN NOT NULL DEFAULT FALSE,
	confirm_token_hash TEXT NOT NULL DEFAULT '',
	confirm_sent_at    BIGINT NOT NULL DEFAULT 0,
	confirmed_at       BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (device, address)
);
CREATE INDEX senders_token ON senders (confirm_token_hash);

CREATE TABLE audit (
	id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at                BIGINT NOT NULL,
	actor             TEXT NOT NULL,
	action            TEXT NOT NULL,
	device            TEXT NOT NULL DEFAULT '',
	edge              TEXT NOT NULL DEFAULT '',
	from_status       TEXT NOT NULL DEFAULT '',
	to_status         TEXT NOT NULL DEFAULT '',
	reason            TEXT NOT NULL DEFAULT '',
	allowlist_version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX audit_device ON audit (device, id);
CREATE INDEX audit_edge ON audit (edge, id);

CREATE TABLE events (
	seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id        TEXT NOT NULL UNIQUE,
	edge      TEXT NOT NULL,
	at        BIGINT NOT NULL,
	kind      TEXT NOT NULL,
	device    TEXT NOT NULL DEFAULT '',
	client_ip TEXT NOT NULL DEFAULT '',
	sender    TEXT NOT NULL DEFAULT '',
	recipient TEXT NOT NULL DEFAULT '',
	queue_id  TEXT NOT NULL DEFAULT '',
	reason    TEXT NOT NULL DEFAULT '',
	count     BIGINT NOT NULL DEFAULT 0,
	detail    TEXT NOT NULL DEFAULT '',
	received  BIGINT NOT NULL
);
CREATE INDEX events_device ON events (device, at);
CREATE INDEX events_edge ON events (edge, at);

CREATE TABLE edges (
	id                TEXT PRIMARY KEY,
	name              TEXT NOT NULL DEFAULT '',
	site              TEXT NOT NULL DEFAULT '',
	enrol_token_hash  TEXT NOT NULL DEFAULT '',
	enrol_expires     BIGINT NOT NULL DEFAULT 0,
	enrolled          BOOLEAN NOT NULL DEFAULT FALSE,
	mqtt_username     TEXT NOT NULL DEFAULT '',
	password_hash     TEXT NOT NULL DEFAULT '',
	online            BOOLEAN NOT NULL DEFAULT FALSE,
	last_seen         BIGINT NOT NULL DEFAULT 0,
	allowlist_version BIGINT NOT NULL DEFAULT 0,
	queue_depth       BIGINT NOT NULL DEFAULT 0,
	outbox            BIGINT NOT NULL DEFAULT 0,
	software          TEXT NOT NULL DEFAULT '',
	counters          TEXT NOT NULL DEFAULT '',
	created_at        BIGINT NOT NULL
);
CREATE INDEX edges_token ON edges (enrol_token_hash);
CREATE INDEX edges_username ON edges (mqtt_username);

CREATE TABLE users (
	name          TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL DEFAULT '',
	created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
	id_hash    TEXT PRIMARY KEY,
	username   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
	hash       TEXT PRIMARY KEY,
	username   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
	label      TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL
);
