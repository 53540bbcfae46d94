-- Server secrets that must outlive a master-key rotation (the refresh-successor key, the nonce
-- key, later the blind-index key): random 32-byte keys, wrapped by the master keyring.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Nonces are stateless now (an HMAC); this table records the spent ones until they expire.
DELETE FROM nonces;

-- The retention sweep finds ended devices without a scan.
CREATE INDEX devices_revoked_at ON devices(revoked_at);
CREATE INDEX devices_session_expires_at ON devices(session_expires_at);
