//! The admin console, `/admin`: server-rendered pages for admins (`idbridge admins grant`).
//!
//! Sign-in goes through idbridge's own browser flow as the internal client `idbridge-admin`
//! (`/admin/login` → `/oauth/authorize` → provider → `/admin/callback`, which redeems the code
//! in-process). The session is a database row behind a `__Host-` cookie (`admin::sessions`).
//! Every change is a POST carrying the session's anti-CSRF token, and is audited naming the
//! admin. Pages are askama templates (`templates/admin/`), escaped throughout; the only asset
//! is `/admin/static/admin.css`, served from the binary. No page needs JavaScript.
//!
//! A page takes an [`AdminPage`] (the session, else a redirect to sign in); a change takes an
//! [`AdminForm`] (its form, with the session and its anti-CSRF token checked, else a 403 page).
//! One file per part of the console: [`session`] (sign-in and sign-out), [`overview`],
//! [`users`], [`audit`], [`keys`] and [`clients`]; this one holds what they share.

pub mod audit;
pub mod clients;
pub mod keys;
pub mod overview;
pub mod session;
pub mod users;

use std::cell::RefCell;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::admin::audit_log;
use crate::admin::sessions::{self, AdminSession};
use crate::db::DbError;
use crate::service::Requester;
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

const STYLESHEET: &str = include_str!("../../../assets/admin.css");
/// Rows per page of the users list and the audit log.
const PAGE_SIZE: i64 = 50;

#[utoipa::path(get, path = "/admin/static/admin.css", tag = "admin", summary = "The console's stylesheet",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok().content_type("text/css; charset=utf-8").body(STYLESHEET)
}

// ---- the layout and the answers every part gives ---------------------------------------------

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

/// A change, or its confirmation, that is moot: what it would do is already so (`409`), with a
/// way back to `back`.
fn already(session: &AdminSession, text: &str, back: &str) -> HttpResponse {
    let page = MessagePage {
        layout: Layout::of(session, ""),
        heading: "Already done",
        message: text,
        detail: None,
        link: Some((back, "Back")),
    };
    html(StatusCode::CONFLICT, page.render())
}

fn bad_request(session: &AdminSession, text: &str) -> HttpResponse {
    message(StatusCode::BAD_REQUEST, Layout::of(session, ""), "Not possible", text)
}

// ---- what several parts show or send ---------------------------------------------------------

/// The confirmation step before a change (a user action, deleting a client).
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

/// An audit event as the user page and the audit log show it, with the people its ids name.
struct EventRow {
    when: String,
    action: String,
    actor: String,
    /// The name of an `admin:` or `user:` actor, or that they were deleted.
    actor_person: Option<PersonLabel>,
    user_id: Option<String>,
    user_person: Option<PersonLabel>,
    device_id: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
}

/// Who a user id is: a name and e-mail, or "deleted".
struct PersonLabel {
    name: Option<String>,
    email: Option<String>,
    deleted: bool,
}

impl PersonLabel {
    fn of(person: Option<&audit_log::Person>) -> Option<Self> {
        Some(match person? {
            audit_log::Person::Known { name, email } => {
                PersonLabel { name: name.clone(), email: email.clone(), deleted: false }
            }
            audit_log::Person::Deleted => PersonLabel { name: None, email: None, deleted: true },
        })
    }
}

fn event_rows(
    events: Vec<audit_log::AuditRow>,
    people: &std::collections::HashMap<String, audit_log::Person>,
) -> Vec<EventRow> {
    events
        .into_iter()
        .map(|e| {
            // Only user and admin actors are people (a client's id could look like a user's).
            let actor_id = match e.actor.split_once(':') {
                Some(("user" | "admin", id)) => id,
                _ => "",
            };
            EventRow {
                when: when(e.at),
                action: e.action,
                actor_person: PersonLabel::of(people.get(actor_id)),
                user_person: PersonLabel::of(e.user_id.as_ref().and_then(|u| people.get(u))),
                actor: e.actor,
                user_id: e.user_id,
                device_id: e.device_id,
                ip: e.ip,
                detail: e.detail,
            }
        })
        .collect()
}

/// `?done=…`, set by the redirect after a change.
#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

/// The admin of `session` making a change through this request, as the audit log names them.
fn requester(session: &AdminSession, req: &HttpRequest) -> Requester {
    Requester::new(session.actor(), crate::http::auth::origin(req))
}

// ---- the admin of a request: extractors ------------------------------------------------------

fn session_policy(state: &AppState) -> sessions::SessionPolicy {
    sessions::SessionPolicy {
        idle_secs: state.settings.admin.session_idle_ttl.as_secs() as i64,
        max_secs: state.settings.admin.session_max_ttl.as_secs() as i64,
    }
}

/// The valid admin session of this request, restarting its idle clock; `None` when there
/// is none (no cookie, expired, ended, or no longer an admin).
async fn current_session(
    state: &AppState,
    req: &HttpRequest,
    purpose: Purpose,
) -> Result<Option<AdminSession>, HttpResponse> {
    let cookie = match purpose {
        Purpose::Change => req.cookie(sessions::COOKIE),
        Purpose::Read => req.cookie(sessions::COOKIE).or_else(|| req.cookie(sessions::READ_COOKIE)),
    };
    let Some(token) = cookie.map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let policy = session_policy(state);
    let found = state
        .db
        .run(move |conn| sessions::find(conn, &token, policy, crate::clock::now()))
        .await
        .map_err(failed)?;
    if let Some(session) = found.as_ref().filter(|s| s.needs_touch) {
        let id_hash = session.id_hash.clone();
        if let Err(e) = state.db.write(move |conn| sessions::touch(conn, &id_hash, crate::clock::now())).await
        {
            tracing::warn!(error = %e, "cannot record admin session use");
        }
    }
    Ok(found)
}

/// What an admin extractor answers instead of running the handler: the very page a handler
/// would send (a redirect to sign in, a 403 page, a storage failure's page), kept whole with
/// its status, headers and cookies.
pub struct Refusal {
    page: RefCell<Option<HttpResponse>>,
    status: StatusCode,
    signed_out: bool,
}

impl Refusal {
    fn new(page: HttpResponse) -> Self {
        Refusal { status: page.status(), page: RefCell::new(Some(page)), signed_out: false }
    }

    fn signed_out(page: HttpResponse) -> Self {
        Refusal { signed_out: true, ..Refusal::new(page) }
    }

    /// The request had no valid admin session (rather than a stale form or a storage failure).
    pub fn is_signed_out(&self) -> bool {
        self.signed_out
    }
}

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal").field("status", &self.status).field("signed_out", &self.signed_out).finish()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by the admin console ({})", self.status)
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// The stored page (actix asks once per error; a second ask gets the bare status).
    fn error_response(&self) -> HttpResponse {
        self.page.borrow_mut().take().unwrap_or_else(|| HttpResponse::new(self.status))
    }
}

/// What a session is looked up for: reading a page (the Strict cookie, or the Lax one a
/// cross-site link carries) or making a change (the Strict cookie only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    Change,
}

/// The request's session, or a storage failure's page.
async fn session_of(req: &HttpRequest, purpose: Purpose) -> Result<Option<AdminSession>, actix_web::Error> {
    let state = web::Data::<AppState>::extract(req).await?;
    current_session(&state, req, purpose).await.map_err(|page| Refusal::new(page).into())
}

/// A page of the console, as a local path to come back to after sign-in: `/admin…`, no
/// scheme, host, `//` or backslash, at most 1 KiB. Anything else is `None`.
pub fn local_page(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/admin")?;
    let local = matches!(rest.bytes().next(), None | Some(b'/' | b'?'))
        && !path.contains("//")
        && !path.contains('\\')
        && !path.contains(char::is_control)
        && path.len() <= 1024
        && !path.starts_with("/admin/login")
        && !path.starts_with("/admin/callback");
    local.then_some(path)
}

/// The admin viewing a page: the request's valid session, else a redirect to sign in.
pub struct AdminPage(pub AdminSession);

impl FromRequest for AdminPage {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let session = session_of(&req, Purpose::Read).await?;
            // Signed out: sign in, then come back to this page.
            let asked = req.uri().path_and_query().map_or("/admin", |p| p.as_str());
            let login = match local_page(asked) {
                Some(page) if page != "/admin" => {
                    let next: String = url::form_urlencoded::byte_serialize(page.as_bytes()).collect();
                    format!("/admin/login?next={next}")
                }
                _ => "/admin/login".to_string(),
            };
            session.map(AdminPage).ok_or_else(|| Refusal::signed_out(see_other(&login)).into())
        })
    }
}

/// A form of the console: each carries its session's anti-CSRF token.
pub trait CarriesCsrf {
    fn csrf(&self) -> Option<&str>;
}

/// The form of a change that sends nothing but the token.
/// A console change's form: the session's anti-CSRF token, as the page's forms carry it.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    #[schema(required = true)]
    csrf: Option<String>,
}

impl CarriesCsrf for CsrfForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// A change: its urlencoded form, from an admin whose session is valid and whose form carries
/// that session's anti-CSRF token. Checked in this order, nothing changing when one fails: the
/// body (the `FormConfig` answer), the session (403 "Signed out", or a storage failure's
/// page), the token (403 "Refused").
pub struct AdminForm<T> {
    pub session: AdminSession,
    pub form: T,
}

impl<T: DeserializeOwned + CarriesCsrf + 'static> FromRequest for AdminForm<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Form::<T>::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let web::Form(form) = body.await?;
            let Some(session) = session_of(&req, Purpose::Change).await? else {
                let text =
                    "Your admin session has ended or never began. Sign in again, then repeat the change.";
                return Err(Refusal::signed_out(forbidden("Signed out", text)).into());
            };
            if !session.csrf_matches(form.csrf()) {
                return Err(Refusal::new(message(
                    StatusCode::FORBIDDEN,
                    Layout::of(&session, ""),
                    "Refused",
                    "This form is stale or did not come from this console (its anti-CSRF token is missing or wrong). Nothing was changed.",
                ))
                .into());
            }
            Ok(AdminForm { session, form })
        })
    }
}

/// A change named by the last segment of the route it came in on (`/admin/users/{id}/disable`
/// → `disable`), so one handler serves a family of routes.
pub trait FromRoute: Sized {
    fn from_route(last_segment: &str) -> Option<Self>;
}

/// The change a route names (see [`FromRoute`]).
pub struct RouteAction<A>(pub A);

impl<A: FromRoute> FromRequest for RouteAction<A> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pattern = req.match_pattern().unwrap_or_default();
        let action = pattern.rsplit('/').next().and_then(A::from_route).map(RouteAction);
        // Only a route table naming a handler for a route it does not serve gets here.
        ready(
            action
                .ok_or_else(|| actix_web::error::ErrorInternalServerError("no admin change for this route")),
        )
    }
}
