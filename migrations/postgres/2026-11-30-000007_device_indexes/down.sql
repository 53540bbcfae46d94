DROP INDEX devices_revoked_at;
CREATE INDEX devices_revoked_at ON devices(revoked_at);
CREATE INDEX devices_session_expires_at ON devices(session_expires_at);
