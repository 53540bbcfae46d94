//! Use cases on a user: disable, enable, delete (crypto-shredding), the admin role.

use crate::accounts;
use crate::audit::{AuditAction, AuditEvent};
use crate::crypto::user_keys::UserKeys;
use crate::db::{Db, DbConnection, DbError};
use crate::ids::UserId;
use crate::sessions::devices;

use super::{Requester, StateChange};

impl<T> StateChange<T> {
    fn unchanged(conn: &mut DbConnection, user: &UserId) -> Result<Self, DbError> {
        Ok(if accounts::user_exists(conn, user.as_str())? {
            StateChange::AlreadySo
        } else {
            StateChange::Missing
        })
    }
}

/// Disables a user: their console sessions and every device end at once (ASVS 7.4.2), and
/// sign-in is refused until enabled. `Done` with how many devices ended.
pub async fn disable(
    db: &Db,
    user: &UserId,
    by: &Requester,
    detail: Option<&'static str>,
) -> Result<StateChange<usize>, DbError> {
    let (user, by) = (user.clone(), by.clone());
    db.write(move |conn| {
        let now = crate::clock::now();
        if !accounts::set_disabled(conn, user.as_str(), true, now)? {
            return StateChange::unchanged(conn, &user);
        }
        crate::admin::sessions::end_for_user(conn, user.as_str())?;
        devices::end_all(conn, user.as_str(), &by.doing(AuditAction::UserDisable, detail), now)
            .map(StateChange::Done)
    })
    .await
}

/// Enables a disabled user again (their ended devices stay ended).
pub async fn enable(
    db: &Db,
    user: &UserId,
    by: &Requester,
    detail: Option<&'static str>,
) -> Result<StateChange<()>, DbError> {
    let (user, by) = (user.clone(), by.clone());
    db.write(move |conn| {
        let now = crate::clock::now();
        if !accounts::set_disabled(conn, user.as_str(), false, now)? {
            return StateChange::unchanged(conn, &user);
        }
        by.doing(AuditAction::UserEnable, detail).record(conn, Some(user.as_str()), None, detail, now)?;
        Ok(StateChange::Done(()))
    })
    .await
}

/// Deletes a user with their identities, devices, tokens and every data key
/// (crypto-shredding); their access tokens are refused everywhere at once, and this replica's
/// cached copy of their keys is dropped. `false` for no such user.
pub async fn delete(db: &Db, user_keys: &UserKeys, user: &UserId, by: &Requester) -> Result<bool, DbError> {
    let (id, by) = (user.clone(), by.clone());
    let deleted = db.write(move |conn| delete_in(conn, id.as_str(), &by, crate::clock::now())).await;
    // Evicted whatever the outcome: a failed commit leaves at worst a cache miss.
    user_keys.forget(user.as_str());
    deleted
}

/// The deletion, in the caller's write transaction (the caller drops the cached user key).
pub(crate) fn delete_in(
    conn: &mut DbConnection,
    user_id: &str,
    by: &Requester,
    now: i64,
) -> Result<bool, DbError> {
    if !accounts::lock_user(conn, user_id)? {
        return Ok(false);
    }
    // While the device rows are there: their ends are recorded before they go.
    for device_id in &devices::unrevoked_of_user(conn, user_id)? {
        devices::mark_ended(conn, device_id, now)?;
    }
    if !accounts::profile::delete_user(conn, user_id)? {
        return Ok(false);
    }
    // Revoked at the provider after the commit, and retried until it answers.
    accounts::provider_tokens::release(conn, user_id, None, now)?;
    let event = AuditEvent {
        actor: &by.actor,
        action: AuditAction::UserDelete,
        user_id: Some(user_id),
        device_id: None,
        detail: Some("data keys destroyed"),
    };
    crate::audit::record(conn, event, &by.origin, now)?;
    Ok(true)
}

/// Grants or takes away the admin role, audited; taking it away ends the user's console
/// sessions. `false` for no such user.
pub async fn set_admin(db: &Db, user: &UserId, admin: bool, by: &Requester) -> Result<bool, DbError> {
    let (user, by) = (user.clone(), by.clone());
    db.write(move |conn| {
        let now = crate::clock::now();
        if !accounts::set_admin(conn, user.as_str(), admin)? {
            return Ok(false);
        }
        if !admin {
            crate::admin::sessions::end_for_user(conn, user.as_str())?;
        }
        let action = if admin { AuditAction::AdminGrant } else { AuditAction::AdminRevoke };
        by.doing(action, None).record(conn, Some(user.as_str()), None, None, now)?;
        Ok(true)
    })
    .await
}
