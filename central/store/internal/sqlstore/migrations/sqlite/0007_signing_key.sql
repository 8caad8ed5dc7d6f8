-- Settings every central instance must agree on, by name. The allowlist
-- signing key's public half is pinned here by the first instance to start,
-- so an instance with another key (edges would reject its snapshots)
-- refuses to start instead of publishing.
CREATE TABLE central_settings (
	name TEXT PRIMARY KEY,
	value TEXT NOT NULL,
	set_at BIGINT NOT NULL
);
