-- idbridge schema (PostgreSQL). Times are unix seconds; ids are UUID text.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    display_name TEXT,
    email TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_at BIGINT
);

CREATE TABLE identities (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT,
    linked_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    UNIQUE (provider, subject)
);
CREATE INDEX identities_user_id ON identities(user_id);

-- Clients added at run time (the admin UI); clients from the config file live in memory.
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    idp TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT,
    platform TEXT,
    user_agent TEXT,
    ip TEXT,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    session_expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX devices_user_id ON devices(user_id);

-- Only hashes are stored. `successor_hash` is set when a token is spent; `parent_id` links the chain.
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    parent_id TEXT,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at BIGINT,
    successor_hash TEXT
);
CREATE INDEX refresh_tokens_device_id ON refresh_tokens(device_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens(expires_at);

-- Private parts are wrapped by the master keyring (XChaCha20-Poly1305, kid as associated data).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    alg TEXT NOT NULL,
    private_key_wrapped BYTEA NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activates_at BIGINT NOT NULL
);

CREATE TABLE used_assertions (
    assertion_hash TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_assertions_expires_at ON used_assertions(expires_at);

CREATE TABLE nonces (
    nonce TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX nonces_expires_at ON nonces(expires_at);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT,
    device_id TEXT,
    ip TEXT,
    user_agent TEXT,
    detail TEXT
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_user_id ON audit_events(user_id);
