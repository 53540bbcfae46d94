//! Tokens a provider gave idbridge for a user: Sign in with Apple's refresh token, kept only
//! to be revoked at Apple when the account goes (App Store Review Guideline 5.1.1(v)).
//!
//! Each is wrapped by the master keyring like every stored secret, its AAD naming its row.
//! Deleting the user (or unlinking the identity) releases the row in the same transaction: it
//! loses its user and becomes due for revocation. Revoking happens after the commit, outside
//! any transaction (`housekeeping::revoke_released`), and is retried until the provider
//! answers; it never holds a deletion up.

use diesel::prelude::*;
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::keyring::MasterKeyring;
use crate::db::schema::provider_tokens;
use crate::db::{notify, DbConnection, DbError};
use crate::providers::UpstreamGrant;

/// The change notice a release publishes: the revoker looks at once.
pub const RELEASED: &str = "provider-tokens";
/// The first retry comes this soon after a failed revoke; each further one waits twice as long.
const FIRST_RETRY_SECS: i64 = 2;
const MAX_RETRY_SECS: i64 = 6 * 3600;
/// A token the provider could not be told about for this long is given up (and logged):
/// Apple's refresh tokens of a deleted account are useless to anyone but idbridge anyway.
pub const GIVE_UP_AFTER_ATTEMPTS: i32 = 40;
/// How long a replica holds a claimed revocation before another may try it.
pub const CLAIM_SECS: i64 = 60;

fn aad(id: &str) -> String {
    format!("idbridge:provider-token:{id}")
}

/// Keeps the token `grant` carries for `user_id`'s identity `(provider, subject)`, replacing
/// the one kept for the same client (the newest authorization is the one to revoke).
pub fn keep(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    user_id: &str,
    provider: &str,
    subject: &str,
    grant: &UpstreamGrant,
    now: i64,
) -> Result<(), DbError> {
    diesel::delete(
        provider_tokens::table
            .filter(provider_tokens::provider.eq(provider))
            .filter(provider_tokens::subject.eq(subject))
            .filter(provider_tokens::client_id.eq(&grant.client_id))
            .filter(provider_tokens::revoke_next_at.is_null()),
    )
    .execute(conn)?;
    let id = uuid::Uuid::new_v4().to_string();
    let wrapped = keyring.wrap(grant.refresh_token.expose_secret().as_bytes(), aad(&id).as_bytes());
    diesel::insert_into(provider_tokens::table)
        .values((
            provider_tokens::id.eq(&id),
            provider_tokens::user_id.eq(Some(user_id)),
            provider_tokens::provider.eq(provider),
            provider_tokens::subject.eq(subject),
            provider_tokens::client_id.eq(&grant.client_id),
            provider_tokens::wrapped.eq(wrapped),
            provider_tokens::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Releases a user's tokens, due for revocation now: all of them (the user is being deleted)
/// or one provider's (that identity is being unlinked). Returns how many.
pub fn release(
    conn: &mut DbConnection,
    user_id: &str,
    provider: Option<&str>,
    now: i64,
) -> Result<usize, DbError> {
    let mut of_user = provider_tokens::table.filter(provider_tokens::user_id.eq(user_id)).into_boxed();
    if let Some(provider) = provider {
        of_user = of_user.filter(provider_tokens::provider.eq(provider));
    }
    let ids: Vec<String> = of_user.select(provider_tokens::id).load(conn)?;
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(provider_tokens::table.filter(provider_tokens::id.eq_any(&ids)))
        .set((provider_tokens::user_id.eq(None::<String>), provider_tokens::revoke_next_at.eq(Some(now))))
        .execute(conn)?;
    notify::publish(conn, RELEASED, "")?;
    Ok(ids.len())
}

/// A released token, due for revocation.
pub struct Release {
    pub id: String,
    pub provider: String,
    pub client_id: String,
    pub token: SecretString,
    pub attempts: i32,
}

/// Claims up to `limit` due revocations for this replica for [`CLAIM_SECS`]: each is moved
/// forward only if no other replica moved it first. A token no key of the keyring opens is
/// dropped (it could never be revoked).
pub fn claim_due(
    conn: &mut DbConnection,
    keyring: &MasterKeyring,
    now: i64,
    limit: i64,
) -> Result<Vec<Release>, DbError> {
    type Row = (String, String, String, Vec<u8>, i64, i32);
    let rows: Vec<Row> = provider_tokens::table
        .filter(provider_tokens::user_id.is_null())
        .filter(provider_tokens::revoke_next_at.le(now))
        .order(provider_tokens::revoke_next_at.asc())
        .limit(limit)
        .select((
            provider_tokens::id,
            provider_tokens::provider,
            provider_tokens::client_id,
            provider_tokens::wrapped,
            provider_tokens::revoke_next_at.assume_not_null(),
            provider_tokens::revoke_attempts,
        ))
        .load(conn)?;
    let mut claimed = Vec::with_capacity(rows.len());
    for (id, provider, client_id, wrapped, due, attempts) in rows {
        let won = diesel::update(
            provider_tokens::table.find(&id).filter(provider_tokens::revoke_next_at.eq(Some(due))),
        )
        .set(provider_tokens::revoke_next_at.eq(Some(now + CLAIM_SECS)))
        .execute(conn)?;
        if won != 1 {
            continue;
        }
        let token =
            keyring.unwrap(&wrapped, aad(&id).as_bytes()).ok().and_then(|p| String::from_utf8(p).ok());
        match token {
            Some(token) => {
                claimed.push(Release { id, provider, client_id, token: SecretString::from(token), attempts })
            }
            None => {
                tracing::error!(provider, "a released provider token cannot be unwrapped; dropped");
                diesel::delete(provider_tokens::table.find(&id)).execute(conn)?;
            }
        }
    }
    Ok(claimed)
}

/// The provider has the token revoked (or no longer knows it): forget it.
pub fn revoked(conn: &mut DbConnection, id: &str) -> Result<(), DbError> {
    diesel::delete(provider_tokens::table.find(id)).execute(conn)?;
    Ok(())
}

/// A revoke that failed: try again later, backing off; `false` when it is given up.
pub fn retry_later(conn: &mut DbConnection, id: &str, attempts: i32, now: i64) -> Result<bool, DbError> {
    let attempts = attempts.saturating_add(1);
    if attempts >= GIVE_UP_AFTER_ATTEMPTS {
        diesel::delete(provider_tokens::table.find(id)).execute(conn)?;
        return Ok(false);
    }
    let wait =
        FIRST_RETRY_SECS.saturating_mul(1_i64 << attempts.clamp(1, 20).saturating_sub(1)).min(MAX_RETRY_SECS);
    diesel::update(provider_tokens::table.find(id))
        .set((
            provider_tokens::revoke_attempts.eq(attempts),
            provider_tokens::revoke_next_at.eq(Some(now + wait)),
        ))
        .execute(conn)?;
    Ok(true)
}

/// When the next released token is due, if any is waiting.
pub fn next_due(conn: &mut DbConnection) -> Result<Option<i64>, DbError> {
    Ok(provider_tokens::table
        .filter(provider_tokens::user_id.is_null())
        .select(diesel::dsl::min(provider_tokens::revoke_next_at))
        .first::<Option<i64>>(conn)?)
}

/// Rewraps every token not yet under the keyring's first key (`keys rotate-master`). A token
/// no key opens is left as it is (and reported by `keys status`). Returns (rewrapped, total).
pub fn rewrap_all(conn: &mut DbConnection, keyring: &MasterKeyring) -> Result<(usize, usize), DbError> {
    let rows: Vec<(String, Vec<u8>)> =
        provider_tokens::table.select((provider_tokens::id, provider_tokens::wrapped)).load(conn)?;
    let mut rewrapped = 0;
    for (id, wrapped) in &rows {
        if keyring.is_current(wrapped) {
            continue;
        }
        let Ok(plain) = keyring.unwrap(wrapped, aad(id).as_bytes()) else { continue };
        diesel::update(provider_tokens::table.find(id))
            .set(provider_tokens::wrapped.eq(keyring.wrap(&plain, aad(id).as_bytes())))
            .execute(conn)?;
        rewrapped += 1;
    }
    Ok((rewrapped, rows.len()))
}
