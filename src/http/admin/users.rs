//! Users: the list and search, a user's page, and the changes an admin makes to a user
//! (revoke a device or all, disable, enable, delete), each confirmed first.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{already, bad_request, event_rows, failed, html, not_found, see_other, when, PAGE_SIZE};
use super::{
    AdminForm, AdminPage, ConfirmPage, CsrfForm, DoneQuery, EventRow, FromRoute, Layout, RouteAction,
};
use crate::accounts::profile;
use std::collections::HashMap;

use crate::admin::audit_log::{AuditRow, Person};
use crate::admin::directory::{self, Cursor};
use crate::audit::AuditAction;
use crate::db::DbError;
use crate::ids::{DeviceId, UserId};
use crate::service::devices::Owner;
use crate::service::StateChange;
use crate::service::{self, BY_CONSOLE};
use crate::state::AppState;

struct UserRow {
    id: String,
    display_name: Option<String>,
    providers: Vec<String>,
    created: String,
    disabled: bool,
    is_admin: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    q: String,
    searching: bool,
    users: Vec<UserRow>,
    next: Option<String>,
    /// A search found more users than it shows.
    more: bool,
}

/// Users whose search terms a search brings up to date first, at most (the indexer in
/// housekeeping does the rest).
const SEARCH_CATCH_UP: i64 = 500;

#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    after: Option<String>,
    done: Option<String>,
}

/// The users, newest first, or those a search finds.
#[utoipa::path(get, path = "/admin/users", tag = "admin", summary = "Users, newest first; `q` searches by user id, provider subject, e-mail, or the start of name words or of an e-mail",
    params(("q" = Option<String>, Query, description = "a user id, provider subject, e-mail, or the start of name words or of an e-mail"), ("after" = Option<String>, Query, description = "the page's start, from the previous page"), ("done" = Option<String>, Query, description = "what was just done, for the notice")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<UsersQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let query = query.into_inner();
    let q = query.q.unwrap_or_default().trim().to_string();
    if q.len() > 320 || q.contains(char::is_control) {
        return bad_request(&session, "The search text is too long or contains control characters.");
    }
    let after = match query.after.as_deref().map(Cursor::parse) {
        Some(None) => return bad_request(&session, "That page link is malformed."),
        other => other.flatten(),
    };
    let app = state.clone();
    let searching = !q.is_empty();
    if searching {
        // Users who signed in since the indexer last ran are found too; best effort, through
        // the writer (the indexer in housekeeping catches up anyway).
        let (keys, index) = (state.user_keys.clone(), state.blind_index.clone());
        let caught_up = state
            .db
            .write(move |conn| crate::accounts::search::index_pending(conn, &keys, &index, SEARCH_CATCH_UP))
            .await;
        if let Err(e) = caught_up {
            tracing::warn!(error = %e, "cannot bring search terms up to date before a search");
        }
    }
    let needle = q.clone();
    let found = state
        .db
        .run(move |conn| {
            if searching {
                directory::search_users(conn, &app.user_keys, &app.blind_index, &needle)
                    .map(|found| (found.users, None, found.more))
            } else {
                directory::list_users(conn, &app.user_keys, after.as_ref(), PAGE_SIZE)
                    .map(|(list, next)| (list, next, false))
            }
        })
        .await;
    let (list, next, more) = match found {
        Ok(found) => found,
        Err(e) => return failed(e),
    };
    let page = UsersPage {
        layout: Layout::of(&session, "users").with_notice(query.done.as_deref()),
        q,
        searching,
        users: list
            .into_iter()
            .map(|u| UserRow {
                created: when(u.created_at),
                id: u.id,
                display_name: u.display_name,
                providers: u.providers,
                disabled: u.disabled,
                is_admin: u.is_admin,
            })
            .collect(),
        next: next.map(|c| c.encode()),
        more,
    };
    html(StatusCode::OK, page.render())
}

struct IdentityRow {
    provider: String,
    subject: String,
    linked: String,
    last_login: String,
}

struct DeviceRow {
    id: String,
    name: Option<String>,
    platform: Option<String>,
    client_id: String,
    created: String,
    last_seen: String,
    ip: Option<String>,
    user_agent: Option<String>,
    live: bool,
    state: &'static str,
    /// How an ended device ended: when, by whom, why (and, for a reuse, from where).
    ending: Option<Ending>,
}

struct Ending {
    when: String,
    by: String,
    why: String,
    /// The address and user agent of the request that ended it (a reuse attempt's).
    from: Option<String>,
}

impl Ending {
    /// How `device` ended, from the event that ended it (`None` when retention removed it).
    fn of(
        device: &crate::sessions::Device,
        event: Option<&AuditRow>,
        people: &HashMap<String, Person>,
        now: i64,
    ) -> Option<Self> {
        let Some(revoked_at) = device.revoked_at else {
            return (!device.is_live(now)).then(|| Ending {
                when: when(device.session_expires_at),
                by: "idbridge".into(),
                why: "its session ran out (idle or absolute limit); nobody revoked it".into(),
                from: None,
            });
        };
        let Some(event) = event else {
            return Some(Ending {
                when: when(revoked_at),
                by: "unknown".into(),
                why: "the audit event that ended it is past retention".into(),
                from: None,
            });
        };
        let (kind, id) = event.actor.split_once(':').unwrap_or((event.actor.as_str(), ""));
        let person = |id: &str| match people.get(id) {
            Some(Person::Known { name: Some(name), .. }) => name.clone(),
            Some(Person::Deleted) => format!("{id} (deleted)"),
            _ => id.to_string(),
        };
        let by = match kind {
            "user" if id == device.user_id => "the user".to_string(),
            "user" => format!("user {}", person(id)),
            "admin" => format!("admin {}", person(id)),
            "client" => format!("client {id}"),
            "provider" => format!("provider {id}"),
            "cli" => "the command line".into(),
            "system" => "idbridge".into(),
            other => other.to_string(),
        };
        let why = match event.action.as_str() {
            "device.revoke" => "revoked".to_string(),
            "device.evicted" => "evicted: the user signed in on more devices than the cap allows".into(),
            "refresh_token.reuse" => {
                "a refresh token already spent was presented again (a possible theft)".into()
            }
            "authorization_code.reuse" => "its authorization code was redeemed twice".into(),
            "admin.sign_out" => "signed out of the admin console".into(),
            "user.logout_all" => "the user signed out everywhere".into(),
            "user.revoke_all" => "every device of the user was revoked".into(),
            "user.disable" => "the user was disabled".into(),
            "provider.event" => "the provider reported the account".into(),
            other => other.to_string(),
        };
        let why = match &event.detail {
            Some(detail) => format!("{why} ({detail})"),
            None => why,
        };
        let from = (event.action == "refresh_token.reuse").then(|| {
            format!(
                "{}, {}",
                event.ip.as_deref().unwrap_or("unknown address"),
                event.user_agent.as_deref().unwrap_or("no user agent")
            )
        });
        Some(Ending { when: when(event.at), by, why, from })
    }
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    layout: Layout,
    id: String,
    name: Option<String>,
    email: Option<String>,
    created: String,
    disabled: bool,
    is_admin: bool,
    /// The signed-in admin's own account: it cannot be disabled or deleted here.
    own: bool,
    identities: Vec<IdentityRow>,
    devices: Vec<DeviceRow>,
    events: Vec<EventRow>,
}

/// One user: profile, identities, devices and recent events.
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", summary = "A user: identities, devices, recent events, actions",
    params(("id" = String, Path, description = "the user id"), ("done" = Option<String>, Query, description = "what was just done, for the notice")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn detail(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<DoneQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let Some(user_id) = UserId::parse(&path.into_inner()).map(|id| id.to_string()) else {
        return not_found(&session, "There is no such user.");
    };
    let app = state.clone();
    let found = state.db.run(move |conn| directory::user_detail(conn, &app.user_keys, &user_id)).await;
    let detail = match found {
        Ok(Some(detail)) => detail,
        Ok(None) => return not_found(&session, "There is no such user. They may have been deleted."),
        Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return failed(e),
        Err(e) => {
            tracing::error!(error = %e, "cannot open a user's profile");
            return failed(DbError::Task);
        }
    };
    let now = crate::clock::now();
    let profile = detail.profile;
    let page = UserPage {
        layout: Layout::of(&session, "users").with_notice(query.done.as_deref()),
        id: profile.user.id.clone(),
        name: profile.display_name,
        email: profile.email,
        created: when(profile.user.created_at),
        disabled: profile.user.disabled_at.is_some(),
        is_admin: profile.user.is_admin,
        own: profile.user.id == session.user_id,
        identities: profile
            .identities
            .into_iter()
            .map(|i| IdentityRow {
                provider: i.provider,
                subject: i.subject,
                linked: when(i.linked_at),
                last_login: when(i.last_login_at),
            })
            .collect(),
        devices: detail
            .devices
            .into_iter()
            .map(|d| DeviceRow {
                ending: Ending::of(&d, detail.endings.get(&d.id), &detail.people, now),
                live: d.is_live(now),
                state: if d.revoked_at.is_some() { "revoked" } else { "expired" },
                created: when(d.created_at),
                last_seen: when(d.last_seen_at),
                id: d.id,
                name: d.name,
                platform: d.platform,
                client_id: d.client_id,
                ip: d.ip,
                user_agent: d.user_agent,
            })
            .collect(),
        events: event_rows(detail.events, &detail.people),
    };
    html(StatusCode::OK, page.render())
}

/// What an action on a user does, by its name in the URL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    RevokeDevice,
    RevokeAll,
    Disable,
    Enable,
    Delete,
}

impl UserAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "revoke-device" => UserAction::RevokeDevice,
            "revoke-all" => UserAction::RevokeAll,
            "disable" => UserAction::Disable,
            "enable" => UserAction::Enable,
            "delete" => UserAction::Delete,
            _ => return None,
        })
    }
}

impl FromRoute for UserAction {
    /// `…/devices/{device}/revoke` is `revoke-device`; the others are named as in `?action=`.
    fn from_route(last_segment: &str) -> Option<Self> {
        match last_segment {
            "revoke" => Some(UserAction::RevokeDevice),
            other => UserAction::parse(other),
        }
    }
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    action: Option<String>,
    device: Option<String>,
}

/// The confirmation step before an action on a user: what will happen, and the form that does it.
#[utoipa::path(get, path = "/admin/users/{id}/confirm", tag = "admin", summary = "The confirmation step of `action`: revoke-device (with `device`), revoke-all, disable, enable, delete",
    params(("id" = String, Path, description = "the user id"), ("action" = Option<String>, Query, description = "the action"), ("device" = Option<String>, Query, description = "revoke-device: the device id")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn confirm(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ConfirmQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let Some(action) = query.action.as_deref().and_then(UserAction::parse) else {
        return bad_request(&session, "Unknown action.");
    };
    let Some(user_id) = UserId::parse(&path.into_inner()).map(|id| id.to_string()) else {
        return not_found(&session, "There is no such user.");
    };
    let device = match (action, query.device.as_deref().map(DeviceId::parse)) {
        (UserAction::RevokeDevice, Some(Some(d))) => Some(d.to_string()),
        (UserAction::RevokeDevice, _) => {
            return bad_request(&session, "Which device? The link is malformed.")
        }
        _ => None,
    };
    let own = user_id == session.user_id;
    if own && matches!(action, UserAction::Disable | UserAction::Delete) {
        return bad_request(&session, OWN_ACCOUNT);
    }
    let app = state.clone();
    let (uid, did) = (user_id.clone(), device.clone());
    let found = state
        .db
        .run(move |conn| {
            let (name, disabled) = match profile::profile(conn, &app.user_keys, &uid) {
                Ok(Some(p)) => {
                    (Some(p.display_name.unwrap_or_else(|| "(no name)".into())), p.user.disabled_at.is_some())
                }
                Ok(None) => (None, false),
                Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return Err(e),
                Err(_) => (Some("(no name)".into()), false),
            };
            let device = match did {
                Some(d) => crate::sessions::find(conn, &d)?.filter(|d| d.user_id == uid),
                None => None,
            };
            let live = crate::sessions::devices::unrevoked_of_user(conn, &uid)?.len();
            Ok((name, disabled, device, live))
        })
        .await;
    let (name, disabled, device, live) = match found {
        Ok((Some(name), disabled, device, live)) => (name, disabled, device, live),
        Ok((None, ..)) => return not_found(&session, "There is no such user. They may have been deleted."),
        Err(e) => return failed(e),
    };
    let base = format!("/admin/users/{user_id}");
    // What is already so is said, with nothing to confirm.
    let moot = match action {
        UserAction::RevokeDevice => match &device {
            None => return not_found(&session, "This user has no such device."),
            Some(d) if d.revoked_at.is_some() => Some(format!(
                "This device already ended on {}. Nothing is left to revoke.",
                when(d.revoked_at.unwrap_or_default())
            )),
            Some(_) => None,
        },
        UserAction::RevokeAll if live == 0 => {
            Some(format!("{name} has no device left to revoke. Nothing is left to do."))
        }
        UserAction::Disable if disabled => Some(format!("{name} is already disabled.")),
        UserAction::Enable if !disabled => Some(format!("{name} is not disabled.")),
        _ => None,
    };
    if let Some(text) = moot {
        return already(&session, &text, &base);
    }
    let (question, consequence, button, target) = match action {
        UserAction::RevokeDevice => {
            let device = device.expect("checked above");
            let label = device.name.clone().unwrap_or_else(|| "this device".into());
            (
                format!("Revoke “{label}” of {name}?"),
                format!(
                    "Its refresh token and access tokens stop working at once. The user must sign in again on \
                     that device (created {}, last seen {}).",
                    when(device.created_at),
                    when(device.last_seen_at)
                ),
                "Revoke device",
                format!("{base}/devices/{}/revoke", device.id),
            )
        }
        UserAction::RevokeAll => (
            format!("Revoke every device of {name}?"),
            format!(
                "{live} device{} and every refresh token and access token of this user stop working at once. \
                 They can sign in again.",
                if live == 1 { "" } else { "s" }
            ),
            "Revoke all devices",
            format!("{base}/revoke-all"),
        ),
        UserAction::Disable => (
            format!("Disable {name}?"),
            format!("They cannot sign in or refresh, and their {live} device(s) stop working at once."),
            "Disable user",
            format!("{base}/disable"),
        ),
        UserAction::Enable => (
            format!("Enable {name}?"),
            "They can sign in again. Devices revoked when they were disabled stay revoked.".to_string(),
            "Enable user",
            format!("{base}/enable"),
        ),
        UserAction::Delete => (
            format!("Delete {name} for good?"),
            "The user, their identities, devices and tokens are deleted, and their data keys destroyed: data \
             encrypted for them can never be decrypted again. This cannot be undone."
                .to_string(),
            "Delete user",
            format!("{base}/delete"),
        ),
    };
    let page = ConfirmPage {
        layout: Layout::of(&session, "users"),
        question: &question,
        consequence: &consequence,
        button,
        action: target,
        cancel: base,
    };
    html(StatusCode::OK, page.render())
}

const OWN_ACCOUNT: &str =
    "You cannot disable or delete your own account here. Another admin can, or use the command line.";

enum Changed {
    Done(&'static str),
    /// Already so: nothing was changed; the text says what is.
    AlreadySo(&'static str),
    Missing(&'static str),
}

/// The user (and device) a change names in its path.
#[derive(Deserialize)]
pub struct UserTarget {
    id: String,
    device: Option<String>,
}

/// Runs an audited change on a user for an admin, then sends them back to the user's page.
/// The route names the change (`…/revoke`, `revoke-all`, `disable`, `enable`, `delete`).
#[utoipa::path(post, path = "/admin/users/{id}/revoke-all", tag = "admin", summary = "Ends every device of the user (audited)",
    params(("id" = String, Path, description = "the user id")),
    request_body(content = super::CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(super::super::openapi::answers::AdminChange))]
pub async fn change(
    state: web::Data<AppState>,
    req: HttpRequest,
    RouteAction(action): RouteAction<UserAction>,
    path: web::Path<UserTarget>,
    AdminForm { session, .. }: AdminForm<CsrfForm>,
) -> HttpResponse {
    let UserTarget { id: user_id, device: device_id } = path.into_inner();
    let (Some(user), Ok(device)) =
        (UserId::parse(&user_id), device_id.as_deref().map(|d| DeviceId::parse(d).ok_or(())).transpose())
    else {
        return not_found(&session, "There is no such user or device.");
    };
    if user.as_str() == session.user_id && matches!(action, UserAction::Disable | UserAction::Delete) {
        return bad_request(&session, OWN_ACCOUNT);
    }
    let (db, by, detail) = (&state.db, super::requester(&session, &req), Some(BY_CONSOLE));
    let missing_user = Changed::Missing("There is no such user.");
    let changed = match (action, device) {
        (UserAction::RevokeDevice, Some(device)) => {
            let owner = Owner::User(user.clone());
            service::devices::end(db, &device, &owner, &by, AuditAction::DeviceRevoke, detail).await.map(
                |ended| match ended {
                    None => Changed::Missing("This user has no such device."),
                    Some(false) => Changed::AlreadySo("This device had already ended. Nothing was changed."),
                    Some(true) => Changed::Done("device-revoked"),
                },
            )
        }
        (UserAction::RevokeDevice, None) => Ok(Changed::Missing("This user has no such device.")),
        (UserAction::RevokeAll, _) => {
            service::devices::end_all(db, &user, &by, AuditAction::UserRevokeAll, detail).await.map(|c| {
                match c {
                    StateChange::Done(_) => Changed::Done("all-revoked"),
                    StateChange::AlreadySo => {
                        Changed::AlreadySo("The user had no device left to revoke. Nothing was changed.")
                    }
                    StateChange::Missing => missing_user,
                }
            })
        }
        (UserAction::Disable, _) => service::users::disable(db, &user, &by, detail).await.map(|c| match c {
            StateChange::Done(_) => Changed::Done("disabled"),
            StateChange::AlreadySo => {
                Changed::AlreadySo("The user was already disabled. Nothing was changed.")
            }
            StateChange::Missing => missing_user,
        }),
        (UserAction::Enable, _) => service::users::enable(db, &user, &by, detail).await.map(|c| match c {
            StateChange::Done(()) => Changed::Done("enabled"),
            StateChange::AlreadySo => Changed::AlreadySo("The user was not disabled. Nothing was changed."),
            StateChange::Missing => missing_user,
        }),
        (UserAction::Delete, _) => service::users::delete(db, &state.user_keys, &user, &by)
            .await
            .map(|found| if found { Changed::Done("deleted") } else { missing_user }),
    };
    match changed {
        Ok(Changed::Done("deleted")) => see_other("/admin/users?done=deleted"),
        Ok(Changed::Done(done)) => see_other(&format!("/admin/users/{user}?done={done}")),
        Ok(Changed::AlreadySo(what)) => already(&session, what, &format!("/admin/users/{user}")),
        Ok(Changed::Missing(what)) => not_found(&session, what),
        Err(e) => failed(e),
    }
}
