//! The admin console, `/admin`: server-rendered pages for admins (`idbridge admins grant`).
//!
//! Sign-in goes through idbridge's own browser flow as the internal client `idbridge-admin`
//! (`/admin/login` → `/oauth/authorize` → provider → `/admin/callback`, which redeems the code
//! in-process). The session is a database row behind a `__Host-` cookie (`admin::sessions`).
//! Every change is a POST carrying the session's anti-CSRF token, and is audited naming the
//! admin. Pages are askama templates (`templates/admin/`), escaped throughout; the only asset
//! is `/admin/static/admin.css`, served from the binary. No page needs JavaScript.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::auth::origin;
use super::input;
use super::oauth::{redeem_code, CodeOutcome, CodeRedemption};
use crate::accounts::{self, audit, profile};
use crate::admin::chart;
use crate::admin::directory::{self, AuditFilter, Cursor};
use crate::admin::sessions::{self, AdminSession};
use crate::clients::{self, ClientKind, NewClient, ADMIN_CALLBACK_PATH, ADMIN_CLIENT};
use crate::crypto::random_token;
use crate::db::{self, DbError};
use crate::state::AppState;

/// The headers of every `/admin` answer (set on the scope): no inline script or style may
/// run, no framing, no sniffing, no referrer outside idbridge, no caching.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
];

const STYLESHEET: &str = include_str!("../../assets/admin.css");
const PAGE_SIZE: i64 = 50;

/// What the shared layout needs.
struct Layout {
    signed_in: bool,
    csrf: String,
    section: &'static str,
    notice: Option<&'static str>,
}

impl Layout {
    fn of(session: &AdminSession, section: &'static str) -> Self {
        Layout { signed_in: true, csrf: session.csrf.clone(), section, notice: None }
    }

    fn signed_out() -> Self {
        Layout { signed_in: false, csrf: String::new(), section: "", notice: None }
    }

    /// The notice for `?done=…` after a change (a fixed text; the query is never echoed).
    fn with_notice(mut self, done: Option<&str>) -> Self {
        self.notice = done.and_then(|d| match d {
            "device-revoked" => Some("The device was revoked. Its tokens no longer work."),
            "all-revoked" => Some("Every device of this user was revoked."),
            "disabled" => Some("The user is disabled: they cannot sign in, and their devices were revoked."),
            "enabled" => Some("The user is enabled and can sign in again."),
            "deleted" => Some("The user was deleted, and their data keys destroyed."),
            "key-added" => Some("A new signing key was published. It starts signing after the publish lead."),
            "client-disabled" => Some("The client is disabled."),
            "client-enabled" => Some("The client is enabled."),
            "client-deleted" => Some("The client was deleted."),
            _ => None,
        });
        self
    }
}

/// A Unix time as `2026-11-30 05:17:16 UTC`.
fn when(ts: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', " UTC")
}

fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> HttpResponse {
    match rendered {
        Ok(body) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body),
        Err(e) => {
            tracing::error!(error = %e, "admin template failed");
            HttpResponse::InternalServerError()
                .content_type("text/html; charset=utf-8")
                .body("<!doctype html><title>Error</title><p>An internal error occurred.")
        }
    }
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage<'a> {
    layout: Layout,
    heading: &'a str,
    message: &'a str,
    detail: Option<&'a str>,
    link: Option<(&'a str, &'a str)>,
}

fn message(status: StatusCode, layout: Layout, heading: &str, text: &str) -> HttpResponse {
    let link = (!layout.signed_in).then_some(("/admin/login", "Sign in"));
    let link = link.or(Some(("/admin", "Back to the overview")));
    html(status, MessagePage { layout, heading, message: text, detail: None, link }.render())
}

fn unavailable() -> HttpResponse {
    let mut response = message(
        StatusCode::SERVICE_UNAVAILABLE,
        Layout::signed_out(),
        "Temporarily unavailable",
        "The database cannot be reached right now. Try again in a moment.",
    );
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

fn failed(e: DbError) -> HttpResponse {
    match e {
        DbError::Unavailable => unavailable(),
        other => {
            tracing::error!(error = %other, "admin console storage failure");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                Layout::signed_out(),
                "Something went wrong",
                "An internal error occurred. It has been logged.",
            )
        }
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location.to_string())).finish()
}

fn forbidden(heading: &str, text: &str) -> HttpResponse {
    message(StatusCode::FORBIDDEN, Layout::signed_out(), heading, text)
}

fn not_found(session: &AdminSession, what: &str) -> HttpResponse {
    message(StatusCode::NOT_FOUND, Layout::of(session, ""), "Not found", what)
}

fn bad_request(session: &AdminSession, text: &str) -> HttpResponse {
    message(StatusCode::BAD_REQUEST, Layout::of(session, ""), "Not possible", text)
}

/// An id as idbridge writes them (lower-case, hyphenated UUID), whatever spelling came in.
fn canonical_id(id: &str) -> Option<String> {
    uuid::Uuid::try_parse(id).ok().map(|u| u.hyphenated().to_string())
}

fn session_policy(state: &AppState) -> sessions::SessionPolicy {
    sessions::SessionPolicy {
        idle_secs: state.settings.admin.session_idle_ttl.as_secs() as i64,
        max_secs: state.settings.admin.session_max_ttl.as_secs() as i64,
    }
}

/// The valid admin session of this request, restarting its idle clock; `None` when there
/// is none (no cookie, expired, ended, or no longer an admin).
async fn current_session(state: &AppState, req: &HttpRequest) -> Result<Option<AdminSession>, HttpResponse> {
    let Some(token) = req.cookie(sessions::COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let policy = session_policy(state);
    let found =
        state.db.run(move |conn| sessions::find(conn, &token, policy, db::now())).await.map_err(failed)?;
    if let Some(session) = found.as_ref().filter(|s| s.needs_touch) {
        let id_hash = session.id_hash.clone();
        if let Err(e) = state.db.write(move |conn| sessions::touch(conn, &id_hash, db::now())).await {
            tracing::warn!(error = %e, "cannot record admin session use");
        }
    }
    Ok(found)
}

/// A page: the session, or a redirect to sign in.
async fn viewer(state: &AppState, req: &HttpRequest) -> Result<AdminSession, HttpResponse> {
    current_session(state, req).await?.ok_or_else(|| see_other("/admin/login"))
}

/// A change: the session and its anti-CSRF token, else 403 and nothing changes.
async fn changer(
    state: &AppState,
    req: &HttpRequest,
    csrf: Option<&str>,
) -> Result<AdminSession, HttpResponse> {
    let Some(session) = current_session(state, req).await? else {
        return Err(forbidden(
            "Signed out",
            "Your admin session has ended or never began. Sign in again, then repeat the change.",
        ));
    };
    if !session.csrf_matches(csrf) {
        return Err(message(
            StatusCode::FORBIDDEN,
            Layout::of(&session, ""),
            "Refused",
            "This form is stale or did not come from this console (its anti-CSRF token is missing or wrong). Nothing was changed.",
        ));
    }
    Ok(session)
}

fn audit_change(
    conn: &mut crate::db::DbConnection,
    session: &AdminSession,
    action: &str,
    user_id: Option<&str>,
    detail: Option<&str>,
    origin: &audit::Origin,
    now: i64,
) -> Result<(), DbError> {
    let actor = session.actor();
    let event = audit::AuditEvent { actor: &actor, action, user_id, device_id: None, detail };
    audit::record(conn, event, origin, now)
}

// ---- static asset ----------------------------------------------------------------------------

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(STYLESHEET)
}

// ---- sign-in and sign-out --------------------------------------------------------------------

fn callback_uri(state: &AppState) -> String {
    format!("{}{ADMIN_CALLBACK_PATH}", state.settings.issuer())
}

fn cookie(name: &'static str, value: String, same_site: SameSite, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(same_site)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

fn removal(name: &'static str, same_site: SameSite) -> Cookie<'static> {
    cookie(name, String::new(), same_site, 0)
}

/// Starts a sign-in: `state` and the PKCE verifier go into a short-lived cookie (Lax: it must
/// come back on the provider's top-level redirect), and the browser goes to `/oauth/authorize`.
pub async fn login(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Ok(Some(_)) = current_session(&state, &req).await {
        return see_other("/admin");
    }
    let (flow_state, verifier) = (random_token::<16>(), random_token::<32>());
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", ADMIN_CLIENT)
        .append_pair("redirect_uri", &callback_uri(&state))
        .append_pair("scope", "openid")
        .append_pair("state", &flow_state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut response = see_other(&format!("/oauth/authorize?{}", query.finish()));
    let value = format!("{flow_state}.{verifier}");
    let _ = response.add_cookie(&cookie(sessions::LOGIN_COOKIE, value, SameSite::Lax, 600));
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

enum AdminSignIn {
    Started(String),
    NotAdmin { user_id: String },
    Refused(&'static str),
}

#[derive(Template)]
#[template(path = "admin/signed_in.html")]
struct SignedInPage;

/// The browser flow's return: redeem the code (in-process, as client `idbridge-admin`), and
/// open a session when the person is an admin. Anyone else gets a 403 page naming their user
/// id (for `idbridge admins grant`); the device the sign-in made is deleted at once.
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let restart = || {
        message(
            StatusCode::BAD_REQUEST,
            Layout::signed_out(),
            "Sign-in expired",
            "This sign-in is unknown or expired. Start again.",
        )
    };
    let Some((expected_state, verifier)) = req
        .cookie(sessions::LOGIN_COOKIE)
        .and_then(|c| c.value().split_once('.').map(|(s, v)| (s.to_string(), v.to_string())))
    else {
        return restart();
    };
    let state_ok = query.state.as_deref().is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(expected_state.as_bytes()))
    });
    if !state_ok {
        return restart();
    }
    if query.error.is_some() {
        let mut page = forbidden("Sign-in cancelled", "The sign-in was declined or failed. Start again.");
        let _ = page.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
        return page;
    }
    let Ok(Some(code)) = input::text("code", query.code.as_deref(), 256).map(|c| c.map(str::to_string))
    else {
        return restart();
    };
    let Some(client) = state.clients.get(ADMIN_CLIENT) else {
        return restart();
    };
    let request = CodeRedemption {
        code,
        redirect_uri: callback_uri(&state),
        verifier,
        device_name: Some("Admin console".into()),
        device_platform: Some("web".into()),
        origin: origin(&req),
    };
    let app = state.clone();
    let policy = session_policy(&state);
    let outcome = state
        .db
        .write(move |conn| {
            let now = db::now();
            let signed_in = match redeem_code(conn, &app, &client, &request, now) {
                Ok(CodeOutcome::Signed(signed_in, _)) => signed_in,
                Ok(CodeOutcome::Refused(why)) => return Ok(AdminSignIn::Refused(why)),
                Err(accounts::SignInError::Db(e)) => return Err(e),
                Err(_) => return Ok(AdminSignIn::Refused("the account cannot sign in")),
            };
            let is_admin: bool = {
                use crate::db::schema::users;
                use diesel::prelude::*;
                users::table.find(&signed_in.user_id).select(users::is_admin).first(conn)?
            };
            let actor = format!("admin:{}", signed_in.user_id);
            if !is_admin {
                // The sign-in was real, but no session comes of it: its device goes at once.
                accounts::delete_device(conn, &signed_in.device.id)?;
                let event = audit::AuditEvent {
                    actor: &format!("user:{}", signed_in.user_id),
                    action: "admin.refused",
                    user_id: Some(&signed_in.user_id),
                    device_id: None,
                    detail: Some("signed in to the admin console without the admin role"),
                };
                audit::record(conn, event, &request.origin, now)?;
                return Ok(AdminSignIn::NotAdmin { user_id: signed_in.user_id.clone() });
            }
            let token = sessions::create(conn, &signed_in.user_id, &signed_in.device.id, policy, now)?;
            let event = audit::AuditEvent {
                actor: &actor,
                action: "admin.sign_in",
                user_id: Some(&signed_in.user_id),
                device_id: Some(&signed_in.device.id),
                detail: None,
            };
            audit::record(conn, event, &request.origin, now)?;
            Ok(AdminSignIn::Started(token))
        })
        .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return failed(e),
    };
    match outcome {
        AdminSignIn::Started(token) => {
            // A page, not a redirect: the Strict cookie is then sent on the same-site
            // navigation it starts, even when the sign-in came back from another site.
            let mut response = html(StatusCode::OK, SignedInPage.render());
            let max = policy.max_secs;
            let _ = response.add_cookie(&cookie(sessions::COOKIE, token, SameSite::Strict, max));
            let _ = response.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            response
        }
        AdminSignIn::NotAdmin { user_id } => {
            let text = "You signed in, but your account does not have the admin role. An admin can grant it \
                        with `idbridge admins grant` and your user id:";
            let page = MessagePage {
                layout: Layout::signed_out(),
                heading: "Not an admin",
                message: text,
                detail: Some(&user_id),
                link: None,
            };
            let mut response = html(StatusCode::FORBIDDEN, page.render());
            let _ = response.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            response
        }
        AdminSignIn::Refused(why) => {
            let mut page = forbidden("Sign-in refused", why);
            let _ = page.add_cookie(&removal(sessions::LOGIN_COOKIE, SameSite::Lax));
            page
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Ends this session (and revokes the device it rode on).
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, form: web::Form<CsrfForm>) -> HttpResponse {
    let session = match changer(&state, &req, form.csrf.as_deref()).await {
        Ok(session) => session,
        Err(mut page) => {
            // A session that already ended: the browser may drop its cookie too.
            if page.status() == StatusCode::FORBIDDEN
                && current_session(&state, &req).await.ok().flatten().is_none()
            {
                let _ = page.add_cookie(&removal(sessions::COOKIE, SameSite::Strict));
            }
            return page;
        }
    };
    let origin = origin(&req);
    let s = session.clone();
    let ended = state
        .db
        .write(move |conn| {
            let now = db::now();
            sessions::end(conn, &s.id_hash)?;
            if let Some(device) = accounts::find_device(conn, &s.device_id)? {
                let actor = s.actor();
                let by = accounts::Revocation {
                    actor: &actor,
                    action: "admin.sign_out",
                    detail: Some("signed out of the admin console"),
                    origin: &origin,
                };
                accounts::end_device(conn, &device, &by, now)?;
            }
            Ok::<_, DbError>(())
        })
        .await;
    if let Err(e) = ended {
        return failed(e);
    }
    let mut response = message(
        StatusCode::OK,
        Layout::signed_out(),
        "Signed out",
        "You are signed out of the admin console.",
    );
    let _ = response.add_cookie(&removal(sessions::COOKIE, SameSite::Strict));
    response
}

// ---- overview --------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    layout: Layout,
    users: i64,
    live_devices: i64,
    sign_ins_today: i64,
    charts: Vec<chart::Chart>,
}

pub async fn overview(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let figures = match state.db.run(|conn| directory::overview(conn, db::now())).await {
        Ok(figures) => figures,
        Err(e) => return failed(e),
    };
    let sign_ins = chart::build("Sign-ins", figures.first_day, &figures.sign_ins);
    let mut reuse = chart::build("Refresh-token reuse detected", figures.first_day, &figures.reuse);
    reuse.class = "reuse";
    let page = OverviewPage {
        layout: Layout::of(&session, "overview"),
        users: figures.users,
        live_devices: figures.live_devices,
        sign_ins_today: figures.sign_ins_today,
        charts: vec![sign_ins, reuse],
    };
    html(StatusCode::OK, page.render())
}

// ---- users -----------------------------------------------------------------------------------

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
}

#[derive(Deserialize)]
pub struct UsersQuery {
    q: Option<String>,
    after: Option<String>,
    done: Option<String>,
}

pub async fn users(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<UsersQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
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
    let needle = q.clone();
    let found = state
        .db
        .run(move |conn| {
            if searching {
                directory::search_users(conn, &app.user_keys, &app.blind_index, &needle)
                    .map(|list| (list, None))
            } else {
                directory::list_users(conn, &app.user_keys, after.as_ref(), PAGE_SIZE)
            }
        })
        .await;
    let (list, next) = match found {
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
}

struct EventRow {
    when: String,
    action: String,
    actor: String,
    user_id: Option<String>,
    device_id: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
}

fn event_rows(events: Vec<directory::AuditRow>) -> Vec<EventRow> {
    events
        .into_iter()
        .map(|e| EventRow {
            when: when(e.at),
            action: e.action,
            actor: e.actor,
            user_id: e.user_id,
            device_id: e.device_id,
            ip: e.ip,
            detail: e.detail,
        })
        .collect()
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
    identities: Vec<IdentityRow>,
    devices: Vec<DeviceRow>,
    events: Vec<EventRow>,
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DoneQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let Some(user_id) = canonical_id(&path.into_inner()) else {
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
    let now = db::now();
    let profile = detail.profile;
    let page = UserPage {
        layout: Layout::of(&session, "users").with_notice(query.done.as_deref()),
        id: profile.user.id.clone(),
        name: profile.display_name,
        email: profile.email,
        created: when(profile.user.created_at),
        disabled: profile.user.disabled_at.is_some(),
        is_admin: profile.user.is_admin,
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
        events: event_rows(detail.events),
    };
    html(StatusCode::OK, page.render())
}

/// What an action on a user does, by its name in the URL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UserAction {
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

#[derive(Template)]
#[template(path = "admin/confirm.html")]
struct ConfirmPage<'a> {
    layout: Layout,
    question: &'a str,
    consequence: &'a str,
    button: &'a str,
    action: String,
    cancel: String,
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    action: Option<String>,
    device: Option<String>,
}

/// The confirmation step before an action on a user: what will happen, and the form that does it.
pub async fn confirm_user_action(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ConfirmQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let Some(action) = query.action.as_deref().and_then(UserAction::parse) else {
        return bad_request(&session, "Unknown action.");
    };
    let Some(user_id) = canonical_id(&path.into_inner()) else {
        return not_found(&session, "There is no such user.");
    };
    let device = match (action, query.device.as_deref().map(canonical_id)) {
        (UserAction::RevokeDevice, Some(Some(d))) => Some(d),
        (UserAction::RevokeDevice, _) => {
            return bad_request(&session, "Which device? The link is malformed.")
        }
        _ => None,
    };
    let app = state.clone();
    let (uid, did) = (user_id.clone(), device.clone());
    let found = state
        .db
        .run(move |conn| {
            let name = match profile::profile(conn, &app.user_keys, &uid) {
                Ok(Some(p)) => Some(p.display_name.unwrap_or_else(|| "(no name)".into())),
                Ok(None) => None,
                Err(crate::crypto::user_keys::UserKeyError::Db(e)) => return Err(e),
                Err(_) => Some("(no name)".into()),
            };
            let device = match did {
                Some(d) => accounts::find_device(conn, &d)?.filter(|d| d.user_id == uid),
                None => None,
            };
            Ok((name, device))
        })
        .await;
    let (name, device) = match found {
        Ok((Some(name), device)) => (name, device),
        Ok((None, _)) => return not_found(&session, "There is no such user."),
        Err(e) => return failed(e),
    };
    let base = format!("/admin/users/{user_id}");
    let (question, consequence, button, target) = match action {
        UserAction::RevokeDevice => {
            let Some(device) = device else {
                return not_found(&session, "This user has no such device.");
            };
            let label = device.name.clone().unwrap_or_else(|| "this device".into());
            (
                format!("Revoke “{label}” of {name}?"),
                "Its refresh token and access tokens stop working at once. The user must sign in again on that device."
                    .to_string(),
                "Revoke device",
                format!("{base}/devices/{}/revoke", device.id),
            )
        }
        UserAction::RevokeAll => (
            format!("Revoke every device of {name}?"),
            "Every refresh token and access token of this user stops working at once. They can sign in again."
                .to_string(),
            "Revoke all devices",
            format!("{base}/revoke-all"),
        ),
        UserAction::Disable => (
            format!("Disable {name}?"),
            "They cannot sign in or refresh, and every device of theirs stops working at once.".to_string(),
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

enum Changed {
    Done(&'static str),
    Missing(&'static str),
}

/// Runs an audited change on a user for an admin, then sends them back to the user's page.
async fn change_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    user_id: String,
    device_id: Option<String>,
    csrf: Option<String>,
    action: UserAction,
) -> HttpResponse {
    let session = match changer(&state, &req, csrf.as_deref()).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let (Some(user_id), Ok(device_id)) =
        (canonical_id(&user_id), device_id.as_deref().map(|d| canonical_id(d).ok_or(())).transpose())
    else {
        return not_found(&session, "There is no such user or device.");
    };
    if user_id == session.user_id && matches!(action, UserAction::Disable | UserAction::Delete) {
        return bad_request(
            &session,
            "You cannot disable or delete your own account here. Another admin can, or use the command line.",
        );
    }
    let origin = origin(&req);
    let (s, uid) = (session.clone(), user_id.clone());
    let changed = state
        .db
        .write(move |conn| {
            let now = db::now();
            let actor = s.actor();
            let by = |action: &'static str| accounts::Revocation {
                actor: &actor,
                action,
                detail: Some("by the admin console"),
                origin: &origin,
            };
            Ok::<_, DbError>(match action {
                UserAction::RevokeDevice => {
                    let device = device_id
                        .map(|d| accounts::find_device(conn, &d))
                        .transpose()?
                        .flatten()
                        .filter(|d| d.user_id == uid);
                    match device {
                        Some(device) => {
                            accounts::end_device(conn, &device, &by("device.revoke"), now)?;
                            Changed::Done("device-revoked")
                        }
                        None => Changed::Missing("This user has no such device."),
                    }
                }
                UserAction::RevokeAll => {
                    if !accounts::user_exists(conn, &uid)? {
                        return Ok(Changed::Missing("There is no such user."));
                    }
                    accounts::end_all_devices(conn, &uid, &by("user.revoke_all"), now)?;
                    Changed::Done("all-revoked")
                }
                UserAction::Disable | UserAction::Enable => {
                    let disable = action == UserAction::Disable;
                    let name = if disable { "user.disable" } else { "user.enable" };
                    match accounts::set_disabled(conn, &uid, disable, &by(name), now)? {
                        Some(_) => Changed::Done(if disable { "disabled" } else { "enabled" }),
                        None => Changed::Missing("There is no such user."),
                    }
                }
                UserAction::Delete => {
                    if profile::delete_user(conn, &uid, &actor, &origin, now)? {
                        Changed::Done("deleted")
                    } else {
                        Changed::Missing("There is no such user.")
                    }
                }
            })
        })
        .await;
    match changed {
        Ok(Changed::Done("deleted")) => {
            state.user_keys.forget(&user_id);
            see_other("/admin/users?done=deleted")
        }
        Ok(Changed::Done(done)) => see_other(&format!("/admin/users/{user_id}?done={done}")),
        Ok(Changed::Missing(what)) => not_found(&session, what),
        Err(e) => failed(e),
    }
}

pub async fn revoke_device(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let (user_id, device_id) = path.into_inner();
    change_user(state, req, user_id, Some(device_id), form.into_inner().csrf, UserAction::RevokeDevice).await
}

pub async fn revoke_all(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_user(state, req, path.into_inner(), None, form.into_inner().csrf, UserAction::RevokeAll).await
}

pub async fn disable_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_user(state, req, path.into_inner(), None, form.into_inner().csrf, UserAction::Disable).await
}

pub async fn enable_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_user(state, req, path.into_inner(), None, form.into_inner().csrf, UserAction::Enable).await
}

pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_user(state, req, path.into_inner(), None, form.into_inner().csrf, UserAction::Delete).await
}

// ---- audit log -------------------------------------------------------------------------------

struct ActionChoice {
    name: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    user: String,
    actor: String,
    actions: Vec<ActionChoice>,
    events: Vec<EventRow>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    user: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    before: Option<String>,
}

pub async fn audit_log(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let q = query.into_inner();
    let clean = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let filter = AuditFilter { user: clean(q.user), actor: clean(q.actor), action: clean(q.action) };
    let too_long = [&filter.user, &filter.actor, &filter.action]
        .iter()
        .any(|f| f.as_ref().is_some_and(|v| v.len() > 200 || v.contains(char::is_control)));
    if too_long {
        return bad_request(&session, "A filter is too long or contains control characters.");
    }
    let before = match q.before.as_deref().map(Cursor::parse) {
        Some(None) => return bad_request(&session, "That page link is malformed."),
        other => other.flatten(),
    };
    let f = filter.clone();
    let found = state.db.run(move |conn| directory::audit_page(conn, &f, before.as_ref(), PAGE_SIZE)).await;
    let (events, next) = match found {
        Ok(found) => found,
        Err(e) => return failed(e),
    };
    let next = next.map(|cursor| {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [("user", &filter.user), ("actor", &filter.actor), ("action", &filter.action)] {
            if let Some(value) = value {
                link.append_pair(key, value);
            }
        }
        link.append_pair("before", &cursor.encode());
        format!("/admin/audit?{}", link.finish())
    });
    let page = AuditPage {
        layout: Layout::of(&session, "audit"),
        actions: audit::ACTIONS
            .iter()
            .map(|name| ActionChoice { name, selected: filter.action.as_deref() == Some(*name) })
            .collect(),
        user: filter.user.unwrap_or_default(),
        actor: filter.actor.unwrap_or_default(),
        events: event_rows(events),
        next,
    };
    html(StatusCode::OK, page.render())
}

// ---- signing keys ----------------------------------------------------------------------------

struct KeyRow {
    kid: String,
    alg: String,
    state: &'static str,
    created: String,
    activates: String,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
}

pub async fn keys(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DoneQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    // Keys another replica or the CLI added since the last reload are shown too.
    let keys = state.keys.clone();
    if let Err(e) = state.db.run(move |conn| keys.reload(conn)).await {
        tracing::warn!(error = %e, "cannot reload signing keys");
    }
    let rows = state
        .keys
        .summary(db::now())
        .into_iter()
        .map(|k| KeyRow {
            kid: k.kid,
            alg: k.alg,
            state: k.state.as_str(),
            created: when(k.created_at),
            activates: when(k.activates_at),
        })
        .collect();
    let page =
        KeysPage { layout: Layout::of(&session, "keys").with_notice(query.done.as_deref()), keys: rows };
    html(StatusCode::OK, page.render())
}

/// Publishes a new signing key now (it signs after the publish lead), audited.
pub async fn rotate_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let session = match changer(&state, &req, form.csrf.as_deref()).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let (keys, origin, s) = (state.keys.clone(), origin(&req), session.clone());
    let added = state
        .db
        .write(move |conn| {
            let now = db::now();
            let kid = keys.add_key(conn, now).map_err(|e| match e {
                crate::crypto::signing::SigningError::Db(db) => db,
                other => {
                    tracing::error!(error = %other, "cannot add a signing key");
                    DbError::Task
                }
            })?;
            audit_change(conn, &s, "signing_key.rotate", None, Some(&format!("kid={kid}")), &origin, now)?;
            Ok::<_, DbError>(kid)
        })
        .await;
    if let Err(e) = added {
        return failed(e);
    }
    let keys = state.keys.clone();
    if let Err(e) = state.db.run(move |conn| keys.reload(conn)).await {
        tracing::warn!(error = %e, "cannot reload signing keys");
    }
    see_other("/admin/keys?done=key-added")
}

// ---- clients ---------------------------------------------------------------------------------

struct ClientRow {
    id: String,
    kind: &'static str,
    redirect_uris: Vec<String>,
    scopes: String,
    created: String,
    disabled: bool,
}

#[derive(Default, Deserialize)]
pub struct NewClientForm {
    csrf: Option<String>,
    client_id: Option<String>,
    kind: Option<String>,
    redirect_uris: Option<String>,
    scopes: Option<String>,
}

/// What the new-client form shows again after a refusal.
#[derive(Default)]
struct FormEcho {
    client_id: String,
    kind: String,
    redirect_uris: String,
    scopes: String,
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    layout: Layout,
    configured: Vec<ClientRow>,
    stored: Vec<ClientRow>,
    error: Option<String>,
    form: FormEcho,
}

fn kind_name(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::Public => "public",
        ClientKind::Confidential => "confidential",
    }
}

async fn clients_page(
    state: &AppState,
    session: &AdminSession,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<String>,
    form: FormEcho,
) -> HttpResponse {
    let stored = match state.db.run(clients::list_stored).await {
        Ok(stored) => stored,
        Err(e) => return failed(e),
    };
    let configured = state
        .clients
        .configured()
        .iter()
        .map(|c| ClientRow {
            id: c.id.clone(),
            kind: kind_name(c.kind),
            redirect_uris: c.redirect_uris.clone(),
            scopes: c.scopes.join(" "),
            created: String::new(),
            disabled: false,
        })
        .collect();
    let stored = stored
        .into_iter()
        .map(|c| ClientRow {
            kind: if c.kind == "confidential" { "confidential" } else { "public" },
            redirect_uris: c.redirect_uri_list(),
            scopes: c.scope_list().join(" "),
            created: when(c.created_at),
            disabled: c.disabled_at.is_some(),
            id: c.client_id,
        })
        .collect();
    let page = ClientsPage {
        layout: Layout::of(session, "clients").with_notice(notice),
        configured,
        stored,
        error,
        form,
    };
    html(status, page.render())
}

pub async fn clients_list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DoneQuery>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let form = FormEcho { scopes: "openid profile api".into(), ..Default::default() };
    clients_page(&state, &session, StatusCode::OK, query.done.as_deref(), None, form).await
}

#[derive(Template)]
#[template(path = "admin/client_created.html")]
struct ClientCreatedPage {
    layout: Layout,
    client_id: String,
    secret: Option<String>,
}

/// Makes a client; a confidential one's secret is shown on this answer only.
pub async fn create_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<NewClientForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let session = match changer(&state, &req, form.csrf.as_deref()).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let echo = FormEcho {
        client_id: form.client_id.clone().unwrap_or_default(),
        kind: form.kind.clone().unwrap_or_default(),
        redirect_uris: form.redirect_uris.clone().unwrap_or_default(),
        scopes: form.scopes.clone().unwrap_or_default(),
    };
    let kind = match form.kind.as_deref() {
        Some("public") | None => ClientKind::Public,
        Some("confidential") => ClientKind::Confidential,
        Some(_) => {
            let error = Some("The kind must be public or confidential.".to_string());
            return clients_page(&state, &session, StatusCode::BAD_REQUEST, None, error, echo).await;
        }
    };
    let new = NewClient {
        client_id: form.client_id.unwrap_or_default().trim().to_string(),
        kind,
        redirect_uris: form
            .redirect_uris
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        scopes: {
            let mut scopes: Vec<String> = Vec::new();
            for s in form.scopes.unwrap_or_default().split_whitespace() {
                if !scopes.iter().any(|k| k == s) {
                    scopes.push(s.to_string());
                }
            }
            scopes
        },
    };
    let refused = if state.clients.is_configured(&new.client_id) {
        Err(clients::NewClientError::Taken)
    } else {
        clients::check_new_client(&new)
    };
    if let Err(e) = refused {
        let status =
            if e == clients::NewClientError::Taken { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
        return clients_page(&state, &session, status, None, Some(e.to_string()), echo).await;
    }
    let (origin, s) = (origin(&req), session.clone());
    let client_id = new.client_id.clone();
    let made = state
        .db
        .write(move |conn| {
            let now = db::now();
            let made = clients::insert_stored(conn, &new, now)?;
            if made.is_ok() {
                let detail = format!("client={} kind={}", new.client_id, kind_name(new.kind));
                audit_change(conn, &s, "client.create", None, Some(&detail), &origin, now)?;
            }
            Ok::<_, DbError>(made)
        })
        .await;
    let secret = match made {
        Ok(Ok(secret)) => secret,
        Ok(Err(e)) => {
            return clients_page(&state, &session, StatusCode::CONFLICT, None, Some(e.to_string()), echo)
                .await;
        }
        Err(e) => return failed(e),
    };
    reload_clients(&state).await;
    use secrecy::ExposeSecret;
    let page = ClientCreatedPage {
        layout: Layout::of(&session, "clients"),
        client_id,
        secret: secret.map(|s| s.expose_secret().to_string()),
    };
    html(StatusCode::CREATED, page.render())
}

async fn reload_clients(state: &web::Data<AppState>) {
    let registry = state.clients.clone();
    if let Err(e) = state.db.run(move |conn| registry.reload_stored(conn)).await {
        tracing::warn!(error = %e, "cannot reload stored clients");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientChange {
    Disable,
    Enable,
    Delete,
}

async fn change_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    client_id: String,
    csrf: Option<String>,
    change: ClientChange,
) -> HttpResponse {
    let session = match changer(&state, &req, csrf.as_deref()).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    if client_id.len() > 64 || state.clients.is_configured(&client_id) {
        return bad_request(&session, "Clients from the configuration file can be changed only there.");
    }
    let (origin, s, id) = (origin(&req), session.clone(), client_id.clone());
    let changed = state
        .db
        .write(move |conn| {
            let now = db::now();
            let (found, action) = match change {
                ClientChange::Disable => {
                    (clients::set_stored_disabled(conn, &id, true, now)?, "client.disable")
                }
                ClientChange::Enable => {
                    (clients::set_stored_disabled(conn, &id, false, now)?, "client.enable")
                }
                ClientChange::Delete => (clients::delete_stored(conn, &id)?, "client.delete"),
            };
            if found && change == ClientChange::Delete {
                // Its sessions end with it, so a client made later under this id inherits none.
                let actor = s.actor();
                let by = accounts::Revocation {
                    actor: &actor,
                    action: "device.revoke",
                    detail: Some("its client was deleted in the admin console"),
                    origin: &origin,
                };
                for device in accounts::live_devices_of_client(conn, &id)? {
                    accounts::end_device(conn, &device, &by, now)?;
                }
            }
            if found {
                audit_change(conn, &s, action, None, Some(&format!("client={id}")), &origin, now)?;
            }
            Ok::<_, DbError>(found)
        })
        .await;
    match changed {
        Ok(true) => {
            reload_clients(&state).await;
            let done = match change {
                ClientChange::Disable => "client-disabled",
                ClientChange::Enable => "client-enabled",
                ClientChange::Delete => "client-deleted",
            };
            see_other(&format!("/admin/clients?done={done}"))
        }
        Ok(false) => not_found(&session, "There is no such client."),
        Err(e) => failed(e),
    }
}

pub async fn disable_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_client(state, req, path.into_inner(), form.into_inner().csrf, ClientChange::Disable).await
}

pub async fn enable_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_client(state, req, path.into_inner(), form.into_inner().csrf, ClientChange::Enable).await
}

pub async fn delete_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    change_client(state, req, path.into_inner(), form.into_inner().csrf, ClientChange::Delete).await
}

/// The confirmation step before deleting a client.
pub async fn confirm_delete_client(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let session = match viewer(&state, &req).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let client_id = path.into_inner();
    let well_formed = client_id.len() <= 64
        && client_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !well_formed {
        return not_found(&session, "There is no such client.");
    }
    let question = format!("Delete client {client_id}?");
    let page = ConfirmPage {
        layout: Layout::of(&session, "clients"),
        question: &question,
        consequence:
            "Apps using it can no longer sign in, refresh or introspect, and its devices stop working.",
        button: "Delete client",
        action: format!("/admin/clients/{client_id}/delete"),
        cancel: "/admin/clients".into(),
    };
    html(StatusCode::OK, page.render())
}
