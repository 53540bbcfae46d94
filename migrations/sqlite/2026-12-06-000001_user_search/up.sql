-- Search by name and e-mail prefix without plaintext (accounts/search.rs): each user's terms are
-- keyed HMACs of their name words' prefixes and their e-mail local parts' prefixes, padded with
-- random terms to a multiple of 16 so a user's count says little about their name's length.
CREATE TABLE user_search_terms (
    term TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (term, user_id)
);
CREATE INDEX user_search_terms_user ON user_search_terms (user_id);
-- Whether the user's terms are current; a new user, a link or an unlink clears it, and the
-- indexer (housekeeping, and every search first) writes the terms again.
ALTER TABLE users ADD COLUMN search_indexed BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX users_search_pending ON users (id) WHERE search_indexed = 0;
