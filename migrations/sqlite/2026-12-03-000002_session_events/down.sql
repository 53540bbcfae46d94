DROP TABLE logout_notices;
DROP TABLE deletion_requests;
ALTER TABLE clients DROP COLUMN backchannel_logout_uri;
ALTER TABLE identities DROP COLUMN email_disabled_at;
ALTER TABLE identities DROP COLUMN sign_in_blocked_at;
