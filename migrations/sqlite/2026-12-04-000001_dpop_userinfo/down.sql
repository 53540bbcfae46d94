ALTER TABLE authorization_codes DROP COLUMN dpop_jkt;
ALTER TABLE login_states DROP COLUMN dpop_jkt;
ALTER TABLE users DROP COLUMN email_verified;
ALTER TABLE clients DROP COLUMN dpop_required;
ALTER TABLE devices DROP COLUMN dpop_jkt;
