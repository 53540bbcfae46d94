-- Admin console sessions: server-side, so they can be ended. The cookie holds a random
-- token; only its SHA-256 is stored. A session rides on a device of the admin (made by the
-- sign-in through the browser flow), so revoking that device, the admin role or the user
-- ends it.
CREATE TABLE admin_sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_user_id ON admin_sessions(user_id);
CREATE INDEX admin_sessions_device_id ON admin_sessions(device_id);
CREATE INDEX admin_sessions_expires_at ON admin_sessions(expires_at);

-- Clients made in the admin console can be disabled.
ALTER TABLE clients ADD COLUMN disabled_at BIGINT;

-- The users list pages newest first; the audit log filters by actor and action.
CREATE INDEX users_created_at ON users(created_at, id);
CREATE INDEX audit_events_actor ON audit_events(actor, at);
CREATE INDEX audit_events_action ON audit_events(action, at);
CREATE INDEX identities_subject ON identities(subject);
