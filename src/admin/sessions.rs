//! Admin sessions: server-side rows behind a `__Host-` cookie, so they can be ended.
//!
//! The cookie holds 256 random bits; the database holds only their SHA-256. The anti-CSRF
//! token is derived from the cookie value (a different hash), so it is bound to the session
//! and needs no storage. A session is valid while it is younger than its maximum, was used
//! within the idle time, its device is live and its user is a non-disabled admin: revoking
//! the role, the device, or disabling the user ends it at once.

use diesel::prelude::*;
use subtle::ConstantTimeEq;

use crate::crypto::{random_token, sha256_b64};
use crate::db::schema::{admin_sessions, devices, users};
use crate::db::{DbConnection, DbError};

/// The session cookie (`SameSite=Strict`): every change needs it.
pub const COOKIE: &str = "__Host-idbridge-admin";
/// The same session for reading pages (`SameSite=Lax`): a link from another site (a ticket, a
/// chat) reaches the page it names without a new sign-in. It never authorises a change.
pub const READ_COOKIE: &str = "__Host-idbridge-admin-read";
/// The cookie that carries a sign-in in flight (`state` and the PKCE verifier).
pub const LOGIN_COOKIE: &str = "__Host-idbridge-admin-login";
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_SECS: i64 = 60;

#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle_secs: i64,
    pub max_secs: i64,
}

/// A valid session, as a page sees it.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub id_hash: String,
    pub user_id: String,
    pub device_id: String,
    /// The anti-CSRF token every form of this session carries.
    pub csrf: String,
    /// `last_seen_at` is old enough to be written again.
    pub needs_touch: bool,
}

impl AdminSession {
    /// `admin:<user id>`, the actor of audit events.
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::Admin(self.user_id.clone())
    }

    /// Constant-time comparison with the token a form sent.
    pub fn csrf_matches(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

fn id_hash(token: &str) -> String {
    sha256_b64(format!("idbridge admin session\0{token}").as_bytes())
}

fn csrf_for(token: &str) -> String {
    sha256_b64(format!("idbridge admin csrf\0{token}").as_bytes())
}

/// Opens a session for an admin on `device_id`; returns the cookie value.
pub fn create(
    conn: &mut DbConnection,
    user_id: &str,
    device_id: &str,
    policy: SessionPolicy,
    now: i64,
) -> Result<String, DbError> {
    let token = random_token::<32>();
    diesel::insert_into(admin_sessions::table)
        .values((
            admin_sessions::id_hash.eq(id_hash(&token)),
            admin_sessions::user_id.eq(user_id),
            admin_sessions::device_id.eq(device_id),
            admin_sessions::created_at.eq(now),
            admin_sessions::last_seen_at.eq(now),
            admin_sessions::expires_at.eq(now + policy.max_secs),
        ))
        .execute(conn)?;
    Ok(token)
}

/// The session a cookie names, when it is still valid (see the module's rules).
pub fn find(
    conn: &mut DbConnection,
    token: &str,
    policy: SessionPolicy,
    now: i64,
) -> Result<Option<AdminSession>, DbError> {
    if token.len() != 43 {
        return Ok(None);
    }
    let hash = id_hash(token);
    let found: Option<(String, String, i64)> = admin_sessions::table
        .inner_join(users::table)
        .inner_join(devices::table)
        .filter(admin_sessions::id_hash.eq(&hash))
        .filter(admin_sessions::expires_at.gt(now))
        .filter(admin_sessions::last_seen_at.gt(now - policy.idle_secs))
        .filter(users::is_admin.eq(true))
        .filter(users::disabled_at.is_null())
        .filter(crate::sessions::live(now))
        .select((admin_sessions::user_id, admin_sessions::device_id, admin_sessions::last_seen_at))
        .first(conn)
        .optional()?;
    Ok(found.map(|(user_id, device_id, last_seen_at)| AdminSession {
        id_hash: hash,
        user_id,
        device_id,
        csrf: csrf_for(token),
        needs_touch: now - last_seen_at >= TOUCH_EVERY_SECS.min(policy.idle_secs / 4),
    }))
}

/// Records that the session was used now (the idle clock restarts).
pub fn touch(conn: &mut DbConnection, id_hash: &str, now: i64) -> Result<(), DbError> {
    diesel::update(admin_sessions::table.find(id_hash))
        .set(admin_sessions::last_seen_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// Ends one session (sign out).
pub fn end(conn: &mut DbConnection, id_hash: &str) -> Result<(), DbError> {
    diesel::delete(admin_sessions::table.find(id_hash)).execute(conn)?;
    Ok(())
}

/// Ends every session of a user (their role was taken away, or they were disabled).
pub fn end_for_user(conn: &mut DbConnection, user_id: &str) -> Result<usize, DbError> {
    Ok(diesel::delete(admin_sessions::table.filter(admin_sessions::user_id.eq(user_id))).execute(conn)?)
}

/// Deletes sessions past their maximum or idle time; returns how many.
pub fn delete_expired(conn: &mut DbConnection, policy: SessionPolicy, now: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(
        admin_sessions::table
            .filter(admin_sessions::expires_at.le(now))
            .or_filter(admin_sessions::last_seen_at.le(now - policy.idle_secs)),
    )
    .execute(conn)?)
}
