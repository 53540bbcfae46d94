//! The outbox of OpenID Connect Back-Channel Logout: one notice per ended device, written in
//! the transaction that ends it ([`enqueue`], called by `devices::mark_ended`), so a notice
//! exists exactly when the end committed. Delivery (`housekeeping::deliver_logouts`) happens
//! after the commit: each notice is claimed by one replica at a time, sent to the client's
//! `backchannel_logout_uri`, and retried with back-off for 24 hours. A notice of a client
//! without that URI is dropped unsent.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::db::schema::logout_notices;
use crate::db::{DbConnection, DbError};

/// How long a notice is tried before it is given up.
pub const GIVE_UP_AFTER_SECS: i64 = 24 * 3600;
/// How long a replica holds a claimed notice before another may try it: longer than one
/// delivery may take (5 s), short enough that a replica that died mid-delivery delays little.
pub const CLAIM_SECS: i64 = 15;
const FIRST_RETRY_SECS: f64 = 1.0;
const MAX_RETRY_SECS: f64 = 3600.0;

/// A notice to deliver.
#[derive(Debug, Clone, Queryable)]
pub struct Notice {
    pub device_id: String,
    pub client_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub attempts: i32,
}

/// Stores the notice that `device_id` ended (once: a device ends once).
pub fn enqueue(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<(), DbError> {
    let sql = match conn {
        DbConnection::Pg(_) => {
            "INSERT INTO logout_notices (device_id, client_id, user_id, created_at, next_attempt_at, attempts) \
             SELECT id, client_id, user_id, $1, $1, 0 FROM devices WHERE id = $2 \
             ON CONFLICT (device_id) DO NOTHING"
        }
        DbConnection::Sqlite(_) => {
            "INSERT INTO logout_notices (device_id, client_id, user_id, created_at, next_attempt_at, attempts) \
             SELECT id, client_id, user_id, ?1, ?1, 0 FROM devices WHERE id = ?2 \
             ON CONFLICT (device_id) DO NOTHING"
        }
    };
    diesel::sql_query(sql).bind::<BigInt, _>(now).bind::<Text, _>(device_id).execute(conn)?;
    Ok(())
}

/// Claims up to `limit` due notices for this replica for [`CLAIM_SECS`]: each is moved
/// forward only if no other replica moved it first.
pub fn claim_due(conn: &mut DbConnection, now: i64, limit: i64) -> Result<Vec<Notice>, DbError> {
    let due: Vec<Notice> = logout_notices::table
        .filter(logout_notices::next_attempt_at.le(now))
        .order(logout_notices::next_attempt_at.asc())
        .limit(limit)
        .load(conn)?;
    let mut claimed = Vec::with_capacity(due.len());
    for notice in due {
        let won = diesel::update(
            logout_notices::table
                .find(&notice.device_id)
                .filter(logout_notices::next_attempt_at.eq(notice.next_attempt_at)),
        )
        .set(logout_notices::next_attempt_at.eq(now + CLAIM_SECS))
        .execute(conn)?;
        if won == 1 {
            claimed.push(notice);
        }
    }
    Ok(claimed)
}

/// Delivered, dropped (no URI) or given up: the notice goes.
pub fn done(conn: &mut DbConnection, device_id: &str) -> Result<(), DbError> {
    diesel::delete(logout_notices::table.find(device_id)).execute(conn)?;
    Ok(())
}

/// A failed delivery: the next try waits 1 s doubling to an hour, with ±20 % jitter (`jitter`
/// in 0..1) so many notices to one receiver that came back do not all come at once.
pub fn retry_later(conn: &mut DbConnection, notice: &Notice, now: i64, jitter: f64) -> Result<(), DbError> {
    let attempts = notice.attempts.saturating_add(1);
    let wait = (FIRST_RETRY_SECS * 2f64.powi(attempts.clamp(1, 30) - 1)).min(MAX_RETRY_SECS);
    let wait = (wait * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))).round().max(1.0) as i64;
    diesel::update(logout_notices::table.find(&notice.device_id))
        .set((logout_notices::attempts.eq(attempts), logout_notices::next_attempt_at.eq(now + wait)))
        .execute(conn)?;
    Ok(())
}

/// When the next notice is due, if any is waiting.
pub fn next_due(conn: &mut DbConnection) -> Result<Option<i64>, DbError> {
    Ok(logout_notices::table.select(diesel::dsl::min(logout_notices::next_attempt_at)).first(conn)?)
}
