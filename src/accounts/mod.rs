//! Users and their provider identities: who a verified sign-in is (found by `(provider,
//! subject)`, never by e-mail), created on first sign-in, disabled, made admin. Their devices
//! are `sessions`; their encrypted profile and linking are `profile`.

pub mod profile;
pub mod provider_tokens;
pub mod search;

use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;

use crate::crypto::blind_index::BlindIndex;
use crate::crypto::user_keys::UserKeys;
use crate::db::schema::{identities, used_assertions, users};
use crate::db::{DbConnection, DbError};
use crate::providers::VerifiedAssertion;
use crate::tokens::nonce::{NonceError, NonceKey};

/// A user row. Personal data is stored only encrypted under the user's key (`*_ct`); the
/// plain `display_name` and `email` columns are left empty (older rows are moved by
/// [`profile::encrypt_existing`]).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub created_at: i64,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub is_admin: bool,
    pub disabled_at: Option<i64>,
    pub display_name_ct: Option<String>,
    pub email_ct: Option<String>,
    /// Whether the provider vouched for the e-mail the user was made with (UserInfo's
    /// `email_verified`); `None` when it did not say, or for users made before it was kept.
    pub email_verified: Option<bool>,
}

/// A provider identity of a user; its e-mail is encrypted, and found through `email_index`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = identities)]
pub struct Identity {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub linked_at: i64,
    pub last_login_at: i64,
    pub email_ct: Option<String>,
    pub email_index: Option<String>,
    /// Set while the provider asked that this identity's sign-in be refused (RISC: hijacked).
    pub sign_in_blocked_at: Option<i64>,
}

/// The keys a sign-in needs: the nonce key, the users' data keys, the e-mail blind index.
pub struct Keys<'a> {
    pub nonces: &'a NonceKey,
    pub user_keys: &'a UserKeys,
    pub blind_index: &'a BlindIndex,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the nonce is unknown, expired, already used, or issued to another client")]
    Nonce,
    #[error("the subject_token was already used")]
    Replayed,
    #[error("the account is disabled")]
    Disabled,
    #[error("the provider reported this account compromised; sign-in with it is refused until the provider re-enables it")]
    Blocked,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for SignInError {
    fn from(e: diesel::result::Error) -> Self {
        SignInError::Db(e.into())
    }
}

impl From<NonceError> for SignInError {
    fn from(e: NonceError) -> Self {
        match e {
            NonceError::Invalid => SignInError::Nonce,
            NonceError::Db(db) => SignInError::Db(db),
        }
    }
}

/// Admits a verified sign-in, in the caller's transaction: spends the nonce and the
/// assertion, finds or creates the user, refuses a disabled one, and stamps the identity's
/// last login. Returns the user's id.
pub fn admit(
    conn: &mut DbConnection,
    keys: &Keys<'_>,
    assertion: &VerifiedAssertion,
    nonce: Option<&str>,
    client_id: &str,
    now: i64,
) -> Result<String, SignInError> {
    spend_proof(conn, keys, assertion, nonce, client_id, now)?;
    let provider = assertion.provider.as_str();
    let (user_id, blocked) = match find_identity(conn, provider, &assertion.subject)? {
        Some(identity) => (identity.user_id, identity.sign_in_blocked_at.is_some()),
        None => match create_user(conn, keys, assertion, now) {
            Ok(user_id) => (user_id, false),
            // A concurrent first sign-in of the same subject created it: use theirs.
            Err(SignInError::Db(DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            )))) => {
                let theirs =
                    find_identity(conn, provider, &assertion.subject)?.ok_or(SignInError::Replayed)?;
                (theirs.user_id, theirs.sign_in_blocked_at.is_some())
            }
            Err(e) => return Err(e),
        },
    };
    if is_disabled_locked(conn, &user_id)? {
        return Err(SignInError::Disabled);
    }
    if blocked {
        return Err(SignInError::Blocked);
    }
    diesel::update(
        identities::table
            .filter(identities::provider.eq(provider))
            .filter(identities::subject.eq(&assertion.subject)),
    )
    .set(identities::last_login_at.eq(now))
    .execute(conn)?;
    if let Some(grant) = &assertion.upstream {
        let keyring = keys.user_keys.keyring();
        provider_tokens::keep(conn, keyring, &user_id, provider, &assertion.subject, grant, now)?;
    }
    Ok(user_id)
}

/// Refuses (or allows again) sign-in with an identity, as its provider asked. `false` when
/// there is no such identity.
pub fn set_sign_in_blocked(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
    blocked: bool,
    now: i64,
) -> Result<bool, DbError> {
    let n = diesel::update(
        identities::table.filter(identities::provider.eq(provider)).filter(identities::subject.eq(subject)),
    )
    .set(identities::sign_in_blocked_at.eq(blocked.then_some(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records that the provider turned the identity's (relay) e-mail off or on again.
pub fn set_email_disabled(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
    disabled: bool,
    now: i64,
) -> Result<bool, DbError> {
    let n = diesel::update(
        identities::table.filter(identities::provider.eq(provider)).filter(identities::subject.eq(subject)),
    )
    .set(identities::email_disabled_at.eq(disabled.then_some(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// The user an identity belongs to, and how many identities that user has.
pub fn owner_of(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
) -> Result<Option<(String, i64)>, DbError> {
    let Some(identity) = find_identity(conn, provider, subject)? else {
        return Ok(None);
    };
    let count: i64 =
        identities::table.filter(identities::user_id.eq(&identity.user_id)).count().get_result(conn)?;
    Ok(Some((identity.user_id, count)))
}

/// Records a provider's event as seen (`replay_key`, until `expires_at`); `false` when it was
/// seen before (a replay).
pub fn first_time(
    conn: &mut DbConnection,
    replay_key: &str,
    provider: &str,
    expires_at: i64,
) -> Result<bool, DbError> {
    match record_assertion(conn, replay_key, provider, expires_at) {
        Ok(()) => Ok(true),
        Err(SignInError::Replayed) => Ok(false),
        Err(SignInError::Db(e)) => Err(e),
        Err(_) => Err(DbError::Task),
    }
}

/// Whether the user is disabled, read under a share lock on their row (PostgreSQL; SQLite's
/// writer is serial) held until the caller's transaction ends. A disable's `UPDATE` of the row
/// conflicts with it: either it waits for this sign-in to commit and then finds its device to
/// revoke, or this read waits for the disable and sees it. Without the lock a disable can list
/// the user's devices while a new one is being inserted, and miss it.
fn is_disabled_locked(conn: &mut DbConnection, user_id: &str) -> Result<bool, DbError> {
    let query = users::table.find(user_id).select(users::disabled_at);
    let disabled: Option<i64> = match conn {
        DbConnection::Pg(c) => query.for_share().first(c)?,
        DbConnection::Sqlite(c) => query.first(c)?,
    };
    Ok(disabled.is_some())
}

/// Spends what makes a provider assertion single use, in the caller's transaction: the
/// request's nonce (issued to `client_id`) and the assertion itself. Sign-in, linking and the
/// browser flow all go through here.
pub fn spend_proof(
    conn: &mut DbConnection,
    keys: &Keys<'_>,
    assertion: &VerifiedAssertion,
    nonce: Option<&str>,
    client_id: &str,
    now: i64,
) -> Result<(), SignInError> {
    if let Some(nonce) = nonce {
        keys.nonces.spend(conn, nonce, client_id, now)?;
    }
    if let Some(hash) = &assertion.assertion_hash {
        record_assertion(conn, hash, assertion.provider.as_str(), assertion.expires_at)?;
    }
    Ok(())
}

/// Records an ID token as used: the primary key decides, also between concurrent requests. A
/// savepoint keeps the transaction usable after the violation (PostgreSQL aborts it otherwise).
fn record_assertion(
    conn: &mut DbConnection,
    hash: &str,
    provider: &str,
    expires_at: i64,
) -> Result<(), SignInError> {
    let recorded = conn.transaction(|c| {
        diesel::insert_into(used_assertions::table)
            .values((
                used_assertions::assertion_hash.eq(hash),
                used_assertions::provider.eq(provider),
                used_assertions::expires_at.eq(expires_at),
            ))
            .execute(c)
    });
    match recorded {
        Err(diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            Err(SignInError::Replayed)
        }
        other => other.map(drop).map_err(SignInError::from),
    }
}

pub fn find_identity(
    conn: &mut DbConnection,
    provider: &str,
    subject: &str,
) -> Result<Option<Identity>, DbError> {
    Ok(identities::table
        .filter(identities::provider.eq(provider))
        .filter(identities::subject.eq(subject))
        .select(Identity::as_select())
        .first(conn)
        .optional()?)
}

/// A new user with this identity and their first data key, in a savepoint so a unique
/// violation (a concurrent first sign-in) leaves the transaction usable. The provider's name
/// and e-mail are stored encrypted under the new key.
fn create_user(
    conn: &mut DbConnection,
    keys: &Keys<'_>,
    assertion: &VerifiedAssertion,
    now: i64,
) -> Result<String, SignInError> {
    conn.transaction(|c| {
        let id = crate::db::new_id();
        let user = User {
            id: id.clone(),
            created_at: now,
            display_name: None,
            email: None,
            is_admin: false,
            disabled_at: None,
            display_name_ct: None,
            email_ct: None,
            email_verified: assertion.email.as_ref().and(assertion.email_verified),
        };
        diesel::insert_into(users::table).values(&user).execute(c)?;
        let dek = keys.user_keys.create(c, &id, 1, now)?;
        let fields = profile::seal_profile(&dek, &id, assertion.name.as_deref(), assertion.email.as_deref());
        diesel::update(users::table.find(&id))
            .set((users::display_name_ct.eq(&fields.display_name), users::email_ct.eq(&fields.email)))
            .execute(c)?;
        diesel::insert_into(identities::table)
            .values(Identity {
                id: crate::db::new_id(),
                user_id: id.clone(),
                provider: assertion.provider.as_str().to_string(),
                subject: assertion.subject.clone(),
                email: None,
                linked_at: now,
                last_login_at: now,
                email_ct: fields.identity_email,
                email_index: assertion.email.as_deref().map(|e| keys.blind_index.of_email(e)),
                sign_in_blocked_at: None,
            })
            .execute(c)?;
        Ok(id)
    })
}

/// Locks the user's row until the caller's transaction ends (a no-op update: a row lock on
/// PostgreSQL; SQLite's writer is serial anyway), so changes to one user's identities or keys
/// queue instead of racing. `false` when there is no such user.
pub fn lock_user(conn: &mut DbConnection, user_id: &str) -> Result<bool, DbError> {
    let n =
        diesel::update(users::table.find(user_id)).set(users::is_admin.eq(users::is_admin)).execute(conn)?;
    Ok(n == 1)
}

pub fn user_exists(conn: &mut DbConnection, user_id: &str) -> Result<bool, DbError> {
    let n: i64 = users::table.filter(users::id.eq(user_id)).count().get_result(conn)?;
    Ok(n > 0)
}

/// Whether the user has the admin role (`idbridge admins grant`); an error when there is no
/// such user.
pub fn is_admin(conn: &mut DbConnection, user_id: &str) -> Result<bool, DbError> {
    Ok(users::table.find(user_id).select(users::is_admin).first(conn)?)
}

/// Grants or takes away the admin role; `false` when there is no such user.
pub fn set_admin(conn: &mut DbConnection, user_id: &str, admin: bool) -> Result<bool, DbError> {
    let n = diesel::update(users::table.find(user_id)).set(users::is_admin.eq(admin)).execute(conn)?;
    Ok(n == 1)
}

/// Disables (from `now`) or enables a user; `false` when there is no such user or it already
/// was so. What else a disable ends is `service::users`.
pub fn set_disabled(
    conn: &mut DbConnection,
    user_id: &str,
    disabled: bool,
    now: i64,
) -> Result<bool, DbError> {
    // Only a change of state writes: disabling twice keeps the first time, and says so.
    let target = users::table.find(user_id);
    let n = if disabled {
        diesel::update(target.filter(users::disabled_at.is_null()))
            .set(users::disabled_at.eq(now))
            .execute(conn)?
    } else {
        diesel::update(target.filter(users::disabled_at.is_not_null()))
            .set(users::disabled_at.eq(None::<i64>))
            .execute(conn)?
    };
    Ok(n == 1)
}
