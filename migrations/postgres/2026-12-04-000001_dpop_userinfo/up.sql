-- DPoP (RFC 9449): the RFC 7638 thumbprint of the key a device is bound to, from its first
-- token request that carried a proof; every refresh of the device needs a proof by that key.
ALTER TABLE devices ADD COLUMN dpop_jkt TEXT;
-- A console-made client that must send DPoP proofs with every token request.
ALTER TABLE clients ADD COLUMN dpop_required BOOLEAN NOT NULL DEFAULT FALSE;
-- UserInfo's email_verified: what the provider said of the e-mail the user was created with.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN;
-- `dpop_jkt` of /oauth/authorize (RFC 9449 §10): the key the code's redemption must prove.
ALTER TABLE login_states ADD COLUMN dpop_jkt TEXT;
ALTER TABLE authorization_codes ADD COLUMN dpop_jkt TEXT;
