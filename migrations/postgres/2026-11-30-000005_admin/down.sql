DROP INDEX identities_subject;
DROP INDEX audit_events_action;
DROP INDEX audit_events_actor;
DROP INDEX users_created_at;
ALTER TABLE clients DROP COLUMN disabled_at;
DROP TABLE admin_sessions;
