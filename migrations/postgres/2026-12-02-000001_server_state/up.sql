-- Small facts the server keeps about itself across restarts. `access_ttl_max`: the longest
-- access-token lifetime any idbridge of this database has issued with, so a revocation is kept
-- (and loaded at start) for as long as a token it covers can still be valid, whatever
-- `tokens.access_ttl` says now.
CREATE TABLE server_state (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
