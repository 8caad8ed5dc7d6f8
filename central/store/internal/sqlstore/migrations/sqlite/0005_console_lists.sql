-- Staff console lists. Devices get a natural sort key (digit runs compare
-- as numbers: dev2 before dev10), filled from the name by the store, and
-- indexes for each sort order and filter of the device list. Events get
-- the indexes of the message-trace filters (each with the time, newest
-- first), the audit log one for its action filter. Revoked registrations
-- are archived when the name is requested again, so the old registration
-- stays readable while the name is free.
ALTER TABLE devices ADD COLUMN sort_key TEXT NOT NULL DEFAULT '';
CREATE INDEX devices_sort ON devices (sort_key, name);
CREATE INDEX devices_status_sort ON devices (status, sort_key, name);
CREATE INDEX devices_created ON devices (created_at, name);
CREATE INDEX devices_status_created ON devices (status, created_at, name);
CREATE INDEX devices_expires ON devices (expires_at, name);
CREATE INDEX devices_status_expires ON devices (status, expires_at, name);
CREATE INDEX devices_department ON devices (department, sort_key, name);
CREATE INDEX devices_owner_sort ON devices (owner, sort_key, name);
CREATE INDEX devices_dns ON devices (fcrdns_ok, sort_key, name);

CREATE INDEX events_at ON events (at);
CREATE INDEX events_client ON events (client_ip, at);
CREATE INDEX events_kind ON events (kind, at);
CREATE INDEX events_sender ON events (lower(sender), at);
CREATE INDEX events_recipient ON events (lower(recipient), at);

CREATE INDEX audit_action ON audit (action, id);

CREATE TABLE device_archive (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	name          TEXT NOT NULL,
	archived_at   INTEGER NOT NULL,
	ips           TEXT NOT NULL DEFAULT '',
	owner         TEXT NOT NULL DEFAULT '',
	department    TEXT NOT NULL DEFAULT '',
	contact_email TEXT NOT NULL DEFAULT '',
	purpose       TEXT NOT NULL DEFAULT '',
	senders       TEXT NOT NULL DEFAULT '',
	status        TEXT NOT NULL DEFAULT '',
	status_reason TEXT NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX device_archive_name ON device_archive (name, id);

-- A sender added by staff editing a registration stays out of the
-- allowlist until it confirms its address.
ALTER TABLE senders ADD COLUMN added_later INTEGER NOT NULL DEFAULT 0;
