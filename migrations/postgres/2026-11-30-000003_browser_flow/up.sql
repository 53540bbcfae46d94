-- Browser sign-ins in flight (RFC 6749 §4.1 through an upstream provider). `id` is also the
-- upstream `state`; `browser_hash` binds the login to the browser's login cookie. Single use.
CREATE TABLE login_states (
    id TEXT PRIMARY KEY NOT NULL,
    browser_hash TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    client_state TEXT,
    scope TEXT NOT NULL,
    nonce TEXT,
    provider TEXT NOT NULL,
    upstream_nonce TEXT,
    upstream_verifier TEXT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX login_states_expires_at ON login_states(expires_at);

-- Authorization codes: only their SHA-256 is stored; single use, 60 s. A used code is kept a
-- while so its reuse revokes the device it made (RFC 6749 §4.1.2). The provider's name and
-- e-mail travel wrapped by the master keyring.
CREATE TABLE authorization_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    profile BYTEA,
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    device_id TEXT
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes(expires_at);
