//! Is an access token's device still live? Answered from memory, without a database read.
//!
//! An access token lives at most `tokens.access_ttl`, and a device that is revoked (or whose
//! user is disabled or deleted, which revokes or deletes every device) never gets another. So
//! the only devices an access-token check must refuse are those revoked within the last
//! `access_ttl`: every replica keeps that set in memory.
//!
//! - Each revocation writes a `revocations` row in the revoking transaction (`record`) and
//!   publishes a [`REVOKED`] notice (`db::notify`): this replica's set takes it as the
//!   transaction commits, so a revocation holds at once here; on PostgreSQL every other
//!   replica's listener gets it as a `NOTIFY` at commit.
//! - Every `CATCH_UP_EVERY` each replica re-reads the recent rows, so a lost notification (or
//!   one sent while a replica was reconnecting) heals within seconds.
//! - On SQLite another process (the command line) cannot notify: a watcher thread asks
//!   SQLite's `PRAGMA data_version` every 100 ms and re-reads the recent rows when it moved.
//! - At start the set is loaded from the rows of the last access-token lifetime: the longest
//!   `access_ttl` any idbridge of this database ever issued with (kept in `server_state`), so
//!   lowering the setting never lets an older, longer-lived token of a revoked device back in.
//!   Verification also refuses a token whose own lifetime (`exp - iat`) exceeds the current
//!   `access_ttl` (`tokens::access`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use diesel::prelude::*;

use crate::db::notify::{self, Subscribers};
use crate::db::schema::{revocations, server_state};
use crate::db::{DbConnection, DbError};

/// The notice of a revoked device; its body is the device id.
pub const REVOKED: &str = "revoked";
/// SQLite: revocations another process (the command line) committed were found (no body).
pub const REVOKED_ELSEWHERE: &str = "revoked-elsewhere";
/// Extra seconds kept past `access_ttl` (clock skew between replicas, `exp` leeway).
const LEEWAY_SECS: i64 = 120;
/// How often every replica re-reads recent revocations.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(2);
/// How far back a catch-up reads: covers transactions that committed late.
const CATCH_UP_WINDOW_SECS: i64 = 60;
/// The `server_state` row holding the longest access-token lifetime ever issued with.
const ACCESS_TTL_MAX: &str = "access_ttl_max";
/// The devices revoked within the last access-token lifetime.
pub struct Liveness {
    revoked: RwLock<HashMap<String, i64>>,
    window_secs: AtomicI64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self { revoked: RwLock::new(HashMap::new()), window_secs: AtomicI64::new(600 + LEEWAY_SECS) }
    }
}

impl Liveness {
    /// Takes every committed revocation [`REVOKED`] notice: this replica's as it commits,
    /// the others' as they arrive.
    pub fn follow(self: &std::sync::Arc<Self>, subscribers: &Subscribers) {
        let liveness = self.clone();
        subscribers
            .subscribe(REVOKED, move |notice| liveness.add([(notice.body.clone(), crate::clock::now())]));
    }

    /// Sets how long a revocation matters: the access-token lifetime (plus leeway).
    pub fn set_access_ttl(&self, access_ttl_secs: i64) {
        self.window_secs.store(access_ttl_secs + LEEWAY_SECS, Ordering::Relaxed);
    }

    /// Records that this server issues access tokens living `access_ttl_secs`, and keeps
    /// revocations for the longest lifetime any idbridge of this database has issued with
    /// (this setting or an earlier one). Returns that longest lifetime.
    pub fn adopt_access_ttl(&self, conn: &mut DbConnection, access_ttl_secs: i64) -> Result<i64, DbError> {
        let longest = record_access_ttl(conn, access_ttl_secs)?;
        self.set_access_ttl(longest);
        Ok(longest)
    }

    fn window(&self) -> i64 {
        self.window_secs.load(Ordering::Relaxed)
    }

    /// `true` when access tokens of this device must be refused.
    pub fn is_revoked(&self, device_id: &str) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains_key(device_id)
    }

    /// Devices revoked at `at`.
    pub fn add(&self, devices: impl IntoIterator<Item = (String, i64)>) {
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for (device_id, at) in devices {
            revoked.insert(device_id, at);
        }
    }

    /// Forgets revocations whose devices' access tokens have all expired.
    pub fn forget_old(&self, now: i64) {
        let oldest = now - self.window();
        self.revoked.write().unwrap_or_else(|p| p.into_inner()).retain(|_, at| *at >= oldest);
    }

    pub fn len(&self) -> usize {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the revocations of the last `window` seconds.
    fn read_since(conn: &mut DbConnection, since: i64) -> Result<Vec<(String, i64)>, DbError> {
        Ok(revocations::table
            .filter(revocations::at.ge(since))
            .select((revocations::device_id, revocations::at))
            .load(conn)?)
    }

    /// Loads every revocation that still matters (at start, and after the listener reconnects).
    pub fn load(&self, conn: &mut DbConnection, now: i64) -> Result<usize, DbError> {
        let rows = Self::read_since(conn, now - self.window())?;
        let n = rows.len();
        self.add(rows);
        Ok(n)
    }

    /// Reads the revocations made at or after `since`; returns the newest time seen (or
    /// `since`), from which the next read may start.
    pub fn read_new(&self, conn: &mut DbConnection, since: i64) -> Result<i64, DbError> {
        let rows = Self::read_since(conn, since)?;
        let newest = rows.iter().map(|(_, at)| *at).max().unwrap_or(since);
        self.add(rows);
        Ok(newest.max(since))
    }

    /// Re-reads the recent revocations (heals a lost notification) and forgets old ones.
    pub fn catch_up(&self, conn: &mut DbConnection, now: i64) -> Result<(), DbError> {
        let rows = Self::read_since(conn, now - CATCH_UP_WINDOW_SECS.min(self.window()))?;
        self.add(rows);
        self.forget_old(now);
        Ok(())
    }
}

/// Records a device's revocation in the caller's transaction: the row, and the notice that
/// puts it in every replica's set once committed.
pub fn record(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<(), DbError> {
    match conn {
        DbConnection::Pg(c) => {
            diesel::insert_into(revocations::table)
                .values((revocations::device_id.eq(device_id), revocations::at.eq(now)))
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        DbConnection::Sqlite(c) => {
            diesel::insert_or_ignore_into(revocations::table)
                .values((revocations::device_id.eq(device_id), revocations::at.eq(now)))
                .execute(c)?;
        }
    }
    notify::publish(conn, REVOKED, device_id)
}

/// Stores `access_ttl_secs` as issued with, unless a longer one was; returns the longest.
/// Writes only when it is longer (a start on a full disk needs no write).
fn record_access_ttl(conn: &mut DbConnection, access_ttl_secs: i64) -> Result<i64, DbError> {
    use diesel::sql_types::{BigInt, Text};
    if let Some(stored) = longest_access_ttl(conn)?.filter(|stored| *stored >= access_ttl_secs) {
        return Ok(stored);
    }
    let upsert = match conn {
        DbConnection::Pg(_) => {
            "INSERT INTO server_state (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = GREATEST(server_state.value, EXCLUDED.value)"
        }
        DbConnection::Sqlite(_) => {
            "INSERT INTO server_state (name, value) VALUES (?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = MAX(server_state.value, excluded.value)"
        }
    };
    diesel::sql_query(upsert)
        .bind::<Text, _>(ACCESS_TTL_MAX)
        .bind::<BigInt, _>(access_ttl_secs)
        .execute(conn)?;
    longest_access_ttl(conn).map(|stored| stored.unwrap_or(access_ttl_secs))
}

/// The longest access-token lifetime recorded, if any.
fn longest_access_ttl(conn: &mut DbConnection) -> Result<Option<i64>, DbError> {
    Ok(server_state::table.find(ACCESS_TTL_MAX).select(server_state::value).first(conn).optional()?)
}

/// Deletes revocations older than any access token can be: older than the longest lifetime
/// recorded by any replica (another one may have started later with a longer setting).
pub fn delete_old(conn: &mut DbConnection, liveness: &Liveness, now: i64) -> Result<usize, DbError> {
    let window = liveness.window().max(longest_access_ttl(conn)?.unwrap_or(0) + LEEWAY_SECS);
    let before = now - window - CATCH_UP_WINDOW_SECS;
    Ok(diesel::delete(revocations::table.filter(revocations::at.lt(before))).execute(conn)?)
}

/// How often the SQLite watcher asks whether another connection committed.
const WATCH_POLL: Duration = Duration::from_millis(100);

#[derive(diesel::QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

/// SQLite: revocations committed by another process (the command line) reach this one within
/// a poll, not at the next catch-up. A connection of the watcher's own asks `PRAGMA
/// data_version` every [`WATCH_POLL`], which changes when any other connection committed;
/// then the recent revocations are re-read. The thread ends soon after the returned task is
/// aborted or dropped (the server stopped).
/// It then tells `subscribers` ([`REVOKED_ELSEWHERE`]), so the back-channel logout sender looks
/// at once.
pub fn spawn_sqlite_watcher(
    path: String,
    liveness: std::sync::Arc<Liveness>,
    subscribers: notify::Subscribers,
) -> tokio::task::JoinHandle<()> {
    notify::spawn_watcher("sqlite-watcher", move |still_running| {
        let mut conn: Option<diesel::SqliteConnection> = None;
        let mut seen: Option<i64> = None;
        // Revocations are read from here on: only what is new since the last read (a second of
        // overlap for commits within the same second), so a busy server reads little.
        let mut since = crate::clock::now() - 2;
        loop {
            std::thread::sleep(WATCH_POLL);
            if !still_running.is_running() {
                return;
            }
            if conn.is_none() {
                conn = diesel::SqliteConnection::establish(&path)
                    .and_then(|mut c| {
                        diesel::connection::SimpleConnection::batch_execute(
                            &mut c,
                            "PRAGMA busy_timeout = 1000;",
                        )
                        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                        Ok(c)
                    })
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "the SQLite watcher cannot connect; retrying"),
                    )
                    .ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let version = match diesel::sql_query("PRAGMA data_version").get_result::<DataVersion>(c) {
                Ok(v) => v.data_version,
                Err(e) => {
                    tracing::warn!(error = %e, "the SQLite watcher cannot read data_version");
                    conn = None;
                    continue;
                }
            };
            if seen.is_some_and(|s| s == version) {
                continue;
            }
            let Some(c) = conn.take() else { continue };
            let mut wrapped = DbConnection::Sqlite(c);
            match liveness.read_new(&mut wrapped, since - 1) {
                Ok(newest) => {
                    seen = Some(version);
                    if newest > since {
                        subscribers.deliver(&[notify::Notice::new(REVOKED_ELSEWHERE, "")]);
                    }
                    since = newest;
                }
                Err(e) => tracing::warn!(error = %e, "the SQLite watcher cannot read revocations"),
            }
            if let DbConnection::Sqlite(c) = wrapped {
                conn = Some(c);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_counts_for_one_access_token_lifetime() {
        let liveness = Liveness::default();
        liveness.set_access_ttl(600);
        liveness.add([("a".to_string(), 1_000), ("b".to_string(), 1_500)]);
        assert!(liveness.is_revoked("a") && liveness.is_revoked("b") && !liveness.is_revoked("c"));
        liveness.forget_old(1_000 + 600 + LEEWAY_SECS + 1);
        assert!(!liveness.is_revoked("a") && liveness.is_revoked("b"));
    }

    #[test]
    fn a_committed_revocation_notice_reaches_the_set() {
        let liveness = std::sync::Arc::new(Liveness::default());
        let subscribers = Subscribers::default();
        liveness.follow(&subscribers);
        subscribers.deliver(&[notify::Notice::new(REVOKED, "d1"), notify::Notice::new("keys", "")]);
        assert!(liveness.is_revoked("d1"));
        assert_eq!(liveness.len(), 1);
    }
}
