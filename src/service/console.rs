//! The admin console's own sessions: signing in (the browser flow's code redeemed as client
//! `idbridge-admin`, then the admin role checked) and signing out.

use std::sync::Arc;

use crate::accounts::{self, SignInError};
use crate::admin::sessions::{self, AdminSession, SessionPolicy};
use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::clients::Client;
use crate::db::{Db, DbError};
use crate::sessions::devices;
use crate::state::AppState;

use super::sign_in::{redeem_in, CodeOutcome, CodeRedemption};
use super::Requester;

/// What an admin sign-in came to.
pub enum AdminSignIn {
    /// A console session began; its cookie value.
    Started(String),
    /// The person signed in but has no admin role: no session, and the device made is gone.
    /// `user_id` is `None` when their identity has no user: none is made.
    NotAdmin {
        user_id: Option<String>,
    },
    Refused(&'static str),
}

/// Redeems the console's code; an admin gets a session on the device it made (audited
/// `admin.sign_in`); anyone else gets none (audited `admin.refused`).
pub async fn sign_in(
    app: &Arc<AppState>,
    client: Arc<Client>,
    request: CodeRedemption,
    policy: SessionPolicy,
) -> Result<AdminSignIn, DbError> {
    let a = app.clone();
    let client_id = client.id.clone();
    app.db
        .write(move |conn| {
            let now = crate::clock::now();
            let signed_in = match redeem_in(conn, &a, &client, &request, now) {
                Ok(CodeOutcome::Signed(signed_in, _)) => signed_in,
                Ok(CodeOutcome::Refused(why)) => return Ok(AdminSignIn::Refused(why)),
                Ok(CodeOutcome::NoUser { provider }) => {
                    // Opening the console makes no user: only an app's sign-in does.
                    let detail =
                        format!("signed in to the admin console with a {provider} account that has no user");
                    let event = AuditEvent {
                        actor: &Actor::Client(client_id.clone()),
                        action: AuditAction::AdminRefused,
                        user_id: None,
                        device_id: None,
                        detail: Some(&detail),
                    };
                    crate::audit::record(conn, event, &request.origin, now)?;
                    return Ok(AdminSignIn::NotAdmin { user_id: None });
                }
                Err(SignInError::Db(e)) => return Err(e),
                Err(_) => return Ok(AdminSignIn::Refused("the account cannot sign in")),
            };
            let user_id = signed_in.user_id.as_str();
            if !accounts::is_admin(conn, user_id)? {
                // The sign-in was real, but no session comes of it: its device goes at once.
                devices::delete(conn, &signed_in.device.id)?;
                let event = AuditEvent {
                    actor: &Actor::User(user_id.to_string()),
                    action: AuditAction::AdminRefused,
                    user_id: Some(user_id),
                    device_id: None,
                    detail: Some("signed in to the admin console without the admin role"),
                };
                crate::audit::record(conn, event, &request.origin, now)?;
                return Ok(AdminSignIn::NotAdmin { user_id: Some(user_id.to_string()) });
            }
            let token = sessions::create(conn, user_id, &signed_in.device.id, policy, now)?;
            let event = AuditEvent {
                actor: &Actor::Admin(user_id.to_string()),
                action: AuditAction::AdminSignIn,
                user_id: Some(user_id),
                device_id: Some(&signed_in.device.id),
                detail: None,
            };
            crate::audit::record(conn, event, &request.origin, now)?;
            Ok(AdminSignIn::Started(token))
        })
        .await
}

/// Ends the console session and revokes the device it rode on (audited `admin.sign_out`).
pub async fn sign_out(db: &Db, session: &AdminSession, by: &Requester) -> Result<(), DbError> {
    let (s, by) = (session.clone(), by.clone());
    db.write(move |conn| {
        sessions::end(conn, &s.id_hash)?;
        if let Some(device) = crate::sessions::find(conn, &s.device_id)? {
            let ended = by.doing(AuditAction::AdminSignOut, Some("signed out of the admin console"));
            devices::end(conn, &device, &ended, crate::clock::now())?;
        }
        Ok(())
    })
    .await
}
