//! Clients, `/admin/clients`: the configured and stored OAuth clients, and making, disabling,
//! enabling and deleting the stored ones.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{already, bad_request, failed, html, not_found, requester, see_other, when};
use super::{
    AdminForm, AdminPage, CarriesCsrf, ConfirmPage, CsrfForm, DoneQuery, FromRoute, Layout, RouteAction,
};
use crate::admin::sessions::AdminSession;
use crate::clients::{self, ClientKind, NewClient, NewClientError};
use crate::service;
use crate::service::clients::Change;
use crate::service::StateChange;
use crate::state::AppState;

struct ClientRow {
    id: String,
    kind: &'static str,
    redirect_uris: Vec<String>,
    scopes: String,
    created: String,
    disabled: bool,
}

/// A new client, as the console's form sends it.
#[derive(Default, Deserialize, utoipa::ToSchema)]
pub struct NewClientForm {
    /// The session's anti-CSRF token
    #[schema(required = true)]
    csrf: Option<String>,
    /// 2 to 64 of a-z 0-9 . _ -
    client_id: Option<String>,
    /// `public` or `confidential`
    kind: Option<String>,
    /// One per line: https, http on loopback, or a private-use scheme (RFC 8252)
    redirect_uris: Option<String>,
    /// Space-separated
    scopes: Option<String>,
    /// Where OpenID Connect Back-Channel Logout tokens go
    backchannel_logout_uri: Option<String>,
    /// The checkbox: present (`on`) when ticked.
    dpop_required: Option<String>,
}

impl CarriesCsrf for NewClientForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// What the new-client form shows again after a refusal.
#[derive(Default)]
struct FormEcho {
    client_id: String,
    kind: String,
    redirect_uris: String,
    scopes: String,
    backchannel_logout_uri: String,
    dpop_required: bool,
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
            kind: c.kind.as_str(),
            redirect_uris: c.redirect_uris.clone(),
            scopes: c.scopes.join(" "),
            created: String::new(),
            disabled: false,
        })
        .collect();
    let stored = stored
        .into_iter()
        .map(|c| ClientRow {
            kind: ClientKind::parse(&c.kind).unwrap_or(ClientKind::Public).as_str(),
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

/// The clients from the configuration file and those made here, and the form for a new one.
#[utoipa::path(get, path = "/admin/clients", tag = "admin", summary = "Clients: from the configuration (read-only) and made here",
    params(("done" = Option<String>, Query, description = "what was just done, for the notice")), responses(super::super::openapi::answers::AdminPage))]
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let form = FormEcho { scopes: "openid profile api".into(), ..Default::default() };
    clients_page(&state, &session, StatusCode::OK, query.done.as_deref(), None, form).await
}

#[derive(Template)]
#[template(path = "admin/client_created.html")]
struct ClientCreatedPage {
    layout: Layout,
    client_id: String,
    confidential: bool,
    /// A confidential client's secret, on the first visit only.
    secret: Option<String>,
}

/// Makes a client, then sends the browser to its page, where a confidential one's secret is
/// shown once.
#[utoipa::path(post, path = "/admin/clients", tag = "admin", summary = "Makes a client; a confidential one's secret is shown once, on the page this redirects to (a SHA-256 hash is stored)",
    request_body(content = NewClientForm, content_type = "application/x-www-form-urlencoded"),
    responses(super::super::openapi::answers::AdminChange))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    AdminForm { session, form }: AdminForm<NewClientForm>,
) -> HttpResponse {
    let echo = FormEcho {
        client_id: form.client_id.clone().unwrap_or_default(),
        kind: form.kind.clone().unwrap_or_default(),
        redirect_uris: form.redirect_uris.clone().unwrap_or_default(),
        scopes: form.scopes.clone().unwrap_or_default(),
        backchannel_logout_uri: form.backchannel_logout_uri.clone().unwrap_or_default(),
        dpop_required: form.dpop_required.is_some(),
    };
    let kind = match form.kind.as_deref().map(ClientKind::parse) {
        None => ClientKind::Public,
        Some(Some(kind)) => kind,
        Some(None) => {
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
        backchannel_logout_uri: form
            .backchannel_logout_uri
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty()),
        dpop_required: form.dpop_required.is_some(),
    };
    let client_id = new.client_id.clone();
    let made = service::clients::create(&state.db, &state.clients, new, &requester(&session, &req)).await;
    let secret = match made {
        Ok(Ok(secret)) => secret,
        Ok(Err(e)) => {
            let status =
                if e == NewClientError::Taken { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            return clients_page(&state, &session, status, None, Some(e.to_string()), echo).await;
        }
        Err(e) => return failed(e),
    };
    // Post/Redirect/Get: a reload shows the page again instead of sending the form twice. A
    // secret travels to that page once, sealed under the master key for this session and
    // client, in a cookie the page clears.
    let mut response = see_other(&format!("/admin/clients/{client_id}/created"));
    if let Some(secret) = secret {
        use secrecy::ExposeSecret;
        let aad = created_secret_aad(&session, &client_id);
        let sealed = state.user_keys.keyring().wrap(secret.expose_secret().as_bytes(), &aad);
        let value = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sealed);
        let _ = response.add_cookie(&secret_cookie(&client_id, value, 300));
    }
    response
}

/// The cookie that carries a new client's sealed secret from the form to its page, once: one
/// per client (its id is cookie-safe), so two clients made at once keep their own.
fn created_secret_cookie(client_id: &str) -> String {
    format!("__Host-idbridge-new-secret-{client_id}")
}

fn secret_cookie(client_id: &str, value: String, max_age_secs: i64) -> actix_web::cookie::Cookie<'static> {
    actix_web::cookie::Cookie::build(created_secret_cookie(client_id), value)
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

/// What the sealed secret is bound to: this admin session and this client.
fn created_secret_aad(session: &AdminSession, client_id: &str) -> Vec<u8> {
    format!("idbridge:admin.new-client-secret\0{}\0{client_id}", session.id_hash).into_bytes()
}

/// The page after making a client: a confidential client's secret, shown this once.
#[utoipa::path(get, path = "/admin/clients/{id}/created", tag = "admin", summary = "A client just made: its secret, shown once",
    params(("id" = String, Path, description = "the client id")), responses(super::super::openapi::answers::AdminPage))]
pub async fn created(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let client_id = path.into_inner();
    let client = match stored_client(&state, &session, &client_id).await {
        Ok(client) => client,
        Err(page) => return page,
    };
    let confidential = ClientKind::parse(&client.kind) == Some(ClientKind::Confidential);
    let cookie = created_secret_cookie(&client_id);
    let secret = req.cookie(&cookie).filter(|_| confidential).and_then(|c| {
        let sealed =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c.value()).ok()?;
        let opened =
            state.user_keys.keyring().unwrap(&sealed, &created_secret_aad(&session, &client_id)).ok()?;
        String::from_utf8(opened).ok()
    });
    let carried = req.cookie(&cookie).is_some();
    let removal = secret_cookie(&client_id, String::new(), 0);
    let page = ClientCreatedPage { layout: Layout::of(&session, "clients"), client_id, confidential, secret };
    let mut response = html(StatusCode::OK, page.render());
    if carried {
        let _ = response.add_cookie(&removal);
    }
    response
}

/// The stored client a path names, or the page to answer instead (404, or a storage failure's).
async fn stored_client(
    state: &AppState,
    session: &AdminSession,
    client_id: &str,
) -> Result<clients::StoredClient, HttpResponse> {
    let found = if well_formed(client_id) {
        let id = client_id.to_string();
        state.db.run(move |conn| clients::find_stored(conn, &id)).await.map_err(failed)?
    } else {
        None
    };
    found.ok_or_else(|| not_found(session, "There is no such client."))
}

/// A client id as clients are named: 2 to 64 of a-z 0-9 . _ -.
fn well_formed(client_id: &str) -> bool {
    client_id.len() <= 64
        && client_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The change to a stored client a route names.
impl FromRoute for Change {
    fn from_route(last_segment: &str) -> Option<Self> {
        Some(match last_segment {
            "disable" => Change::Disable,
            "enable" => Change::Enable,
            "delete" => Change::Delete,
            _ => return None,
        })
    }
}

/// Disables, enables or deletes a client made in the console (the route names which), audited.
#[utoipa::path(post, path = "/admin/clients/{id}/disable", tag = "admin", summary = "Disables a client made in the console (audited)",
    params(("id" = String, Path, description = "the client id")),
    request_body(content = super::CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses(super::super::openapi::answers::AdminChange))]
pub async fn change(
    state: web::Data<AppState>,
    req: HttpRequest,
    RouteAction(change): RouteAction<Change>,
    path: web::Path<String>,
    AdminForm { session, .. }: AdminForm<CsrfForm>,
) -> HttpResponse {
    let client_id = path.into_inner();
    if client_id.len() > 64 || state.clients.is_configured(&client_id) {
        return bad_request(&session, "Clients from the configuration file can be changed only there.");
    }
    let by = requester(&session, &req);
    let changed = service::clients::change(&state.db, &state.clients, &client_id, change, &by).await;
    match changed {
        Ok(StateChange::Done(())) => {
            let done = match change {
                Change::Disable => "client-disabled",
                Change::Enable => "client-enabled",
                Change::Delete => "client-deleted",
            };
            see_other(&format!("/admin/clients?done={done}"))
        }
        Ok(StateChange::AlreadySo) => {
            let text = if change == Change::Disable {
                "The client was already disabled. Nothing was changed."
            } else {
                "The client was not disabled. Nothing was changed."
            };
            already(&session, text, "/admin/clients")
        }
        Ok(StateChange::Missing) => not_found(&session, "There is no such client."),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct ClientConfirmQuery {
    action: Option<String>,
}

/// The confirmation step before disabling, enabling or deleting a client, aware of its state.
#[utoipa::path(get, path = "/admin/clients/{id}/confirm", tag = "admin", summary = "The confirmation step of `action` on a client: disable, enable, delete",
    params(("id" = String, Path, description = "the client id"), ("action" = Option<String>, Query, description = "disable, enable or delete")),
    responses(super::super::openapi::answers::AdminPage))]
pub async fn confirm(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ClientConfirmQuery>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    let Some(change) = query.action.as_deref().and_then(Change::from_route) else {
        return bad_request(&session, "Unknown action.");
    };
    confirm_change(&state, &session, path.into_inner(), change).await
}

/// The confirmation step before deleting a client (the older link of [`confirm`]).
#[utoipa::path(get, path = "/admin/clients/{id}/confirm-delete", tag = "admin", summary = "The confirmation step of deleting a client",
    params(("id" = String, Path, description = "the client id")), responses(super::super::openapi::answers::AdminPage))]
pub async fn confirm_delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
    AdminPage(session): AdminPage,
) -> HttpResponse {
    confirm_change(&state, &session, path.into_inner(), Change::Delete).await
}

async fn confirm_change(
    state: &AppState,
    session: &AdminSession,
    client_id: String,
    change: Change,
) -> HttpResponse {
    if well_formed(&client_id) && state.clients.is_configured(&client_id) {
        return bad_request(session, "Clients from the configuration file can be changed only there.");
    }
    let client = match stored_client(state, session, &client_id).await {
        Ok(client) => client,
        Err(page) => return page,
    };
    let disabled = client.disabled_at.is_some();
    let (question, consequence, button) = match change {
        Change::Disable if disabled => {
            return already(session, "This client is already disabled.", "/admin/clients")
        }
        Change::Enable if !disabled => {
            return already(session, "This client is not disabled.", "/admin/clients")
        }
        Change::Disable => (
            format!("Disable client {client_id}?"),
            "Apps using it can no longer sign in, refresh or introspect until it is enabled again. Its \
             devices are kept.",
            "Disable client",
        ),
        Change::Enable => (
            format!("Enable client {client_id}?"),
            "Apps using it can sign in, refresh and introspect again.",
            "Enable client",
        ),
        Change::Delete => (
            format!("Delete client {client_id}?"),
            "Apps using it can no longer sign in, refresh or introspect, and its devices stop working. This \
             cannot be undone.",
            "Delete client",
        ),
    };
    let action = match change {
        Change::Disable => "disable",
        Change::Enable => "enable",
        Change::Delete => "delete",
    };
    let page = ConfirmPage {
        layout: Layout::of(session, "clients"),
        question: &question,
        consequence,
        button,
        action: format!("/admin/clients/{client_id}/{action}"),
        cancel: "/admin/clients".into(),
    };
    html(StatusCode::OK, page.render())
}
