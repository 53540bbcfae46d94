-- One identity per provider per user: linking a second one is refused, so removing by
-- provider is unambiguous, and two concurrent links cannot both win.
CREATE UNIQUE INDEX identities_user_provider ON identities(user_id, provider);
