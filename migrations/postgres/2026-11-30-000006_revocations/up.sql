-- Devices revoked recently, for the in-memory liveness check of access tokens: every replica
-- loads those revoked within an access token's lifetime, and follows new ones (NOTIFY on
-- PostgreSQL, and a periodic catch-up). A user's deletion records their devices here too.
CREATE TABLE revocations (
    device_id TEXT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX revocations_at ON revocations(at);
