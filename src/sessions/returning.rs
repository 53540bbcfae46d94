//! PostgreSQL: a sign-in as one statement in autocommit (CTEs with `RETURNING`), one round
//! trip instead of a dozen. It does what the general sign-in (`accounts::admit`, then
//! `devices::open`) does for a request without a nonce: spend the assertion (single use),
//! record the login, open the device with its first refresh token, audit; for a known identity
//! of an enabled user (`sign_in_returning`) or a new one (`sign_in_new_user`). Anything else (a
//! disabled user, a replayed assertion, a race) comes back as `None`, and the caller
//! (`service::sign_in`) takes the general path in a write transaction, which tells those
//! cases apart.
//!
//! The identity is found first, so a new user's assertion is not spent here (the general path
//! spends it). A replay meets the unique key of `used_assertions` and does nothing.
//!
//! The user's row is read `FOR SHARE`, as `accounts::admit` reads it: a concurrent disable either waits
//! for this statement and then revokes its device, or makes it find the user disabled.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Text};

use super::{refresh, Device, Policy, SignIn, SignedIn};
use crate::audit::AuditAction;
use crate::db::{DbConnection, DbError};

#[derive(QueryableByName)]
struct Opened {
    #[diesel(embed)]
    device: Device,
    /// The user's live devices before this one (for the device cap).
    #[diesel(sql_type = BigInt)]
    live_before: i64,
}

/// What the statement binds.
struct ReturningSignIn<'a> {
    provider: &'a str,
    subject: &'a str,
    assertion_hash: Option<&'a str>,
    assertion_expires_at: i64,
    now: i64,
    device_id: String,
    client_id: &'a str,
    scope: &'a str,
    name: Option<&'a str>,
    platform: Option<&'a str>,
    user_agent: Option<&'a str>,
    ip: Option<&'a str>,
    session_expires_at: i64,
    dpop_jkt: Option<&'a str>,
    token_id: String,
    token_hash: String,
    idle_ttl_secs: i64,
    audit_id: String,
    detail: String,
}

impl<'a> ReturningSignIn<'a> {
    /// The binds of a sign-in of `request`: a new device with the first refresh token (of
    /// which only the hash is bound) and its audit event.
    fn new(request: &'a SignIn, policy: &Policy, refresh_token: &str, now: i64) -> Self {
        let assertion = &request.assertion;
        ReturningSignIn {
            provider: assertion.provider.as_str(),
            subject: &assertion.subject,
            assertion_hash: assertion.assertion_hash.as_deref(),
            assertion_expires_at: assertion.expires_at,
            now,
            device_id: crate::db::new_id(),
            client_id: &request.client_id,
            scope: &request.scope,
            name: request.device_name.as_deref(),
            platform: request.device_platform.as_deref(),
            user_agent: request.origin.user_agent.as_deref(),
            ip: request.origin.ip.as_deref(),
            session_expires_at: policy.session_end(now),
            dpop_jkt: request.dpop_jkt.as_deref(),
            token_id: crate::db::new_id(),
            token_hash: crate::crypto::sha256_b64(refresh_token.as_bytes()),
            idle_ttl_secs: policy.idle_ttl_secs,
            audit_id: crate::db::new_id(),
            detail: format!("provider={} client={}", assertion.provider.as_str(), request.client_id),
        }
    }
}

impl ReturningSignIn<'_> {
    /// The CTEs `dev`, `tok` and `aud`: a device for the user that CTE `source` yields, its
    /// first refresh token, and the sign-in's audit event (ends after `aud`).
    fn push_device_token_audit<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>, source: &str) -> QueryResult<()> {
        out.push_sql(
            "dev AS (INSERT INTO devices (id, user_id, client_id, idp, scope, name, platform, user_agent, ip, \
             created_at, last_seen_at, session_expires_at, dpop_jkt) SELECT ",
        );
        out.push_bind_param::<Text, _>(&self.device_id)?;
        out.push_sql(&format!(", {source}.user_id, "));
        out.push_bind_param::<Text, _>(&self.client_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.provider)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.scope)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.name)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.platform)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.user_agent)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.ip)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.session_expires_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.dpop_jkt)?;
        out.push_sql(&format!(
            " FROM {source} RETURNING *), \
             tok AS (INSERT INTO refresh_tokens (id, device_id, token_hash, issued_at, expires_at) SELECT "
        ));
        out.push_bind_param::<Text, _>(&self.token_id)?;
        out.push_sql(", dev.id, ");
        out.push_bind_param::<Text, _>(&self.token_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(", ");
        super::push_token_expiry(&mut out, &self.now, &self.idle_ttl_secs, "dev.session_expires_at")?;
        out.push_sql(
            " FROM dev RETURNING device_id), \
             aud AS (INSERT INTO audit_events (id, at, actor, action, user_id, device_id, ip, user_agent, detail) \
             SELECT ",
        );
        out.push_bind_param::<Text, _>(&self.audit_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        // The actor and action as `audit::Actor::User` and `AuditAction::SignIn` name them.
        out.push_sql(&format!(
            ", 'user:' || dev.user_id, '{}', dev.user_id, dev.id, ",
            AuditAction::SignIn.as_str()
        ));
        out.push_bind_param::<Nullable<Text>, _>(&self.ip)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.user_agent)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.detail)?;
        out.push_sql(" FROM dev RETURNING device_id)");
        Ok(())
    }
}

/// The statement's identity in diesel's prepared-statement cache (its SQL never varies).
struct ReturningSignInId;

impl QueryId for ReturningSignIn<'_> {
    type QueryId = ReturningSignInId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ReturningSignIn<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl RunQueryDsl<diesel::PgConnection> for ReturningSignIn<'_> {}

impl QueryFragment<Pg> for ReturningSignIn<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH ident AS (SELECT i.id, i.user_id FROM identities i JOIN users u ON u.id = i.user_id \
             WHERE i.provider = ",
        );
        out.push_bind_param::<Text, _>(&self.provider)?;
        out.push_sql(" AND i.subject = ");
        out.push_bind_param::<Text, _>(&self.subject)?;
        out.push_sql(
            " AND u.disabled_at IS NULL AND i.sign_in_blocked_at IS NULL FOR SHARE OF u), \
             spent AS (INSERT INTO used_assertions (assertion_hash, provider, expires_at) SELECT ",
        );
        out.push_bind_param::<Nullable<Text>, _>(&self.assertion_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.provider)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.assertion_expires_at)?;
        out.push_sql(" FROM ident WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&self.assertion_hash)?;
        out.push_sql(
            "::text IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1), \
             proven AS (SELECT ident.id, ident.user_id FROM ident WHERE ",
        );
        out.push_bind_param::<Nullable<Text>, _>(&self.assertion_hash)?;
        out.push_sql(
            "::text IS NULL OR EXISTS (SELECT 1 FROM spent)), \
             touched AS (UPDATE identities SET last_login_at = ",
        );
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(" FROM proven WHERE identities.id = proven.id RETURNING identities.user_id), ");
        self.push_device_token_audit(out.reborrow(), "touched")?;
        out.push_sql(" SELECT dev.*, (SELECT count(*) FROM devices d WHERE d.user_id = dev.user_id");
        super::push_live(&mut out, "d", &self.now)?;
        out.push_sql(
            ") AS live_before FROM dev JOIN tok ON tok.device_id = dev.id JOIN aud ON aud.device_id = dev.id",
        );
        Ok(())
    }
}

/// A returning user's sign-in in one statement (PostgreSQL, no nonce); `None` when the case is
/// not that (see the module). The second value is `true` when this device puts the user past
/// the device cap: the caller then runs `devices::enforce_cap` in a transaction of its own.
pub fn sign_in_returning(
    conn: &mut DbConnection,
    request: &SignIn,
    policy: &Policy,
    now: i64,
) -> Result<Option<(SignedIn, bool)>, DbError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
    if request.nonce.is_some() {
        return Ok(None);
    }
    let refresh_token = refresh::new_token();
    let statement = ReturningSignIn::new(request, policy, &refresh_token, now);
    let opened: Option<Opened> = statement.get_result(pg).optional()?;
    Ok(opened.map(|o| {
        let over_cap = policy.over_cap(o.live_before + 1);
        let signed_in = SignedIn { user_id: o.device.user_id.clone(), device: o.device, refresh_token };
        (signed_in, over_cap)
    }))
}

/// What the new-user statement binds, beyond the device and token of [`ReturningSignIn`].
struct NewUserSignIn<'a> {
    user_id: String,
    display_name_ct: Option<String>,
    email_ct: Option<String>,
    email_verified: Option<bool>,
    wrapped: Vec<u8>,
    wrapped_by: String,
    identity_id: String,
    identity_email_ct: Option<String>,
    email_index: Option<String>,
    device: ReturningSignIn<'a>,
}

struct NewUserSignInId;

impl QueryId for NewUserSignIn<'_> {
    type QueryId = NewUserSignInId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for NewUserSignIn<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl RunQueryDsl<diesel::PgConnection> for NewUserSignIn<'_> {}

impl QueryFragment<Pg> for NewUserSignIn<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::sql_types::{Binary, Integer};
        let d = &self.device;
        out.push_sql(
            "WITH u AS (INSERT INTO users (id, created_at, is_admin, display_name_ct, email_ct, email_verified) VALUES (",
        );
        out.push_bind_param::<Text, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&d.now)?;
        out.push_sql(", false, ");
        out.push_bind_param::<Nullable<Text>, _>(&self.display_name_ct)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.email_ct)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<diesel::sql_types::Bool>, _>(&self.email_verified)?;
        out.push_sql(
            ") RETURNING id), \
             k AS (INSERT INTO user_keys (user_id, version, wrapped, wrapped_by, created_at) SELECT u.id, ",
        );
        out.push_bind_param::<Integer, _>(&1)?;
        out.push_sql(", ");
        out.push_bind_param::<Binary, _>(&self.wrapped)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.wrapped_by)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&d.now)?;
        out.push_sql(
            " FROM u RETURNING user_id), \
             i AS (INSERT INTO identities (id, user_id, provider, subject, linked_at, last_login_at, email_ct, \
             email_index) SELECT ",
        );
        out.push_bind_param::<Text, _>(&self.identity_id)?;
        out.push_sql(", k.user_id, ");
        out.push_bind_param::<Text, _>(&d.provider)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&d.subject)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&d.now)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&d.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.identity_email_ct)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.email_index)?;
        // No ON CONFLICT: an identity that exists (a concurrent first sign-in) or a replayed
        // assertion fails the statement, and all of it is undone.
        out.push_sql(
            " FROM k RETURNING user_id), \
             spent AS (INSERT INTO used_assertions (assertion_hash, provider, expires_at) SELECT ",
        );
        out.push_bind_param::<Nullable<Text>, _>(&d.assertion_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&d.provider)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&d.assertion_expires_at)?;
        out.push_sql(" FROM i WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&d.assertion_hash)?;
        out.push_sql("::text IS NOT NULL RETURNING 1), proven AS (SELECT i.user_id FROM i WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&d.assertion_hash)?;
        out.push_sql("::text IS NULL OR EXISTS (SELECT 1 FROM spent)), ");
        d.push_device_token_audit(out.reborrow(), "proven")?;
        out.push_sql(
            " SELECT dev.*, 0::bigint AS live_before FROM dev JOIN tok ON tok.device_id = dev.id \
             JOIN aud ON aud.device_id = dev.id",
        );
        Ok(())
    }
}

/// A new user's first sign-in in one statement (PostgreSQL, no nonce): the user, their first
/// data key (made and wrapped here), the identity with its sealed e-mail and blind index, the
/// spent assertion, the device, its refresh token and the audit event. `None` when the subject
/// already has an identity (a concurrent first sign-in won) or the assertion was used: the
/// statement failed as a whole, and the caller runs `sign_in`, which tells those apart.
pub fn sign_in_new_user(
    conn: &mut DbConnection,
    request: &SignIn,
    policy: &Policy,
    keys: &crate::accounts::Keys<'_>,
    now: i64,
) -> Result<Option<SignedIn>, DbError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(None);
    };
    if request.nonce.is_some() {
        return Ok(None);
    }
    let assertion = &request.assertion;
    let user_id = crate::db::new_id();
    let (dek, wrapped, wrapped_by) = keys.user_keys.new_key(&user_id, 1);
    let cipher =
        <chacha20poly1305::XChaCha20Poly1305 as chacha20poly1305::KeyInit>::new(dek.as_slice().into());
    let sealed = crate::accounts::profile::seal_profile(
        &cipher,
        &user_id,
        assertion.name.as_deref(),
        assertion.email.as_deref(),
    );
    let refresh_token = refresh::new_token();
    let statement = NewUserSignIn {
        user_id,
        display_name_ct: sealed.display_name,
        email_ct: sealed.email,
        email_verified: assertion.email.as_ref().and(assertion.email_verified),
        wrapped,
        wrapped_by,
        identity_id: crate::db::new_id(),
        identity_email_ct: sealed.identity_email,
        email_index: assertion.email.as_deref().map(|e| keys.blind_index.of_email(e)),
        device: ReturningSignIn::new(request, policy, &refresh_token, now),
    };
    match statement.get_result::<Opened>(pg).optional() {
        Ok(Some(o)) => {
            Ok(Some(SignedIn { user_id: o.device.user_id.clone(), device: o.device, refresh_token }))
        }
        Ok(None) => Ok(None),
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
