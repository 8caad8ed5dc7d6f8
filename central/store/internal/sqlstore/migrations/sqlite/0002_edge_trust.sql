-- What an edge may do on its own word: suspension requests staff decide,
-- the evidence that an edge relayed for a device, edge revocation and
-- over-limit accounting, and per-device counters kept beyond event
-- retention.
CREATE TABLE suspension_requests (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	device     TEXT NOT NULL,
	edge       TEXT NOT NULL,
	event_id   TEXT NOT NULL DEFAULT '',
	reason     TEXT NOT NULL DEFAULT '',
	why        TEXT NOT NULL DEFAULT '',
	state      TEXT NOT NULL DEFAULT 'open',
	created_at INTEGER NOT NULL,
	decided_by TEXT NOT NULL DEFAULT '',
	decided_at INTEGER NOT NULL DEFAULT 0,
	decision   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX suspension_requests_state ON suspension_requests (state, id);
CREATE INDEX suspension_requests_device ON suspension_requests (device, edge, state);
CREATE INDEX suspension_requests_event ON suspension_requests (edge, event_id);
CREATE INDEX events_relay ON events (edge, device, kind, received);
CREATE INDEX events_received ON events (received);
CREATE INDEX audit_actor ON audit (actor, action, at);
ALTER TABLE edges ADD COLUMN revoked_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN over_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN over_limit_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN over_limit_reason TEXT NOT NULL DEFAULT '';
CREATE TABLE device_counters (
	device  TEXT NOT NULL,
	kind    TEXT NOT NULL,
	count   INTEGER NOT NULL DEFAULT 0,
	last_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (device, kind)
);
INSERT INTO counters (name, value) VALUES ('events_pruned', 0);
