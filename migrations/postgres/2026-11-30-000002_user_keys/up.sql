-- Per-user data-encryption keys: 256 random bits each, stored only wrapped by the master
-- keyring. `wrapped_by` is the wrapping master key's id, for `keys status` and for a
-- resumable `keys rotate-master`.
CREATE TABLE user_keys (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    wrapped BYTEA NOT NULL,
    wrapped_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE INDEX user_keys_wrapped_by ON user_keys(wrapped_by);

-- Personal data at rest, encrypted under the user's key; the plain columns are emptied by the
-- data migration that runs at start. Emails are found through a keyed blind index.
ALTER TABLE users ADD COLUMN display_name_ct TEXT;
ALTER TABLE users ADD COLUMN email_ct TEXT;
ALTER TABLE identities ADD COLUMN email_ct TEXT;
ALTER TABLE identities ADD COLUMN email_index TEXT;
CREATE INDEX identities_email_index ON identities(email_index);
