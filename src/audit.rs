//! The audit trail: who did what, to whom, when, from where. The vocabulary is typed:
//! [`Actor`] and [`AuditAction`] are written to the database as their names.

use diesel::prelude::*;

use crate::db::schema::audit_events;
use crate::db::{DbConnection, DbError};

/// Every action the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    SignIn,
    /// A sign-in refused: a provider's refusal or a bad assertion, a disabled user, a blocked
    /// identity, a reused nonce or assertion. The assertion itself is never recorded.
    SignInRefused,
    DeviceRevoke,
    DeviceEvicted,
    UserLogoutAll,
    UserRevokeAll,
    UserDisable,
    UserEnable,
    UserDelete,
    IdentityLink,
    IdentityUnlink,
    RefreshTokenReuse,
    AuthorizationCodeReuse,
    CryptoEncrypt,
    CryptoDecrypt,
    CryptoRewrap,
    CryptoRotate,
    CryptoRefused,
    AdminGrant,
    AdminRevoke,
    AdminSignIn,
    AdminRefused,
    AdminSignOut,
    SigningKeyRotate,
    ClientCreate,
    ClientDisable,
    ClientEnable,
    ClientDelete,
    /// A provider told idbridge about an account (RISC, Facebook, Apple); the detail names it.
    ProviderEvent,
    /// A back-channel logout notice could not be delivered for 24 hours and was given up.
    BackchannelLogoutFailed,
}

impl AuditAction {
    /// Every action, in the order the console's filter lists them.
    pub const ALL: [AuditAction; 30] = [
        AuditAction::SignIn,
        AuditAction::SignInRefused,
        AuditAction::DeviceRevoke,
        AuditAction::DeviceEvicted,
        AuditAction::UserLogoutAll,
        AuditAction::UserRevokeAll,
        AuditAction::UserDisable,
        AuditAction::UserEnable,
        AuditAction::UserDelete,
        AuditAction::IdentityLink,
        AuditAction::IdentityUnlink,
        AuditAction::RefreshTokenReuse,
        AuditAction::AuthorizationCodeReuse,
        AuditAction::CryptoEncrypt,
        AuditAction::CryptoDecrypt,
        AuditAction::CryptoRewrap,
        AuditAction::CryptoRotate,
        AuditAction::CryptoRefused,
        AuditAction::AdminGrant,
        AuditAction::AdminRevoke,
        AuditAction::AdminSignIn,
        AuditAction::AdminRefused,
        AuditAction::AdminSignOut,
        AuditAction::SigningKeyRotate,
        AuditAction::ClientCreate,
        AuditAction::ClientDisable,
        AuditAction::ClientEnable,
        AuditAction::ClientDelete,
        AuditAction::ProviderEvent,
        AuditAction::BackchannelLogoutFailed,
    ];

    /// The name stored in `audit_events.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SignIn => "sign_in",
            AuditAction::SignInRefused => "sign_in.refused",
            AuditAction::DeviceRevoke => "device.revoke",
            AuditAction::DeviceEvicted => "device.evicted",
            AuditAction::UserLogoutAll => "user.logout_all",
            AuditAction::UserRevokeAll => "user.revoke_all",
            AuditAction::UserDisable => "user.disable",
            AuditAction::UserEnable => "user.enable",
            AuditAction::UserDelete => "user.delete",
            AuditAction::IdentityLink => "identity.link",
            AuditAction::IdentityUnlink => "identity.unlink",
            AuditAction::RefreshTokenReuse => "refresh_token.reuse",
            AuditAction::AuthorizationCodeReuse => "authorization_code.reuse",
            AuditAction::CryptoEncrypt => "crypto.encrypt",
            AuditAction::CryptoDecrypt => "crypto.decrypt",
            AuditAction::CryptoRewrap => "crypto.rewrap",
            AuditAction::CryptoRotate => "crypto.rotate",
            AuditAction::CryptoRefused => "crypto.refused",
            AuditAction::AdminGrant => "admin.grant",
            AuditAction::AdminRevoke => "admin.revoke",
            AuditAction::AdminSignIn => "admin.sign_in",
            AuditAction::AdminRefused => "admin.refused",
            AuditAction::AdminSignOut => "admin.sign_out",
            AuditAction::SigningKeyRotate => "signing_key.rotate",
            AuditAction::ClientCreate => "client.create",
            AuditAction::ClientDisable => "client.disable",
            AuditAction::ClientEnable => "client.enable",
            AuditAction::ClientDelete => "client.delete",
            AuditAction::ProviderEvent => "provider.event",
            AuditAction::BackchannelLogoutFailed => "backchannel_logout.failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Who did it, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user acting for themselves (`/v1`, a sign-in).
    User(String),
    /// A client application acting on its own devices (`/oauth/revoke`, a replayed token).
    Client(String),
    /// An admin in the console; the id is the admin's user id.
    Admin(String),
    /// The command line on the server.
    Cli,
    /// idbridge itself (the device cap, a scheduled rotation).
    System,
    /// A sign-in provider's event (`provider:google`, `provider:facebook`, `provider:apple`).
    Provider(&'static str),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Client(id) => write!(f, "client:{id}"),
            Actor::Admin(id) => write!(f, "admin:{id}"),
            Actor::Cli => f.write_str("cli"),
            Actor::System => f.write_str("system"),
            Actor::Provider(name) => write!(f, "provider:{name}"),
        }
    }
}

/// Who makes a change, which audited action it is, and from where: what every audited
/// change carries down to the event it writes.
pub struct Attribution<'a> {
    pub actor: &'a Actor,
    pub action: AuditAction,
    pub detail: Option<&'a str>,
    pub origin: &'a Origin,
}

impl Attribution<'_> {
    /// Writes this change's event about `user_id` (and `device_id`); `detail` overrides the
    /// attribution's own.
    pub fn record(
        &self,
        conn: &mut DbConnection,
        user_id: Option<&str>,
        device_id: Option<&str>,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), DbError> {
        let event = AuditEvent { actor: self.actor, action: self.action, user_id, device_id, detail };
        record(conn, event, self.origin, now)
    }
}

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
    pub actor: &'a Actor,
    pub action: AuditAction,
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
            actor: &event.actor.to_string(),
            action: event.action.as_str(),
            user_id: event.user_id,
            device_id: event.device_id,
            ip: origin.ip.as_deref(),
            user_agent: origin.user_agent.as_deref(),
            detail: event.detail,
        })
        .execute(conn)?;
    Ok(())
}
