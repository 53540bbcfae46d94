//! Refresh tokens: 256 random bits, stored as SHA-256, rotated on every use.
//!
//! Rotation is one conditional write (`UPDATE … WHERE spent_at IS NULL`), so concurrent
//! presentations of one token never fork the chain. A successor is derived from the token it
//! replaces with a keyed HMAC, which lets a retry within the grace window get the very same
//! successor without the plaintext ever being stored. A spent token presented after the grace
//! is reuse (RFC 9700 §4.14.2): the whole device is revoked.

use diesel::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::devices::touch;
use super::{narrowed_scope, Device, Policy};
use crate::audit::{Actor, Attribution, AuditAction, Origin};
use crate::crypto::server_secrets::ServerSecret;
use crate::crypto::{random_token, sha256_b64};
use crate::db::schema::{devices, refresh_tokens};
use crate::db::{DbConnection, DbError};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
struct RefreshTokenRow {
    id: String,
    device_id: String,
    token_hash: String,
    parent_id: Option<String>,
    issued_at: i64,
    expires_at: i64,
    spent_at: Option<i64>,
    successor_hash: Option<String>,
}

/// The key that derives successors: a server secret stored wrapped, so a retry within the
/// grace gets the same successor after a master-key rotation and on every replica.
pub struct SuccessorKey(pub ServerSecret);

impl SuccessorKey {
    fn successor_of(&self, token: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.0.bytes()).expect("HMAC takes any key length");
        mac.update(b"idbridge refresh successor\0");
        mac.update(token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// A presented refresh token and what the request asks with it.
pub struct RefreshRequest<'a> {
    pub token: &'a str,
    pub client_id: &'a str,
    /// The client's scopes now: a device keeps only what its client may still grant.
    pub client_scopes: &'a [String],
    /// A narrower scope for the new access token; absent means the device's whole scope.
    pub scope: Option<&'a str>,
    pub origin: &'a Origin,
    /// The thumbprint of the DPoP key the request proved, if it sent a proof.
    pub dpop_jkt: Option<&'a str>,
}

pub enum Rotation {
    /// The successor to hand out (a retry within the grace gets the same one), and the
    /// scope granted to the new access token.
    Rotated { device: Box<Device>, refresh_token: String, scope: String },
    /// The requested scope is not within the device's; nothing was spent.
    InvalidScope,
    /// The device is bound to a DPoP key this request did not prove; nothing was spent.
    WrongKey,
    /// Not a usable token: unknown, expired, another client's, or a revoked device's.
    Refused,
    /// A spent token came back after the grace, or after its successor was spent: the device
    /// is now revoked.
    Reused,
}

fn insert_token(
    conn: &mut DbConnection,
    device: &Device,
    token: &str,
    parent_id: Option<String>,
    policy: &Policy,
    now: i64,
) -> Result<(), DbError> {
    let row = RefreshTokenRow {
        id: crate::db::new_id(),
        device_id: device.id.clone(),
        token_hash: sha256_b64(token.as_bytes()),
        parent_id,
        issued_at: now,
        expires_at: policy.token_expiry(now, device.session_expires_at),
        spent_at: None,
        successor_hash: None,
    };
    diesel::insert_into(refresh_tokens::table).values(&row).execute(conn)?;
    Ok(())
}

/// A new refresh token (256 random bits); only its hash is stored.
pub fn new_token() -> String {
    random_token::<32>()
}

/// The first token of a new device.
pub fn issue_first(
    conn: &mut DbConnection,
    device: &Device,
    policy: &Policy,
    now: i64,
) -> Result<String, DbError> {
    let token = random_token::<32>();
    insert_token(conn, device, &token, None, policy, now)?;
    Ok(token)
}

/// Spends `presented` and returns its successor, inside the caller's write transaction.
pub fn rotate(
    conn: &mut DbConnection,
    key: &SuccessorKey,
    request: &RefreshRequest<'_>,
    policy: &Policy,
    now: i64,
) -> Result<Rotation, DbError> {
    let (presented, client_id, origin) = (request.token, request.client_id, request.origin);
    if presented.is_empty() || presented.len() > 512 {
        return Ok(Rotation::Refused);
    }
    let hash = sha256_b64(presented.as_bytes());
    let Some(row) = find_by_hash(conn, &hash)? else {
        return Ok(Rotation::Refused);
    };
    let Some((device, user_disabled)) = super::find_with_user_state(conn, &row.device_id)? else {
        return Ok(Rotation::Refused);
    };
    if device.client_id != client_id || !device.is_live(now) || user_disabled {
        return Ok(Rotation::Refused);
    }
    // RFC 9449 §5: a bound device's refresh token works only with a proof by its key. Checked
    // before anything is spent, so a thief without the key cannot even burn the token.
    if device.dpop_jkt.is_some() && device.dpop_jkt.as_deref() != request.dpop_jkt {
        return Ok(Rotation::WrongKey);
    }
    // What the device was granted, narrowed to what its client may grant now.
    let allowed = narrowed_scope(&device.scope, request.client_scopes);
    let Ok(scope) = crate::clients::resolve_scope(&allowed, request.scope) else {
        return Ok(Rotation::InvalidScope);
    };
    let successor = key.successor_of(presented);
    let successor_hash = sha256_b64(successor.as_bytes());

    if row.spent_at.is_none() && row.expires_at <= now {
        return Ok(Rotation::Refused);
    }
    // Lock the device row first, as revocation does: every refresh of one device queues here,
    // so the token updates below never meet in the opposite lock order. Nothing is changed yet:
    // a replayed token must not put its sender's address on the device.
    let locked = diesel::update(
        devices::table.filter(devices::id.eq(&device.id)).filter(devices::revoked_at.is_null()),
    )
    .set(devices::last_seen_at.eq(devices::last_seen_at))
    .execute(conn)?;
    if locked == 0 {
        return Ok(Rotation::Refused);
    }
    // From here on the database's clock: the lock may have waited, and the grace counts from
    // the spending commit on one clock for every replica.
    let now = crate::db::db_now(conn, now)?;

    let spent = match row.spent_at {
        Some(_) => row,
        None => {
            // The conditional write: exactly one presentation wins, whatever runs concurrently.
            let won = diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::id.eq(&row.id))
                    .filter(refresh_tokens::spent_at.is_null()),
            )
            .set((refresh_tokens::spent_at.eq(now), refresh_tokens::successor_hash.eq(&successor_hash)))
            .execute(conn)?;
            if won == 1 {
                insert_token(conn, &device, &successor, Some(row.id.clone()), policy, now)?;
                touch(conn, &device.id, origin, now)?;
                return Ok(Rotation::Rotated { device: Box::new(device), refresh_token: successor, scope });
            }
            // Lost the race: the winner has committed by now; read what it wrote.
            match find_by_hash(conn, &hash)? {
                Some(spent) if spent.spent_at.is_some() => spent,
                _ => return Ok(Rotation::Refused),
            }
        }
    };

    // A retry within the grace gets the same successor, but only while that successor is
    // unspent: otherwise a stale token would walk the chain to the live one (RFC 9700 §4.14.2).
    let in_grace = spent.spent_at.is_some_and(|at| policy.in_grace(at, now));
    if in_grace && spent.successor_hash.as_deref() == Some(successor_hash.as_str()) {
        let successor_unspent = find_by_hash(conn, &successor_hash)?.is_some_and(|s| s.spent_at.is_none());
        if successor_unspent {
            touch(conn, &device.id, origin, now)?;
            return Ok(Rotation::Rotated { device: Box::new(device), refresh_token: successor, scope });
        }
    }
    // Reuse: the device keeps its own last-seen, address and user agent; the replaying
    // request's go on the audit event (`by.origin`).
    let by = Attribution {
        actor: &Actor::Client(client_id.to_string()),
        action: AuditAction::RefreshTokenReuse,
        detail: Some("a spent refresh token was presented again after the grace or after its successor was used; device revoked"),
        origin,
    };
    super::devices::end(conn, &device, &by, now)?;
    Ok(Rotation::Reused)
}

/// PostgreSQL: the common case of `rotate` (an unspent token of a live device, no narrower
/// scope) as one statement in autocommit, with no transaction around it: one round trip, and
/// the answer comes back committed. `None` on SQLite, when a scope is asked, or when the token
/// is not in the common case: the caller then runs `rotate` in a write transaction, which tells
/// refused, grace and reuse apart.
pub fn rotate_common_case(
    conn: &mut DbConnection,
    key: &SuccessorKey,
    request: &RefreshRequest<'_>,
    policy: &Policy,
    now: i64,
) -> Result<Option<Rotation>, DbError> {
    let (DbConnection::Pg(pg), None) = (conn, request.scope) else {
        return Ok(None);
    };
    if request.token.is_empty() || request.token.len() > 512 {
        return Ok(None);
    }
    let hash = sha256_b64(request.token.as_bytes());
    rotate_in_one_statement(pg, key, request, &hash, policy, now)
}

/// The happy path of `rotate` on PostgreSQL as one statement (CTEs with `RETURNING`): find the
/// unspent, unexpired token of a live device of this client and an enabled user; touch the
/// device (its row lock first, as revocation takes it); spend the token only if it is still
/// unspent (the conditional write that decides a race); insert the successor. `None` when any
/// step found nothing: the caller then takes the general path, which tells refused, grace and
/// reuse apart exactly as before.
fn rotate_in_one_statement(
    conn: &mut diesel::PgConnection,
    key: &SuccessorKey,
    request: &RefreshRequest<'_>,
    hash: &str,
    policy: &Policy,
    now: i64,
) -> Result<Option<Rotation>, DbError> {
    let successor = key.successor_of(request.token);
    let successor_hash = sha256_b64(successor.as_bytes());
    let statement = RotateStatement {
        hash,
        now,
        client_id: request.client_id,
        ip: request.origin.ip.as_deref(),
        user_agent: request.origin.user_agent.as_deref(),
        successor_hash: &successor_hash,
        new_id: crate::db::new_id(),
        idle_ttl_secs: policy.idle_ttl_secs,
        dpop_jkt: request.dpop_jkt,
    };
    let rotated: Option<Device> = statement.get_result(conn).optional()?;
    let Some(device) = rotated else {
        return Ok(None);
    };
    let scope = narrowed_scope(&device.scope, request.client_scopes).join(" ");
    Ok(Some(Rotation::Rotated { device: Box::new(device), refresh_token: successor, scope }))
}

/// The statement of `rotate_in_one_statement`. A query type of its own rather than
/// `sql_query`, so PostgreSQL prepares it once per connection (diesel caches statements whose
/// SQL is fixed; a `sql_query` is parsed and planned on every call).
struct RotateStatement<'a> {
    hash: &'a str,
    now: i64,
    client_id: &'a str,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    successor_hash: &'a str,
    new_id: String,
    idle_ttl_secs: i64,
    dpop_jkt: Option<&'a str>,
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for RotateStatement<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        use diesel::sql_types::{BigInt, Nullable, Text};
        out.push_sql(
            "WITH presented AS ( \
               SELECT t.id, t.device_id FROM refresh_tokens t \
               JOIN devices d ON d.id = t.device_id JOIN users u ON u.id = d.user_id \
               WHERE t.token_hash = ",
        );
        out.push_bind_param::<Text, _>(&self.hash)?;
        out.push_sql(" AND t.spent_at IS NULL AND t.expires_at > ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(" AND d.client_id = ");
        out.push_bind_param::<Text, _>(&self.client_id)?;
        super::push_live(&mut out, "d", &self.now)?;
        // An unbound device, or one bound to the key this request proved.
        out.push_sql(" AND (d.dpop_jkt IS NULL OR d.dpop_jkt = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.dpop_jkt)?;
        out.push_sql(
            ") AND u.disabled_at IS NULL), \
             touched AS (UPDATE devices SET last_seen_at = ",
        );
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(", ip = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.ip)?;
        out.push_sql(", user_agent = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.user_agent)?;
        // The spending time is the database's clock when this row is written (after any wait
        // for the device's lock), not the request's start: the grace counts from here.
        out.push_sql(&format!(
            " FROM presented WHERE devices.id = presented.device_id AND devices.revoked_at IS NULL \
             RETURNING devices.*), \
             spent AS (UPDATE refresh_tokens SET spent_at = {}",
            crate::db::PG_CLOCK
        ));
        out.push_sql(", successor_hash = ");
        out.push_bind_param::<Text, _>(&self.successor_hash)?;
        out.push_sql(
            " FROM presented, touched WHERE refresh_tokens.id = presented.id \
             AND refresh_tokens.spent_at IS NULL RETURNING refresh_tokens.id), \
             inserted AS (INSERT INTO refresh_tokens (id, device_id, token_hash, parent_id, issued_at, expires_at) \
             SELECT ",
        );
        out.push_bind_param::<Text, _>(&self.new_id)?;
        out.push_sql(", touched.id, ");
        out.push_bind_param::<Text, _>(&self.successor_hash)?;
        out.push_sql(", spent.id, ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(", ");
        super::push_token_expiry(&mut out, &self.now, &self.idle_ttl_secs, "touched.session_expires_at")?;
        out.push_sql(
            " FROM spent, touched RETURNING device_id) \
             SELECT touched.* FROM touched JOIN inserted ON inserted.device_id = touched.id",
        );
        Ok(())
    }
}

/// The statement's identity in diesel's prepared-statement cache (its SQL never varies).
struct RotateStatementId;

impl diesel::query_builder::QueryId for RotateStatement<'_> {
    type QueryId = RotateStatementId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for RotateStatement<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl diesel::RunQueryDsl<diesel::PgConnection> for RotateStatement<'_> {}

fn find_by_hash(conn: &mut DbConnection, hash: &str) -> Result<Option<RefreshTokenRow>, DbError> {
    Ok(refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(hash))
        .select(RefreshTokenRow::as_select())
        .first(conn)
        .optional()?)
}

/// A live (unspent, unexpired) refresh token and its device, for introspection.
pub fn find_live(
    conn: &mut DbConnection,
    token: &str,
    now: i64,
) -> Result<Option<(Device, i64, i64)>, DbError> {
    let Some(row) = find_by_hash(conn, &sha256_b64(token.as_bytes()))? else {
        return Ok(None);
    };
    if row.spent_at.is_some() || row.expires_at <= now {
        return Ok(None);
    }
    let device = super::find_with_user_state(conn, &row.device_id)?;
    Ok(device.filter(|(d, user_disabled)| d.is_live(now) && !user_disabled).map(|(d, _)| {
        let expires_at = row.expires_at.min(d.session_expires_at);
        (d, row.issued_at, expires_at)
    }))
}

/// The device a refresh token (spent or not) belongs to, for revocation.
pub fn device_of(conn: &mut DbConnection, token: &str) -> Result<Option<Device>, DbError> {
    match find_by_hash(conn, &sha256_b64(token.as_bytes()))? {
        Some(row) => super::find(conn, &row.device_id),
        None => Ok(None),
    }
}

/// Deletes refresh tokens past their expiry; returns how many.
pub fn delete_expired(conn: &mut DbConnection, now: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.le(now))).execute(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_successor_is_stable_and_keyed() {
        let a = SuccessorKey(ServerSecret::from_bytes([1; 32]));
        let b = SuccessorKey(ServerSecret::from_bytes([2; 32]));
        assert_eq!(a.successor_of("t"), a.successor_of("t"));
        assert_ne!(a.successor_of("t"), a.successor_of("u"));
        assert_ne!(a.successor_of("t"), b.successor_of("t"));
        assert!(a.successor_of("t").len() >= 43);
    }
}
