-- Owner notices sent (at most once per device, kind and key: the key of
-- an expiry reminder is the expiry it is about, so a renewal earns new
-- ones), per-day event counts for charts (device '*' is every event,
-- device '' is unregistered clients), five-minute samples of each edge's
-- queue, and the indexes the owner pages read with.
CREATE TABLE owner_notices (
	device  TEXT NOT NULL,
	kind    TEXT NOT NULL,
	nkey    TEXT NOT NULL,
	sent_at INTEGER NOT NULL,
	PRIMARY KEY (device, kind, nkey)
);

CREATE TABLE event_days (
	device TEXT NOT NULL,
	day    INTEGER NOT NULL,
	kind   TEXT NOT NULL,
	n      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (device, day, kind)
);
INSERT INTO event_days (device, day, kind, n)
	SELECT device, (at / 86400000) * 86400000, kind, SUM(CASE WHEN count > 0 THEN count ELSE 1 END) FROM events
	GROUP BY device, (at / 86400000) * 86400000, kind;
INSERT INTO event_days (device, day, kind, n)
	SELECT '*', (at / 86400000) * 86400000, kind, SUM(CASE WHEN count > 0 THEN count ELSE 1 END) FROM events
	GROUP BY (at / 86400000) * 86400000, kind;

CREATE TABLE edge_samples (
	edge        TEXT NOT NULL,
	slot        INTEGER NOT NULL,
	queue_depth INTEGER NOT NULL DEFAULT 0,
	outbox      INTEGER NOT NULL DEFAULT 0,
	online      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (edge, slot)
);

CREATE INDEX IF NOT EXISTS events_device_kind_at ON events (device, kind, at);
