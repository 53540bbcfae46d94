DROP INDEX users_search_pending;
ALTER TABLE users DROP COLUMN search_indexed;
DROP TABLE user_search_terms;
