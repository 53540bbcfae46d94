//! Use cases that end sessions: one device (its user, its client or an admin asking), or
//! every device of a user.

use crate::audit::AuditAction;
use crate::db::{Db, DbError};
use crate::ids::{DeviceId, UserId};
use crate::sessions::{self, devices, Device};

use super::{Requester, StateChange};

/// Whose device may be ended by this request.
#[derive(Debug, Clone)]
pub enum Owner {
    /// The user's own live device (`DELETE /v1/me/devices/{id}`).
    LiveOfUser(UserId),
    /// Any device of the user (the console).
    User(UserId),
    /// A device this client holds (RFC 7009 revocation).
    Client(String),
}

impl Owner {
    fn owns(&self, device: &Device, now: i64) -> bool {
        match self {
            Owner::LiveOfUser(user) => device.user_id == user.as_str() && device.is_live(now),
            Owner::User(user) => device.user_id == user.as_str(),
            Owner::Client(client) => &device.client_id == client,
        }
    }
}

/// Ends a device when `owner` holds it: its refresh tokens are deleted, its access tokens are
/// refused on every replica, audited as `action`. `None` when the owner has no such device;
/// else whether it ended now (`false`: it had ended already, and nothing was recorded).
pub async fn end(
    db: &Db,
    device: &DeviceId,
    owner: &Owner,
    by: &Requester,
    action: AuditAction,
    detail: Option<&'static str>,
) -> Result<Option<bool>, DbError> {
    let (device, owner, by) = (device.clone(), owner.clone(), by.clone());
    db.write(move |conn| {
        let now = crate::clock::now();
        let found = sessions::find(conn, device.as_str())?.filter(|d| owner.owns(d, now));
        let Some(device) = found else {
            return Ok(None);
        };
        devices::end(conn, &device, &by.doing(action, detail), now).map(Some)
    })
    .await
}

/// Ends every device of a user, with one audit event `action`: `Done` with how many;
/// `AlreadySo` (nothing written or audited) when none was left to end.
pub async fn end_all(
    db: &Db,
    user: &UserId,
    by: &Requester,
    action: AuditAction,
    detail: Option<&'static str>,
) -> Result<StateChange<usize>, DbError> {
    let (user, by) = (user.clone(), by.clone());
    db.write(move |conn| {
        if !crate::accounts::lock_user(conn, user.as_str())? {
            return Ok(StateChange::Missing);
        }
        if devices::unrevoked_of_user(conn, user.as_str())?.is_empty() {
            return Ok(StateChange::AlreadySo);
        }
        devices::end_all(conn, user.as_str(), &by.doing(action, detail), crate::clock::now())
            .map(StateChange::Done)
    })
    .await
}

/// A token presented for revocation (RFC 7009), as far as the endpoint could tell.
pub enum Presented {
    /// A valid access token of the revoking client: its device.
    DeviceOfAccessToken(String),
    /// Anything else: looked up as a refresh token (spent or not).
    Other(String),
}

/// Ends the device a token of `client_id` belongs to, audited as `device.revoke`; a token of
/// another client, or of nothing, changes nothing (RFC 7009 §2.2).
pub async fn revoke_token(db: &Db, client_id: &str, token: Presented, by: &Requester) -> Result<(), DbError> {
    let (client_id, by) = (client_id.to_string(), by.clone());
    db.write(move |conn| {
        let device = match &token {
            Presented::DeviceOfAccessToken(id) => sessions::find(conn, id)?,
            Presented::Other(token) => sessions::refresh::device_of(conn, token)?,
        };
        let Some(device) = device.filter(|d| d.client_id == client_id) else {
            return Ok(());
        };
        let by = by.doing(AuditAction::DeviceRevoke, Some("token revocation (RFC 7009)"));
        devices::end(conn, &device, &by, crate::clock::now())?;
        Ok(())
    })
    .await
}
