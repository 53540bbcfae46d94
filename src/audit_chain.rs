//! The audit log's hash chain: tamper evidence for `audit_events`.
//!
//! Events are written unsealed, inside the transactions that make the changes they record, so
//! writing one costs a sign-in nothing more than the row. Shortly after they commit, a sealer
//! (every second on each replica) gives them the next sequence numbers and links each to the
//! one before. It reads and hashes on a reading connection ([`link_pending`]); the write
//! ([`Links::store`]) moves the head only from where the links began, so of two sealers one
//! wins and the other computes again on its next tick:
//! `hash(n) = base64url(HMAC-SHA-256(key, hash(n-1) ‖ event n))`, where the event is its
//! sequence number and every column, as JSON. The key is a server secret, stored only wrapped
//! by the master key, so someone holding the database alone cannot recompute the chain: an
//! altered, removed or reordered sealed event, or one put in with a made-up `seq` and `hash`,
//! is found by [`verify`]. The head row keeps the newest sealed `seq` and `hash`, so removing
//! the newest events is found too, unless the head is rolled back with them (keep the head
//! `audit verify` prints somewhere else to catch that).
//!
//! Retention ([`prune`]) removes the oldest sealed events and moves the checkpoint, the `seq`
//! and `hash` verification starts from, in the same transaction.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::server_secrets::ServerSecret;
use crate::db::schema::{audit_chain, audit_events};
use crate::db::{DbConnection, DbError};

/// Events sealed per transaction by [`seal_all`] (the command line).
const SEAL_BATCH: i64 = 500;
/// Events read per query while verifying or exporting.
const PAGE: i64 = 1000;

/// An event as the chain covers it: every column.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = audit_events)]
pub struct Event {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
    pub seq: Option<i64>,
    pub hash: Option<String>,
}

/// A Unix time as RFC 3339 (`2026-12-03T10:00:00Z`).
pub fn rfc3339(at: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

impl Event {
    /// The event as `idbridge audit export` writes it: one JSON object.
    pub fn json_line(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "at": rfc3339(self.at), "action": self.action, "actor": self.actor,
            "user_id": self.user_id, "device_id": self.device_id, "ip": self.ip, "detail": self.detail,
            "hash": self.hash,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_chain)]
pub struct Head {
    pub sealed_seq: i64,
    pub sealed_hash: String,
    pub checkpoint_seq: i64,
    pub checkpoint_hash: String,
}

/// The link of `event`, numbered `seq`, to the hash before it.
pub fn link(key: &ServerSecret, previous: &str, seq: i64, event: &Event) -> String {
    let covered = serde_json::json!([
        seq,
        event.id,
        event.at,
        event.actor,
        event.action,
        event.user_id,
        event.device_id,
        event.ip,
        event.user_agent,
        event.detail,
    ]);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes()).expect("HMAC takes any key length");
    mac.update(previous.as_bytes());
    mac.update(b"\n");
    mac.update(covered.to_string().as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Takes the chain head's row lock (PostgreSQL; SQLite's write lock) and reads it.
fn lock_head(conn: &mut DbConnection) -> Result<Head, DbError> {
    diesel::update(audit_chain::table.find(1))
        .set(audit_chain::sealed_seq.eq(audit_chain::sealed_seq))
        .execute(conn)?;
    Ok(audit_chain::table.find(1).select(Head::as_select()).first(conn)?)
}

pub fn head(conn: &mut DbConnection) -> Result<Head, DbError> {
    Ok(audit_chain::table.find(1).select(Head::as_select()).first(conn)?)
}

/// Links computed for a run of unsealed events: the head they follow, and each event's `id`,
/// `seq` and `hash`.
pub struct Links {
    after: (i64, String),
    events: Vec<(String, i64, String)>,
}

/// Reads up to `limit` committed, unsealed events, oldest first, and links them after the
/// head. Only reads: the background sealer runs it on a reading connection, so the reading and
/// hashing never hold the write lock. `None` when nothing waits.
pub fn link_pending(
    conn: &mut DbConnection,
    key: &ServerSecret,
    limit: i64,
) -> Result<Option<Links>, DbError> {
    let head = head(conn)?;
    let pending: Vec<Event> = audit_events::table
        .filter(audit_events::seq.is_null())
        .order((audit_events::at.asc(), audit_events::id.asc()))
        .limit(limit)
        .select(Event::as_select())
        .load(conn)?;
    if pending.is_empty() {
        return Ok(None);
    }
    let (mut seq, mut hash) = (head.sealed_seq, head.sealed_hash.clone());
    let events = pending
        .iter()
        .map(|event| {
            seq += 1;
            hash = link(key, &hash, seq, event);
            (event.id.clone(), seq, hash.clone())
        })
        .collect();
    Ok(Some(Links { after: (head.sealed_seq, head.sealed_hash), events }))
}

impl Links {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Stores the links, in one transaction, if the head is still the one they follow; returns
    /// how many events were sealed: 0 when another sealer (a replica, the command line) moved
    /// the head first, and the links are dropped for the next round to compute again. The head
    /// moves by compare-and-set; then the events are updated, joined to their links by id on
    /// PostgreSQL and one by one on SQLite.
    pub fn store(&self, conn: &mut DbConnection) -> Result<usize, DbError> {
        let Some((_, last_seq, last_hash)) = self.events.last() else { return Ok(0) };
        conn.transaction(|conn| {
            let moved = diesel::update(
                audit_chain::table
                    .find(1)
                    .filter(audit_chain::sealed_seq.eq(self.after.0))
                    .filter(audit_chain::sealed_hash.eq(&self.after.1)),
            )
            .set((audit_chain::sealed_seq.eq(last_seq), audit_chain::sealed_hash.eq(last_hash)))
            .execute(conn)?;
            if moved == 0 {
                return Ok(0);
            }
            let sealed = if matches!(conn, DbConnection::Sqlite(_)) {
                // One prepared statement run per event (about 8 µs each): SQLite plans an
                // UPDATE joined to a VALUES list as a scan of the whole list for every row.
                let mut sealed = 0;
                for (id, seq, hash) in &self.events {
                    sealed +=
                        diesel::update(audit_events::table.find(id).filter(audit_events::seq.is_null()))
                            .set((audit_events::seq.eq(seq), audit_events::hash.eq(hash)))
                            .execute(conn)?;
                }
                sealed
            } else {
                // One statement: PostgreSQL joins the links to the events by id (a hash join).
                // Ids (UUIDs) and hashes (base64url) are ours, quoted all the same.
                let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
                let rows: Vec<String> = self
                    .events
                    .iter()
                    .map(|(id, seq, hash)| format!("({}, {seq}::bigint, {})", quote(id), quote(hash)))
                    .collect();
                diesel::sql_query(format!(
                    "WITH links (id, seq, hash) AS (VALUES {}) \
                     UPDATE audit_events SET seq = links.seq, hash = links.hash FROM links \
                     WHERE audit_events.id = links.id AND audit_events.seq IS NULL",
                    rows.join(", ")
                ))
                .execute(conn)?
            };
            // Events are never changed or removed before they are sealed: a shortfall is a bug,
            // and nothing of the batch is kept.
            if sealed != self.events.len() {
                tracing::error!(
                    expected = self.events.len(),
                    sealed,
                    "audit events changed while being sealed"
                );
                return Err(DbError::Task);
            }
            Ok(sealed)
        })
    }
}

/// Seals up to `limit` committed events, oldest first, in one transaction under the head's
/// lock; returns how many.
pub fn seal(conn: &mut DbConnection, key: &ServerSecret, limit: i64) -> Result<usize, DbError> {
    conn.transaction(|conn| {
        lock_head(conn)?;
        match link_pending(conn, key, limit)? {
            Some(links) => links.store(conn),
            None => Ok(0),
        }
    })
}

/// Seals every committed event (the command line does this before it verifies).
pub fn seal_all(conn: &mut DbConnection, key: &ServerSecret) -> Result<usize, DbError> {
    let mut total = 0;
    loop {
        let sealed = seal(conn, key, SEAL_BATCH)?;
        total += sealed;
        if sealed < SEAL_BATCH as usize {
            return Ok(total);
        }
    }
}

/// What verification found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every sealed event from the checkpoint to the head links; `events` were checked.
    Intact { events: u64, head_seq: i64, head_hash: String, unsealed: i64 },
    /// The first event that does not link: altered, or put in with a made-up link.
    Altered { id: String, seq: i64 },
    /// Sealed events are missing before this one (`expected` is the first missing number).
    Removed { before: Option<String>, expected: i64 },
}

/// Walks the chain from the checkpoint to the head.
pub fn verify(conn: &mut DbConnection, key: &ServerSecret) -> Result<Verdict, DbError> {
    let head = head(conn)?;
    verify_from(conn, key, head, None)
}

/// Walks the chain to `head` from `start` (a `seq` and `hash` verified before, when the
/// checkpoint has not passed it) or from the checkpoint.
fn verify_from(
    conn: &mut DbConnection,
    key: &ServerSecret,
    head: Head,
    start: Option<(i64, String)>,
) -> Result<Verdict, DbError> {
    let (mut last_seq, mut last_hash) = match start {
        Some((seq, hash)) if seq >= head.checkpoint_seq && seq <= head.sealed_seq => (seq, hash),
        _ => (head.checkpoint_seq, head.checkpoint_hash.clone()),
    };
    let mut checked = 0u64;
    loop {
        let page: Vec<Event> = audit_events::table
            .filter(audit_events::seq.gt(last_seq))
            .order(audit_events::seq.asc())
            .limit(PAGE)
            .select(Event::as_select())
            .load(conn)?;
        for event in &page {
            let seq = event.seq.unwrap_or_default();
            if seq != last_seq + 1 {
                return Ok(Verdict::Removed { before: Some(event.id.clone()), expected: last_seq + 1 });
            }
            let expected = link(key, &last_hash, seq, event);
            if event.hash.as_deref() != Some(expected.as_str()) || seq > head.sealed_seq {
                return Ok(Verdict::Altered { id: event.id.clone(), seq });
            }
            (last_seq, last_hash) = (seq, expected);
            checked += 1;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    if last_seq != head.sealed_seq || last_hash != head.sealed_hash {
        return Ok(Verdict::Removed { before: None, expected: last_seq + 1 });
    }
    let unsealed = audit_events::table.filter(audit_events::seq.is_null()).count().get_result(conn)?;
    Ok(Verdict::Intact { events: checked, head_seq: head.sealed_seq, head_hash: head.sealed_hash, unsealed })
}

/// How long the console trusts an earlier walk of a long chain before it walks it all again.
const REWALK_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
/// A chain this long or shorter is walked whole on every look (20,000 links hash in 30 ms,
/// `cargo bench --bench micro audit_chain_link`, plus reading 20 pages).
const WALK_WHOLE_UP_TO: i64 = 20_000;

/// What this replica last verified of the chain (`seq`, `hash`, when the last whole walk
/// began). The console's audit page walks a chain of up to 20,000 events whole every time;
/// a longer one only from where it was verified before, and whole again every ten minutes.
#[derive(Default)]
pub struct Verified(std::sync::Mutex<Option<(i64, String, std::time::Instant)>>);

impl Verified {
    /// Verifies what is new since the last call and remembers how far the chain holds.
    pub fn check(&self, conn: &mut DbConnection, key: &ServerSecret) -> Result<Verdict, DbError> {
        let head = head(conn)?;
        let short = head.sealed_seq - head.checkpoint_seq <= WALK_WHOLE_UP_TO;
        let earlier = self.0.lock().map(|v| v.clone()).unwrap_or(None).filter(|_| !short);
        let (start, walked_at) = match earlier {
            Some((seq, hash, at)) if at.elapsed() < REWALK_AFTER => (Some((seq, hash)), at),
            _ => (None, std::time::Instant::now()),
        };
        let verdict = verify_from(conn, key, head, start)?;
        if let Ok(mut verified) = self.0.lock() {
            *verified = match &verdict {
                Verdict::Intact { head_seq, head_hash, .. } => {
                    Some((*head_seq, head_hash.clone(), walked_at))
                }
                _ => None,
            };
        }
        Ok(verdict)
    }
}

/// Removes sealed events older than `before` and moves the checkpoint past them, in one
/// transaction; returns how many. Only a run of the oldest sealed events is removed, so the
/// chain from the checkpoint stays whole.
pub fn prune(conn: &mut DbConnection, before: i64) -> Result<usize, DbError> {
    conn.transaction(|conn| {
        let head = lock_head(conn)?;
        // The last event to go: just before the oldest sealed one that is to be kept.
        let kept_from: Option<i64> = audit_events::table
            .filter(audit_events::seq.is_not_null().and(audit_events::at.ge(before)))
            .select(diesel::dsl::min(audit_events::seq))
            .first(conn)?;
        let last = kept_from.map_or(head.sealed_seq, |s| s - 1);
        if last <= head.checkpoint_seq {
            return Ok(0);
        }
        let hash: String = audit_events::table
            .filter(audit_events::seq.eq(last))
            .select(audit_events::hash.assume_not_null())
            .first(conn)?;
        let removed = diesel::delete(audit_events::table.filter(audit_events::seq.le(last))).execute(conn)?;
        diesel::update(audit_chain::table.find(1))
            .set((audit_chain::checkpoint_seq.eq(last), audit_chain::checkpoint_hash.eq(hash)))
            .execute(conn)?;
        Ok(removed)
    })
}

/// Events with `since <= at < until`, oldest first, a page at a time after `after` (`at`, `id`).
pub fn export_page(
    conn: &mut DbConnection,
    since: i64,
    until: i64,
    after: Option<(i64, String)>,
) -> Result<Vec<Event>, DbError> {
    let mut query =
        audit_events::table.filter(audit_events::at.ge(since).and(audit_events::at.lt(until))).into_boxed();
    if let Some((at, id)) = after {
        query =
            query.filter(audit_events::at.gt(at).or(audit_events::at.eq(at).and(audit_events::id.gt(id))));
    }
    Ok(query
        .order((audit_events::at.asc(), audit_events::id.asc()))
        .limit(PAGE)
        .select(Event::as_select())
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditAction, AuditEvent, Origin};

    async fn events(db: &crate::db::Db, n: usize) {
        db.write(move |conn| {
            for _ in 0..n {
                let actor = Actor::User("u".into());
                let event = AuditEvent {
                    actor: &actor,
                    action: AuditAction::SignIn,
                    user_id: Some("u"),
                    device_id: None,
                    detail: None,
                };
                crate::audit::record(conn, event, &Origin::default(), crate::clock::now())?;
            }
            Ok::<_, DbError>(())
        })
        .await
        .expect("events written");
    }

    #[tokio::test]
    async fn of_two_sealers_that_linked_from_one_head_only_the_first_stores() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = crate::db::Db::new(&format!("sqlite://{}/t.db", dir.path().display()), 2).expect("url");
        db.migrate().expect("migrations");
        let key = std::sync::Arc::new(ServerSecret::from_bytes([3; 32]));
        events(&db, 3).await;
        let k = key.clone();
        let (first, second) = db
            .run(move |conn| Ok::<_, DbError>((link_pending(conn, &k, 10)?, link_pending(conn, &k, 10)?)))
            .await
            .expect("linked");
        let (first, second) = (first.expect("three pending"), second.expect("three pending"));
        assert_eq!(db.write(move |conn| first.store(conn)).await.expect("stored"), 3);
        assert_eq!(db.write(move |conn| second.store(conn)).await.expect("refused, not failed"), 0);
        events(&db, 2).await;
        let k = key.clone();
        assert_eq!(db.write(move |conn| seal(conn, &k, 10)).await.expect("sealed"), 2);
        let verdict = db.run(move |conn| verify(conn, &key)).await.expect("verified");
        assert!(
            matches!(verdict, Verdict::Intact { events: 5, head_seq: 5, unsealed: 0, .. }),
            "{verdict:?}"
        );
    }
}
