-- Session events. A provider may refuse an identity's sign-in until it says otherwise (Google
-- RISC account-disabled for hijacking) and tell that its relay e-mail is off (Apple).
ALTER TABLE identities ADD COLUMN sign_in_blocked_at BIGINT;
ALTER TABLE identities ADD COLUMN email_disabled_at BIGINT;
-- Facebook's data-deletion requests: the status a person can look up by confirmation code.
-- request_hash makes a replayed signed_request answer the same code.
CREATE TABLE deletion_requests (
    code TEXT PRIMARY KEY NOT NULL,
    request_hash TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
-- OpenID Connect Back-Channel Logout: one notice per ended device, written in the transaction
-- that ends it, delivered after commit to the client's backchannel_logout_uri (if it has one).
CREATE TABLE logout_notices (
    device_id TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX logout_notices_due ON logout_notices (next_attempt_at);
-- A console-made client's back-channel logout URI.
ALTER TABLE clients ADD COLUMN backchannel_logout_uri TEXT;
