DROP INDEX identities_email_index;
ALTER TABLE identities DROP COLUMN email_index;
ALTER TABLE identities DROP COLUMN email_ct;
ALTER TABLE users DROP COLUMN email_ct;
ALTER TABLE users DROP COLUMN display_name_ct;
DROP TABLE user_keys;
