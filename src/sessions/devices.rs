//! Opening and ending devices: a new device with its first refresh token, the device cap,
//! revocation (one device, all of a user's, a client's), paging, and the session maximum.

use diesel::prelude::*;

use super::{live, liveness, refresh, Device, Policy, SignIn};
use crate::audit::{Actor, Attribution, AuditAction, AuditEvent, Origin};
use crate::db::schema::{devices, refresh_tokens};
use crate::db::{DbConnection, DbError};

/// Opens a device for `user_id` with its first refresh token, audits the sign-in, and ends
/// the user's longest-idle device when this one puts them past the cap.
pub fn open(
    conn: &mut DbConnection,
    user_id: &str,
    request: &SignIn,
    policy: &Policy,
    now: i64,
) -> Result<super::SignedIn, DbError> {
    let provider = request.assertion.provider.as_str();
    let device = Device {
        id: crate::db::new_id(),
        user_id: user_id.to_string(),
        client_id: request.client_id.clone(),
        idp: provider.to_string(),
        scope: request.scope.clone(),
        name: request.device_name.clone(),
        platform: request.device_platform.clone(),
        user_agent: request.origin.user_agent.clone(),
        ip: request.origin.ip.clone(),
        created_at: now,
        last_seen_at: now,
        session_expires_at: policy.session_end(now),
        revoked_at: None,
        dpop_jkt: request.dpop_jkt.clone(),
    };
    diesel::insert_into(devices::table).values(&device).execute(conn)?;
    let refresh_token = refresh::issue_first(conn, &device, policy, now)?;
    let actor = Actor::User(user_id.to_string());
    let event = AuditEvent {
        actor: &actor,
        action: AuditAction::SignIn,
        user_id: Some(user_id),
        device_id: Some(&device.id),
        detail: Some(&format!("provider={provider} client={}", request.client_id)),
    };
    crate::audit::record(conn, event, &request.origin, now)?;
    enforce_cap(conn, user_id, policy, &request.origin, now)?;
    Ok(super::SignedIn { user_id: user_id.to_string(), device, refresh_token })
}

/// Past `cap` live devices, the longest-idle ones are ended (audited as `device.evicted`).
pub fn enforce_cap(
    conn: &mut DbConnection,
    user_id: &str,
    policy: &Policy,
    origin: &Origin,
    now: i64,
) -> Result<(), DbError> {
    let cap = policy.max_devices_per_user;
    let live = devices::table.filter(devices::user_id.eq(user_id)).filter(live(now));
    let count: i64 = live.count().get_result(conn)?;
    if !policy.over_cap(count) {
        return Ok(());
    }
    let idlest: Vec<Device> = live
        .order((devices::last_seen_at.asc(), devices::id.asc()))
        .limit(count - cap)
        .select(Device::as_select())
        .load(conn)?;
    let by = Attribution {
        actor: &Actor::System,
        action: AuditAction::DeviceEvicted,
        detail: Some(&format!("the user has more than {cap} live devices; the longest-idle one ends")),
        origin,
    };
    for device in &idlest {
        end(conn, device, &by, now)?;
    }
    Ok(())
}

/// Ends a device: its refresh tokens are deleted, its access tokens fail the liveness check,
/// and the revocation is audited. Returns `false` (and records nothing) when it was already revoked.
pub fn end(
    conn: &mut DbConnection,
    device: &Device,
    by: &Attribution<'_>,
    now: i64,
) -> Result<bool, DbError> {
    if !revoke(conn, &device.id, now)? {
        return Ok(false);
    }
    by.record(conn, Some(&device.user_id), Some(&device.id), by.detail, now)?;
    Ok(true)
}

/// Ends every live device of a user with one audit event; returns how many.
pub fn end_all(
    conn: &mut DbConnection,
    user_id: &str,
    by: &Attribution<'_>,
    now: i64,
) -> Result<usize, DbError> {
    let ids = unrevoked_of_user(conn, user_id)?;
    for id in &ids {
        revoke(conn, id, now)?;
    }
    let detail = match by.detail {
        Some(detail) => format!("{detail}; devices={}", ids.len()),
        None => format!("devices={}", ids.len()),
    };
    by.record(conn, Some(user_id), None, Some(&detail), now)?;
    Ok(ids.len())
}

fn revoke(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<bool, DbError> {
    let revoked = diesel::update(
        devices::table.filter(devices::id.eq(device_id)).filter(devices::revoked_at.is_null()),
    )
    .set(devices::revoked_at.eq(now))
    .execute(conn)?;
    diesel::delete(refresh_tokens::table.filter(refresh_tokens::device_id.eq(device_id))).execute(conn)?;
    if revoked == 1 {
        mark_ended(conn, device_id, now)?;
    }
    Ok(revoked == 1)
}

/// What follows every device's end, in its transaction: its access tokens are refused from
/// memory on every replica (`liveness`), and its client is told (`logout_notices`). The
/// device row must still be there.
pub fn mark_ended(conn: &mut DbConnection, device_id: &str, now: i64) -> Result<(), DbError> {
    liveness::record(conn, device_id, now)?;
    super::logout_notices::enqueue(conn, device_id, now)
}

/// The live devices a client holds (to end them when the client is deleted).
pub fn unrevoked_of_client(conn: &mut DbConnection, client_id: &str) -> Result<Vec<Device>, DbError> {
    Ok(devices::table
        .filter(devices::client_id.eq(client_id))
        .filter(devices::revoked_at.is_null())
        .select(Device::as_select())
        .load(conn)?)
}

/// The ids of a user's devices not yet revoked (to refuse their tokens when the user goes).
pub fn unrevoked_of_user(conn: &mut DbConnection, user_id: &str) -> Result<Vec<String>, DbError> {
    Ok(devices::table
        .filter(devices::user_id.eq(user_id))
        .filter(devices::revoked_at.is_null())
        .select(devices::id)
        .load(conn)?)
}

/// Deletes a device outright, with its refresh tokens (`ON DELETE CASCADE`): for a device whose
/// tokens never left idbridge.
pub fn delete(conn: &mut DbConnection, device_id: &str) -> Result<(), DbError> {
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
pub fn list(
    conn: &mut DbConnection,
    user_id: &str,
    now: i64,
    after: Option<&DeviceCursor>,
    limit: i64,
) -> Result<(Vec<Device>, Option<DeviceCursor>), DbError> {
    let mut query = devices::table.filter(devices::user_id.eq(user_id)).filter(live(now)).into_boxed();
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

/// Brings every live device's session end within today's `refresh_max_ttl`: a device signed
/// in under a longer maximum ends `max_ttl_secs` after its sign-in, as a new one would. (A
/// raised maximum does not lengthen sessions already begun.) A device whose session thereby
/// ended already has its access tokens refused at once, like a revoked one's. Returns how many
/// sessions were shortened.
pub fn apply_session_max(conn: &mut DbConnection, max_ttl_secs: i64, now: i64) -> Result<usize, DbError> {
    let ended_now: Vec<String> = devices::table
        .filter(live(now))
        .filter((devices::created_at + max_ttl_secs).le(now))
        .select(devices::id)
        .load(conn)?;
    for device_id in &ended_now {
        mark_ended(conn, device_id, now)?;
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
pub fn delete_ended(conn: &mut DbConnection, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(
        devices::table
            .filter(devices::revoked_at.lt(before))
            .or_filter(devices::session_expires_at.lt(before)),
    )
    .execute(conn)?)
}

/// Records a successful use of the device: when, from where, with what.
pub fn touch(conn: &mut DbConnection, device_id: &str, origin: &Origin, now: i64) -> Result<(), DbError> {
    diesel::update(devices::table.find(device_id))
        .set((
            devices::last_seen_at.eq(now),
            devices::ip.eq(&origin.ip),
            devices::user_agent.eq(&origin.user_agent),
        ))
        .execute(conn)?;
    Ok(())
}
