DROP INDEX identities_user_provider;
