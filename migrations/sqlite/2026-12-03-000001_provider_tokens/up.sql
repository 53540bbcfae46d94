-- Tokens a provider gave idbridge for a user (Sign in with Apple's refresh token), wrapped by
-- the master keyring (AAD names the row). A row whose user is gone (user_id NULL) waits to be
-- revoked at the provider: revoke_next_at is when the next attempt is due, revoke_attempts how
-- many failed. Rows of a live user have revoke_next_at NULL.
CREATE TABLE provider_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    client_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    revoke_next_at BIGINT,
    revoke_attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX provider_tokens_user ON provider_tokens (user_id);
CREATE INDEX provider_tokens_subject ON provider_tokens (provider, subject);
CREATE INDEX provider_tokens_due ON provider_tokens (revoke_next_at);
