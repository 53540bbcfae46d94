//! Users, their provider identities and their devices: sign-in, listing, revocation.
//! A user is found by `(provider, subject)`, never by email.

pub mod audit;
pub mod profile;
pub mod returning;

use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;

use crate::crypto::blind_index::BlindIndex;
use crate::crypto::user_keys::UserKeys;
use crate::db::schema::{devices, identities, refresh_tokens, used_assertions, users};
use crate::db::{DbConnection, DbError};
use crate::providers::VerifiedAssertion;
use crate::tokens::nonce::{NonceError, NonceKey};
use crate::tokens::refresh::{self, SessionPolicy};
use audit::{AuditEvent, Origin};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = devices)]
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
}

impl Device {
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.session_expires_at > now
    }
}

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
}

/// The keys a sign-in needs: the nonce key, the users' data keys, the e-mail blind index.
pub struct Keys<'a> {
    pub nonces: &'a NonceKey,
    pub user_keys: &'a UserKeys,
    pub blind_index: &'a BlindIndex,
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
}

pub struct SignedIn {
    pub user_id: String,
    pub device: Device,
    pub refresh_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the nonce is unknown, expired, already used, or issued to another client")]
    Nonce,
    #[error("the subject_token was already used")]
    Replayed,
    #[error("the account is disabled")]
    Disabled,
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

/// Records a sign-in in one transaction (the caller's): spends the nonce and the assertion,
/// finds or creates the user, opens a new device with its first refresh token, and ends the
/// user's longest-idle device when that puts them past the device cap.
pub fn sign_in(
    conn: &mut DbConnection,
    request: &SignIn,
    policy: &SessionPolicy,
    keys: &Keys<'_>,
    now: i64,
) -> Result<SignedIn, SignInError> {
    let assertion = &request.assertion;
    spend_proof(conn, keys, assertion, request.nonce.as_deref(), &request.client_id, now)?;

    let provider = assertion.provider.as_str();
    let user_id = match find_identity(conn, provider, &assertion.subject)? {
        Some(identity) => identity.user_id,
        None => match create_user(conn, keys, assertion, now) {
            Ok(user_id) => user_id,
            // A concurrent first sign-in of the same subject created it: use theirs.
            Err(SignInError::Db(DbError::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            )))) => find_identity(conn, provider, &assertion.subject)?.ok_or(SignInError::Replayed)?.user_id,
            Err(e) => return Err(e),
        },
    };
    if is_disabled_locked(conn, &user_id)? {
        return Err(SignInError::Disabled);
    }
    diesel::update(
        identities::table
            .filter(identities::provider.eq(provider))
            .filter(identities::subject.eq(&assertion.subject)),
    )
    .set(identities::last_login_at.eq(now))
    .execute(conn)?;

    let device = Device {
        id: crate::db::new_id(),
        user_id: user_id.clone(),
        client_id: request.client_id.clone(),
        idp: provider.to_string(),
        scope: request.scope.clone(),
        name: request.device_name.clone(),
        platform: request.device_platform.clone(),
        user_agent: request.origin.user_agent.clone(),
        ip: request.origin.ip.clone(),
        created_at: now,
        last_seen_at: now,
        session_expires_at: now + policy.max_ttl_secs,
        revoked_at: None,
    };
    diesel::insert_into(devices::table).values(&device).execute(conn)?;
    let refresh_token = refresh::issue_first(conn, &device, policy, now)?;
    audit::record(
        conn,
        AuditEvent {
            actor: &format!("user:{user_id}"),
            action: "sign_in",
            user_id: Some(&user_id),
            device_id: Some(&device.id),
            detail: Some(&format!("provider={provider} client={}", request.client_id)),
        },
        &request.origin,
        now,
    )?;
    enforce_device_cap(conn, &user_id, policy.max_devices_per_user, &request.origin, now)?;
    Ok(SignedIn { user_id, device, refresh_token })
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

/// Past `cap` live devices, the longest-idle ones are ended (audited as `device.evicted`).
pub fn enforce_device_cap(
    conn: &mut DbConnection,
    user_id: &str,
    cap: i64,
    origin: &Origin,
    now: i64,
) -> Result<(), DbError> {
    let live = devices::table
        .filter(devices::user_id.eq(user_id))
        .filter(devices::revoked_at.is_null())
        .filter(devices::session_expires_at.gt(now));
    let count: i64 = live.count().get_result(conn)?;
    if count <= cap {
        return Ok(());
    }
    let idlest: Vec<Device> = live
        .order((devices::last_seen_at.asc(), devices::id.asc()))
        .limit(count - cap)
        .select(Device::as_select())
        .load(conn)?;
    let by = Revocation {
        actor: "system",
        action: "device.evicted",
        detail: Some(&format!("the user has more than {cap} live devices; the longest-idle one ends")),
        origin,
    };
    for device in &idlest {
        end_device(conn, device, &by, now)?;
    }
    Ok(())
}

fn find_identity(
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
            })
            .execute(c)?;
        Ok(id)
    })
}

pub fn find_device(conn: &mut DbConnection, device_id: &str) -> Result<Option<Device>, DbError> {
    Ok(devices::table.find(device_id).select(Device::as_select()).first(conn).optional()?)
}

/// A device and whether its user is disabled, in one read.
pub fn find_device_and_user_state(
    conn: &mut DbConnection,
    device_id: &str,
) -> Result<Option<(Device, bool)>, DbError> {
    let found: Option<(Device, Option<i64>)> = devices::table
        .inner_join(users::table)
        .filter(devices::id.eq(device_id))
        .select((Device::as_select(), users::disabled_at))
        .first(conn)
        .optional()?;
    Ok(found.map(|(device, disabled_at)| (device, disabled_at.is_some())))
}

/// `true` while the device may use its tokens: not revoked, session not past its maximum,
/// and its user not disabled.
pub fn is_device_live(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<bool, DbError> {
    let live: i64 = devices::table
        .inner_join(users::table)
        .filter(devices::id.eq(device_id))
        .filter(devices::revoked_at.is_null())
        .filter(devices::session_expires_at.gt(now))
        .filter(users::disabled_at.is_null())
        .count()
        .get_result(conn)?;
    Ok(live > 0)
}

/// Who ends a session and why, for the audit trail.
pub struct Revocation<'a> {
    /// `user:<id>`, `client:<id>`, `admin:<id>` or `cli`.
    pub actor: &'a str,
    pub action: &'a str,
    pub detail: Option<&'a str>,
    pub origin: &'a Origin,
}

impl Revocation<'_> {
    /// The audit event of this change to `user_id` (and `device_id`).
    fn record(
        &self,
        conn: &mut DbConnection,
        user_id: &str,
        device_id: Option<&str>,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), DbError> {
        let event =
            AuditEvent { actor: self.actor, action: self.action, user_id: Some(user_id), device_id, detail };
        audit::record(conn, event, self.origin, now)
    }
}

/// Ends a device: its refresh tokens are deleted, its access tokens fail the liveness check,
/// and the revocation is audited. Returns `false` (and records nothing) when it was already revoked.
pub fn end_device(
    conn: &mut DbConnection,
    device: &Device,
    by: &Revocation<'_>,
    now: i64,
) -> Result<bool, DbError> {
    if !revoke_device(conn, &device.id, now)? {
        return Ok(false);
    }
    by.record(conn, &device.user_id, Some(&device.id), by.detail, now)?;
    Ok(true)
}

/// Ends every live device of a user with one audit event; returns how many.
pub fn end_all_devices(
    conn: &mut DbConnection,
    user_id: &str,
    by: &Revocation<'_>,
    now: i64,
) -> Result<usize, DbError> {
    let ids: Vec<String> = devices::table
        .filter(devices::user_id.eq(user_id))
        .filter(devices::revoked_at.is_null())
        .select(devices::id)
        .load(conn)?;
    for id in &ids {
        revoke_device(conn, id, now)?;
    }
    let detail = match by.detail {
        Some(detail) => format!("{detail}; devices={}", ids.len()),
        None => format!("devices={}", ids.len()),
    };
    by.record(conn, user_id, None, Some(&detail), now)?;
    Ok(ids.len())
}

fn revoke_device(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<bool, DbError> {
    let revoked = diesel::update(
        devices::table.filter(devices::id.eq(device_id)).filter(devices::revoked_at.is_null()),
    )
    .set(devices::revoked_at.eq(now))
    .execute(conn)?;
    diesel::delete(refresh_tokens::table.filter(refresh_tokens::device_id.eq(device_id))).execute(conn)?;
    if revoked == 1 {
        // Its access tokens are refused from memory on every replica (tokens::liveness).
        crate::tokens::liveness::record(conn, device_id, now)?;
    }
    Ok(revoked == 1)
}

/// The live devices a client holds (to end them when the client is deleted).
pub fn live_devices_of_client(conn: &mut DbConnection, client_id: &str) -> Result<Vec<Device>, DbError> {
    Ok(devices::table
        .filter(devices::client_id.eq(client_id))
        .filter(devices::revoked_at.is_null())
        .select(Device::as_select())
        .load(conn)?)
}

/// Deletes a device outright, with its refresh tokens (`ON DELETE CASCADE`): for a device whose
/// tokens never left idbridge.
pub fn delete_device(conn: &mut DbConnection, device_id: &str) -> Result<(), DbError> {
    diesel::delete(devices::table.find(device_id)).execute(conn)?;
    Ok(())
}

/// Where a page of devices starts: after the device with this creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCursor {
    pub created_at: i64,
    pub id: String,
}

/// One page of the user's devices that can still be used, newest first, and where the next
/// page starts (when there is one).
pub fn list_devices(
    conn: &mut DbConnection,
    user_id: &str,
    now: i64,
    after: Option<&DeviceCursor>,
    limit: i64,
) -> Result<(Vec<Device>, Option<DeviceCursor>), DbError> {
    let mut query = devices::table
        .filter(devices::user_id.eq(user_id))
        .filter(devices::revoked_at.is_null())
        .filter(devices::session_expires_at.gt(now))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(
            devices::created_at
                .lt(after.created_at)
                .or(devices::created_at.eq(after.created_at).and(devices::id.lt(after.id.clone()))),
        );
    }
    let mut page: Vec<Device> = query
        .order((devices::created_at.desc(), devices::id.desc()))
        .limit(limit + 1)
        .select(Device::as_select())
        .load(conn)?;
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|d| DeviceCursor { created_at: d.created_at, id: d.id.clone() })
    } else {
        None
    };
    Ok((page, next))
}

/// Disables or enables a user, audited. Disabling ends every device at once (ASVS 7.4.2);
/// enabling lets the user sign in again. `None` when there is no such user.
pub fn set_disabled(
    conn: &mut DbConnection,
    user_id: &str,
    disabled: bool,
    by: &Revocation<'_>,
    now: i64,
) -> Result<Option<usize>, DbError> {
    if !user_exists(conn, user_id)? {
        return Ok(None);
    }
    diesel::update(users::table.find(user_id))
        .set(users::disabled_at.eq(disabled.then_some(now)))
        .execute(conn)?;
    if disabled {
        crate::admin::sessions::end_for_user(conn, user_id)?;
        return end_all_devices(conn, user_id, by, now).map(Some);
    }
    by.record(conn, user_id, None, by.detail, now)?;
    Ok(Some(0))
}

/// Brings every live device's session end within today's `refresh_max_ttl`: a device signed
/// in under a longer maximum ends `max_ttl_secs` after its sign-in, as a new one would. (A
/// raised maximum does not lengthen sessions already begun.) A device whose session thereby
/// ended already has its access tokens refused at once, like a revoked one's. Returns how many
/// sessions were shortened.
pub fn apply_session_max(conn: &mut DbConnection, max_ttl_secs: i64, now: i64) -> Result<usize, DbError> {
    let ended_now: Vec<String> = devices::table
        .filter(devices::revoked_at.is_null())
        .filter(devices::session_expires_at.gt(now))
        .filter((devices::created_at + max_ttl_secs).le(now))
        .select(devices::id)
        .load(conn)?;
    for device_id in &ended_now {
        crate::tokens::liveness::record(conn, device_id, now)?;
    }
    Ok(diesel::update(
        devices::table
            .filter(devices::revoked_at.is_null())
            .filter(devices::session_expires_at.gt(devices::created_at + max_ttl_secs)),
    )
    .set(devices::session_expires_at.eq(devices::created_at + max_ttl_secs))
    .execute(conn)?)
}

/// Deletes devices revoked, or whose session ended, before `before`; their refresh tokens go
/// with them (`ON DELETE CASCADE`).
pub fn delete_ended_devices(conn: &mut DbConnection, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(
        devices::table
            .filter(devices::revoked_at.lt(before))
            .or_filter(devices::session_expires_at.lt(before)),
    )
    .execute(conn)?)
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

/// Grants or takes away the admin role; `false` when there is no such user. Taking it away
/// ends the user's admin console sessions.
pub fn set_admin(conn: &mut DbConnection, user_id: &str, admin: bool) -> Result<bool, DbError> {
    let n = diesel::update(users::table.find(user_id)).set(users::is_admin.eq(admin)).execute(conn)?;
    if !admin {
        crate::admin::sessions::end_for_user(conn, user_id)?;
    }
    Ok(n == 1)
}
