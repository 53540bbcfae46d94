//! Personal data at rest: the display name and e-mail a provider gives are stored encrypted
//! under the user's data key, and e-mails are found through the keyed blind index. Also the
//! deletion of a user (crypto-shredding) and the move of rows written before encryption.

use chacha20poly1305::XChaCha20Poly1305;
use diesel::prelude::*;

use super::{Identity, User};
use crate::audit::{self, Actor, AuditAction, AuditEvent, Origin};
use crate::crypto::blind_index::BlindIndex;
use crate::crypto::user_keys::{self, UserKeyError, UserKeys};
use crate::db::schema::{identities, users};
use crate::db::{DbConnection, DbError};

/// The contexts personal data is bound to, so a stored name never decrypts as an e-mail.
const DISPLAY_NAME: &str = "idbridge:users.display_name";
const EMAIL: &str = "idbridge:users.email";
const IDENTITY_EMAIL: &str = "idbridge:identities.email";
/// Serialises [`encrypt_existing`] across replicas that start together (PostgreSQL).
const ENCRYPT_EXISTING_LOCK_ID: i64 = 0x1db_da7a;

/// Personal fields sealed under a user's first key, ready to store.
pub struct SealedProfile {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub identity_email: Option<String>,
}

/// Seals a new user's provider name and e-mail under their key version 1.
pub fn seal_profile(
    dek: &XChaCha20Poly1305,
    user_id: &str,
    name: Option<&str>,
    email: Option<&str>,
) -> SealedProfile {
    let seal = |context: &str, value: Option<&str>| {
        value.map(|v| user_keys::seal(dek, user_id, 1, context, v.as_bytes()))
    };
    SealedProfile {
        display_name: seal(DISPLAY_NAME, name),
        email: seal(EMAIL, email),
        identity_email: seal(IDENTITY_EMAIL, email),
    }
}

/// The user as `/v1/me` shows them, personal data decrypted.
pub struct Profile {
    pub user: User,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub identities: Vec<Identity>,
}

fn open_field(
    keys: &UserKeys,
    conn: &mut DbConnection,
    user_id: &str,
    context: &str,
    sealed: Option<&str>,
) -> Result<Option<String>, UserKeyError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    // The user's row was just read, so the user exists: a cached key needs no database read.
    let plain = match keys.decrypt_cached(user_id, context, sealed) {
        Some(plain) => plain?,
        None => keys.decrypt(conn, user_id, context, sealed)?,
    };
    Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
}

/// The user and their identities, with name and e-mail decrypted; `None` when the user is gone.
pub fn profile(
    conn: &mut DbConnection,
    keys: &UserKeys,
    user_id: &str,
) -> Result<Option<Profile>, UserKeyError> {
    // One round trip: the user with each identity (a user always has at least one).
    let rows: Vec<(User, Option<Identity>)> = users::table
        .left_join(identities::table)
        .filter(users::id.eq(user_id))
        .order((identities::linked_at.asc(), identities::id.asc()))
        .select((User::as_select(), Option::<Identity>::as_select()))
        .load(conn)?;
    let Some(user) = rows.first().map(|(user, _)| user.clone()) else {
        return Ok(None);
    };
    let identities: Vec<Identity> = rows.into_iter().filter_map(|(_, identity)| identity).collect();
    let display_name = open_field(keys, conn, user_id, DISPLAY_NAME, user.display_name_ct.as_deref())?;
    let email = open_field(keys, conn, user_id, EMAIL, user.email_ct.as_deref())?;
    Ok(Some(Profile { user, display_name, email, identities }))
}

/// An identity's e-mail, decrypted.
pub fn identity_email(
    conn: &mut DbConnection,
    keys: &UserKeys,
    identity: &Identity,
) -> Result<Option<String>, UserKeyError> {
    open_field(keys, conn, &identity.user_id, IDENTITY_EMAIL, identity.email_ct.as_deref())
}

/// The users with an identity whose e-mail is exactly `email` (after normalisation), through
/// the blind index: no plaintext is scanned.
pub fn find_by_email(
    conn: &mut DbConnection,
    index: &BlindIndex,
    email: &str,
) -> Result<Vec<String>, DbError> {
    Ok(identities::table
        .filter(identities::email_index.eq(index.of_email(email)))
        .select(identities::user_id)
        .distinct()
        .load(conn)?)
}

/// Deletes a user's row, and with it (`ON DELETE CASCADE`) their identities, devices,
/// refresh tokens and every data key (crypto-shredding). `false` when there was no such user.
/// The whole use case (ending the devices everywhere, the audit, the key cache) is
/// `service::users::delete`.
pub fn delete_user(conn: &mut DbConnection, user_id: &str) -> Result<bool, DbError> {
    Ok(diesel::delete(users::table.find(user_id)).execute(conn)? == 1)
}

/// Moves up to `batch` users written before per-user keys: each gets key version 1, and their
/// plain name and e-mails are encrypted, indexed and emptied. Returns how many were moved;
/// run it until it returns 0. Safe to run on several replicas at once (a user is taken only
/// while it still has no key, in the caller's write transaction).
pub fn encrypt_existing(
    conn: &mut DbConnection,
    keys: &UserKeys,
    index: &BlindIndex,
    batch: i64,
    now: i64,
) -> Result<usize, DbError> {
    use crate::db::schema::user_keys as key_rows;
    crate::db::lock_for_transaction(conn, ENCRYPT_EXISTING_LOCK_ID)?;
    let pending: Vec<User> = users::table
        .filter(diesel::dsl::not(diesel::dsl::exists(
            key_rows::table.filter(key_rows::user_id.eq(users::id)),
        )))
        .limit(batch)
        .select(User::as_select())
        .load(conn)?;
    for user in &pending {
        let dek = keys.create(conn, &user.id, 1, now)?;
        let sealed = seal_profile(&dek, &user.id, user.display_name.as_deref(), user.email.as_deref());
        diesel::update(users::table.find(&user.id))
            .set((
                users::display_name_ct.eq(&sealed.display_name),
                users::email_ct.eq(&sealed.email),
                users::display_name.eq(None::<String>),
                users::email.eq(None::<String>),
            ))
            .execute(conn)?;
        let owned: Vec<Identity> = identities::table
            .filter(identities::user_id.eq(&user.id))
            .select(Identity::as_select())
            .load(conn)?;
        for identity in owned {
            let Some(email) = identity.email.as_deref() else { continue };
            let sealed = user_keys::seal(&dek, &user.id, 1, IDENTITY_EMAIL, email.as_bytes());
            diesel::update(identities::table.find(&identity.id))
                .set((
                    identities::email_ct.eq(Some(sealed)),
                    identities::email_index.eq(Some(index.of_email(email))),
                    identities::email.eq(None::<String>),
                ))
                .execute(conn)?;
        }
    }
    Ok(pending.len())
}

/// What linking an identity came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Linked {
    /// A new identity of the user.
    Created,
    /// The identity was already this user's.
    AlreadyTheirs,
    /// The identity belongs to another user, or the user already has one of this provider.
    Conflict(&'static str),
}

/// A link to make: the signed-in user (through `client_id`'s token) and the new assertion.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    pub user_id: &'a str,
    pub client_id: &'a str,
    pub assertion: &'a crate::providers::VerifiedAssertion,
    /// The request's nonce, already matched with the assertion's.
    pub nonce: Option<&'a str>,
    pub origin: &'a Origin,
}

/// Links a freshly verified identity to a signed-in user, in the caller's transaction: spends
/// the nonce (issued to `client_id`) and the assertion as a sign-in would, then adds the
/// identity with its e-mail encrypted and indexed. Never by e-mail: only the verified
/// `(provider, subject)` counts.
pub fn link_identity(
    conn: &mut DbConnection,
    keys: &super::Keys<'_>,
    link: &Link<'_>,
    now: i64,
) -> Result<Linked, super::SignInError> {
    let Link { user_id, client_id, assertion, nonce, origin } = *link;
    if !super::lock_user(conn, user_id)? {
        return Ok(Linked::Conflict("the user no longer exists"));
    }
    let provider = assertion.provider.as_str();
    let existing: Option<String> = identities::table
        .filter(identities::provider.eq(provider))
        .filter(identities::subject.eq(&assertion.subject))
        .select(identities::user_id)
        .first(conn)
        .optional()?;
    let already_theirs = match existing {
        Some(owner) if owner == user_id => true,
        Some(_) => return Ok(Linked::Conflict("this identity belongs to another user")),
        None => false,
    };
    if !already_theirs {
        let same_provider: i64 = identities::table
            .filter(identities::user_id.eq(user_id))
            .filter(identities::provider.eq(provider))
            .count()
            .get_result(conn)?;
        if same_provider > 0 {
            return Ok(Linked::Conflict(
                "the user already has an identity of this provider; remove it first",
            ));
        }
    }
    // The user's own assertion is spent (it is single use, replays fail); a refused one is
    // left usable by its owner.
    super::spend_proof(conn, keys, assertion, nonce, client_id, now)?;
    let keep_grant = |conn: &mut DbConnection| match &assertion.upstream {
        Some(grant) => super::provider_tokens::keep(
            conn,
            keys.user_keys.keyring(),
            user_id,
            provider,
            &assertion.subject,
            grant,
            now,
        ),
        None => Ok(()),
    };
    if already_theirs {
        keep_grant(conn)?;
        return Ok(Linked::AlreadyTheirs);
    }
    let email_ct = match assertion.email.as_deref() {
        Some(email) => Some(
            keys.user_keys
                .encrypt(conn, user_id, IDENTITY_EMAIL, email.as_bytes())
                .map_err(|e| match e {
                    UserKeyError::Db(db) => super::SignInError::Db(db),
                    other => {
                        tracing::error!(error = %other, "cannot encrypt a linked identity's e-mail");
                        super::SignInError::Db(DbError::Task)
                    }
                })?
                .0,
        ),
        None => None,
    };
    // A concurrent link of the same identity loses on the unique (provider, subject) index.
    let inserted = conn.transaction(|c| {
        diesel::insert_into(identities::table)
            .values(Identity {
                id: crate::db::new_id(),
                user_id: user_id.to_string(),
                provider: provider.to_string(),
                subject: assertion.subject.clone(),
                email: None,
                linked_at: now,
                last_login_at: now,
                email_ct,
                email_index: assertion.email.as_deref().map(|e| keys.blind_index.of_email(e)),
                sign_in_blocked_at: None,
            })
            .execute(c)
    });
    match inserted {
        Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)) => {
            return Ok(Linked::Conflict("this identity belongs to another user"));
        }
        other => other?,
    };
    keep_grant(conn)?;
    super::search::mark_stale(conn, user_id)?;
    let detail = format!("provider={provider}");
    let event = AuditEvent {
        actor: &Actor::User(user_id.to_string()),
        action: AuditAction::IdentityLink,
        user_id: Some(user_id),
        device_id: None,
        detail: Some(&detail),
    };
    audit::record(conn, event, origin, now)?;
    Ok(Linked::Created)
}

/// What unlinking came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlinked {
    Removed,
    NotLinked,
    /// It is the user's last identity: they could never sign in again.
    LastIdentity,
}

/// Removes the user's identity of `provider`, unless it is their last one; audited.
pub fn unlink_identity(
    conn: &mut DbConnection,
    user_id: &str,
    provider: &str,
    by: &Actor,
    origin: &Origin,
    now: i64,
) -> Result<Unlinked, DbError> {
    if !super::lock_user(conn, user_id)? {
        return Ok(Unlinked::NotLinked);
    }
    let owned: Vec<String> =
        identities::table.filter(identities::user_id.eq(user_id)).select(identities::provider).load(conn)?;
    if !owned.iter().any(|p| p == provider) {
        return Ok(Unlinked::NotLinked);
    }
    if owned.len() == 1 {
        return Ok(Unlinked::LastIdentity);
    }
    diesel::delete(
        identities::table.filter(identities::user_id.eq(user_id)).filter(identities::provider.eq(provider)),
    )
    .execute(conn)?;
    super::provider_tokens::release(conn, user_id, Some(provider), now)?;
    super::search::mark_stale(conn, user_id)?;
    let detail = format!("provider={provider}");
    let event = AuditEvent {
        actor: by,
        action: AuditAction::IdentityUnlink,
        user_id: Some(user_id),
        device_id: None,
        detail: Some(&detail),
    };
    audit::record(conn, event, origin, now)?;
    Ok(Unlinked::Removed)
}
