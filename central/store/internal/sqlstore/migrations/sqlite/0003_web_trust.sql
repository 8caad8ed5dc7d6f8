-- API tokens get a public id (for listing and revoking), a scope and an
-- expiry (0: none, for tokens made before this migration). Each public
-- registration records the client address it came from, for the cap on
-- pending requests per address.
ALTER TABLE api_tokens ADD COLUMN id TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'read-write';
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE api_tokens SET id = substr(hash, 1, 16);
CREATE UNIQUE INDEX api_tokens_id ON api_tokens (id);

CREATE TABLE device_requests (
	device     TEXT PRIMARY KEY REFERENCES devices (name) ON DELETE CASCADE,
	client_ip  TEXT NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE INDEX device_requests_ip ON device_requests (client_ip);
CREATE INDEX sessions_user ON sessions (username);
