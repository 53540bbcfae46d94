//! The audit trail: who did what, to whom, when, from where.

use diesel::prelude::*;

use crate::db::schema::audit_events;
use crate::db::{DbConnection, DbError};

/// Every action the audit log records, for the admin console's filter.
pub const ACTIONS: &[&str] = &[
    "sign_in",
    "device.revoke",
    "device.evicted",
    "user.logout_all",
    "user.revoke_all",
    "user.disable",
    "user.enable",
    "user.delete",
    "identity.link",
    "identity.unlink",
    "refresh_token.reuse",
    "authorization_code.reuse",
    "crypto.encrypt",
    "crypto.decrypt",
    "crypto.rewrap",
    "crypto.rotate",
    "crypto.refused",
    "admin.grant",
    "admin.revoke",
    "admin.sign_in",
    "admin.refused",
    "admin.sign_out",
    "signing_key.rotate",
    "client.create",
    "client.disable",
    "client.enable",
    "client.delete",
];

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditEvent<'a> {
    id: String,
    at: i64,
    actor: &'a str,
    action: &'a str,
    user_id: Option<&'a str>,
    device_id: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: Option<&'a str>,
}

pub struct AuditEvent<'a> {
    /// `user:<id>`, `client:<id>`, `admin:<id>`, `cli` or `system`.
    pub actor: &'a str,
    pub action: &'a str,
    pub user_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub detail: Option<&'a str>,
}

pub fn record(
    conn: &mut DbConnection,
    event: AuditEvent<'_>,
    origin: &Origin,
    now: i64,
) -> Result<(), DbError> {
    diesel::insert_into(audit_events::table)
        .values(NewAuditEvent {
            id: crate::db::new_id(),
            at: now,
            actor: event.actor,
            action: event.action,
            user_id: event.user_id,
            device_id: event.device_id,
            ip: origin.ip.as_deref(),
            user_agent: origin.user_agent.as_deref(),
            detail: event.detail,
        })
        .execute(conn)?;
    Ok(())
}

/// Deletes audit events older than `before`; returns how many.
pub fn delete_older_than(conn: &mut DbConnection, before: i64) -> Result<usize, DbError> {
    Ok(diesel::delete(audit_events::table.filter(audit_events::at.lt(before))).execute(conn)?)
}
