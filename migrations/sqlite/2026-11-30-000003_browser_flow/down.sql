DROP TABLE authorization_codes;
DROP TABLE login_states;
