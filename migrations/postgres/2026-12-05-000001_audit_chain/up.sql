-- The audit log's hash chain (`audit_chain.rs`): a sealer gives each committed event the next
-- `seq` and `hash` = HMAC-SHA-256 over the previous hash and the event, in one transaction
-- with the chain's head below. Unsealed events have neither.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
-- One row: the newest sealed event (`sealed_*`), and where verification starts
-- (`checkpoint_*`: the last event retention removed, or the start).
CREATE TABLE audit_chain (
    id INTEGER PRIMARY KEY,
    sealed_seq BIGINT NOT NULL,
    sealed_hash TEXT NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    checkpoint_hash TEXT NOT NULL
);
INSERT INTO audit_chain (id, sealed_seq, sealed_hash, checkpoint_seq, checkpoint_hash) VALUES (1, 0, '', 0, '');
