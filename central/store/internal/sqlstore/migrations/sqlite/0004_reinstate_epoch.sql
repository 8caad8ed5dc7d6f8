-- The allowlist snapshot carries each device's reinstatement epoch: the
-- allowlist version of its latest 'reinstate' audit entry. This index
-- answers that per device without scanning the audit trail.
CREATE INDEX audit_reinstate ON audit (action, device, allowlist_version);
