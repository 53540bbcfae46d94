DROP INDEX devices_session_expires_at;
DROP INDEX devices_revoked_at;
DROP TABLE server_secrets;
