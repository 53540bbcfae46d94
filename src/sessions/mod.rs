//! A device's session: the device row and its chain of refresh tokens, from sign-in to end.
//!
//! Everything about a session lives here, written once: its [`Policy`] (lifetimes, the device
//! cap, scope narrowing), when a device is live ([`Device::is_live`], [`live`]), opening one
//! (`devices::open`), rotating its refresh token (`refresh`), ending it (`devices::end`), the
//! in-memory set of recently ended devices every access-token check reads (`liveness`), and
//! PostgreSQL's one-statement paths for the hot requests (`returning`, `refresh`).
//! Users and identities are `accounts`; the stateless token formats are `tokens`.

pub mod devices;
pub mod liveness;
pub mod logout_notices;
pub mod refresh;
pub mod returning;

use diesel::prelude::*;

use crate::audit::Origin;
use crate::db::schema::{devices as device_rows, users};
use crate::db::{DbConnection, DbError};
use crate::providers::VerifiedAssertion;

pub use devices::DeviceCursor;
pub use liveness::Liveness;
pub use refresh::{RefreshRequest, Rotation, SuccessorKey};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = device_rows)]
pub struct Device {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub idp: String,
    pub scope: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub session_expires_at: i64,
    pub revoked_at: Option<i64>,
    /// DPoP (RFC 9449): the thumbprint of the key the device is bound to; its refresh needs a
    /// proof by that key.
    pub dpop_jkt: Option<String>,
}

impl Device {
    /// Not revoked and its session not past its end. (Whether its user is disabled is read
    /// with it where that matters: [`find_with_user_state`].)
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.session_expires_at > now
    }
}

/// The SQL form of [`Device::is_live`]: not revoked, session not ended at `now`.
pub fn live(
    now: i64,
) -> diesel::dsl::And<
    diesel::dsl::IsNull<device_rows::revoked_at>,
    diesel::dsl::Gt<device_rows::session_expires_at, i64>,
> {
    device_rows::revoked_at.is_null().and(device_rows::session_expires_at.gt(now))
}

/// The SQL form of [`live`] for PostgreSQL's one-statement paths: ` AND <alias>.revoked_at IS
/// NULL AND <alias>.session_expires_at > $now`.
pub(crate) fn push_live<'b>(
    out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    alias: &str,
    now: &'b i64,
) -> QueryResult<()> {
    out.push_sql(&format!(" AND {alias}.revoked_at IS NULL AND {alias}.session_expires_at > "));
    out.push_bind_param::<diesel::sql_types::BigInt, _>(now)
}

/// The SQL form of [`Policy::token_expiry`] for the one-statement paths:
/// `LEAST($now + $idle, <session_end>)`.
pub(crate) fn push_token_expiry<'b>(
    out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    now: &'b i64,
    idle_ttl_secs: &'b i64,
    session_end: &str,
) -> QueryResult<()> {
    out.push_sql("LEAST(");
    out.push_bind_param::<diesel::sql_types::BigInt, _>(now)?;
    out.push_sql(" + ");
    out.push_bind_param::<diesel::sql_types::BigInt, _>(idle_ttl_secs)?;
    out.push_sql(&format!(", {session_end})"));
    Ok(())
}

/// The rules every session follows (`[tokens]`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// A refresh token unused this long expires (`tokens.refresh_idle_ttl`).
    pub idle_ttl_secs: i64,
    /// A session ends this long after its sign-in, however it is used (`tokens.refresh_max_ttl`).
    pub max_ttl_secs: i64,
    /// A spent refresh token presented again within this gets the same successor.
    pub reuse_grace_secs: i64,
    /// Live devices a user may have (`tokens.max_devices_per_user`).
    pub max_devices_per_user: i64,
}

impl Policy {
    /// When a session opened at `now` ends.
    pub fn session_end(&self, now: i64) -> i64 {
        now + self.max_ttl_secs
    }

    /// When a refresh token issued at `now` expires: idle time, never past its session's end.
    pub fn token_expiry(&self, now: i64, session_end: i64) -> i64 {
        (now + self.idle_ttl_secs).min(session_end)
    }

    /// Whether `live` devices are more than a user may have.
    pub fn over_cap(&self, live: i64) -> bool {
        live > self.max_devices_per_user
    }

    /// Whether a spent token presented at `now`, spent at `spent_at`, is a retry in the grace.
    pub fn in_grace(&self, spent_at: i64, now: i64) -> bool {
        now < spent_at.saturating_add(self.reuse_grace_secs)
    }
}

/// What a device was granted, narrowed to what its client may grant now (a client's scopes
/// can shrink after the sign-in).
pub fn narrowed_scope(granted: &str, client_scopes: &[String]) -> Vec<String> {
    granted
        .split(' ')
        .filter(|s| !s.is_empty() && client_scopes.iter().any(|c| c == s))
        .map(str::to_string)
        .collect()
}

/// A sign-in to record: the verified assertion plus what the client asked for.
pub struct SignIn {
    pub assertion: VerifiedAssertion,
    /// The nonce the request carried, already compared with the token's claim.
    pub nonce: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub device_name: Option<String>,
    pub device_platform: Option<String>,
    pub origin: Origin,
    /// The thumbprint of the DPoP key the request proved: the new device is bound to it.
    pub dpop_jkt: Option<String>,
}

/// A session just opened: its device and first refresh token.
pub struct SignedIn {
    pub user_id: String,
    pub device: Device,
    pub refresh_token: String,
}

pub fn find(conn: &mut DbConnection, device_id: &str) -> Result<Option<Device>, DbError> {
    Ok(device_rows::table.find(device_id).select(Device::as_select()).first(conn).optional()?)
}

/// A device and whether its user is disabled, in one read.
pub fn find_with_user_state(
    conn: &mut DbConnection,
    device_id: &str,
) -> Result<Option<(Device, bool)>, DbError> {
    let found: Option<(Device, Option<i64>)> = device_rows::table
        .inner_join(users::table)
        .filter(device_rows::id.eq(device_id))
        .select((Device::as_select(), users::disabled_at))
        .first(conn)
        .optional()?;
    Ok(found.map(|(device, disabled_at)| (device, disabled_at.is_some())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy { idle_ttl_secs: 100, max_ttl_secs: 1_000, reuse_grace_secs: 10, max_devices_per_user: 2 }
    }

    #[test]
    fn a_token_never_outlives_its_session() {
        let p = policy();
        let end = p.session_end(5_000);
        assert_eq!(end, 6_000);
        assert_eq!(p.token_expiry(5_000, end), 5_100);
        assert_eq!(p.token_expiry(5_950, end), 6_000, "the idle time is cut at the session's end");
    }

    #[test]
    fn the_cap_counts_live_devices() {
        let p = policy();
        assert!(!p.over_cap(2));
        assert!(p.over_cap(3));
    }

    #[test]
    fn the_grace_is_a_half_open_window() {
        let p = policy();
        assert!(p.in_grace(100, 100));
        assert!(p.in_grace(100, 109));
        assert!(!p.in_grace(100, 110));
    }

    #[test]
    fn scope_narrows_to_what_the_client_may_grant_now() {
        let client = vec!["openid".to_string(), "api".to_string()];
        assert_eq!(narrowed_scope("openid api crypto", &client), vec!["openid", "api"]);
        assert_eq!(narrowed_scope("", &client), Vec::<String>::new());
        assert_eq!(narrowed_scope("crypto", &client), Vec::<String>::new());
    }

    fn device(revoked_at: Option<i64>, session_expires_at: i64) -> Device {
        Device {
            id: "d".into(),
            user_id: "u".into(),
            client_id: "c".into(),
            idp: "dev".into(),
            scope: String::new(),
            name: None,
            platform: None,
            user_agent: None,
            ip: None,
            created_at: 0,
            last_seen_at: 0,
            session_expires_at,
            revoked_at,
            dpop_jkt: None,
        }
    }

    #[test]
    fn a_device_is_live_until_revoked_or_its_session_ends() {
        assert!(device(None, 100).is_live(99));
        assert!(!device(None, 100).is_live(100));
        assert!(!device(Some(50), 100).is_live(60));
    }
}
