-- Live-device conditions (`revoked_at IS NULL`, `session_expires_at > now`) match nearly every
-- row: an index on them only tempts the planner into bitmap scans of the whole table (seen on
-- PostgreSQL's generic plans for the per-user device count). The sweep, which looks for the
-- few ended devices, keeps a partial index for revoked ones and scans for expired sessions.
DROP INDEX devices_revoked_at;
DROP INDEX devices_session_expires_at;
CREATE INDEX devices_revoked_at ON devices(revoked_at) WHERE revoked_at IS NOT NULL;
