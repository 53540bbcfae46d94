//! Clients, `/admin/clients`: the configured and stored OAuth clients, and making, disabling,
//! enabling and deleting the stored ones.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{bad_request, failed, html, not_found, requester, see_other, when};
use super::{
    AdminForm, AdminPage, CarriesCsrf, ConfirmPage, CsrfForm, DoneQuery, FromRoute, Layout, RouteAction,
};
use crate::admin::sessions::AdminSession;
use crate::clients::{self, ClientKind, NewClient, NewClientError};
use crate::service;
use crate::service::clients::Change;
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
    secret: Option<String>,
}

/// Makes a client; a confidential one's secret is shown on this answer only.
#[utoipa::path(post, path = "/admin/clients", tag = "admin", summary = "Makes a client; a confidential one's secret is shown once (argon2 hash stored)",
    request_body(content = NewClientForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "Made: the page, with a confidential client's secret", content_type = "text/html", body = String), super::super::openapi::answers::AdminChange))]
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
    use secrecy::ExposeSecret;
    let page = ClientCreatedPage {
        layout: Layout::of(&session, "clients"),
        client_id,
        secret: secret.map(|s| s.expose_secret().to_string()),
    };
    html(StatusCode::CREATED, page.render())
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
        Ok(true) => {
            let done = match change {
                Change::Disable => "client-disabled",
                Change::Enable => "client-enabled",
                Change::Delete => "client-deleted",
            };
            see_other(&format!("/admin/clients?done={done}"))
        }
        Ok(false) => not_found(&session, "There is no such client."),
        Err(e) => failed(e),
    }
}

/// The confirmation step before deleting a client.
#[utoipa::path(get, path = "/admin/clients/{id}/confirm-delete", tag = "admin", summary = "The confirmation step of deleting a client",
    params(("id" = String, Path, description = "the client id")), responses(super::super::openapi::answers::AdminPage))]
pub async fn confirm_delete(path: web::Path<String>, AdminPage(session): AdminPage) -> HttpResponse {
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
