//! `GET`/`POST /oauth/logout`: OpenID Connect RP-Initiated Logout 1.0. The app names the
//! session with `id_token_hint` (an ID token idbridge issued, expired or not); its device ends,
//! its client is told (back-channel logout), and the browser goes back to the app's
//! `post_logout_redirect_uri` (one of the client's `post_logout_redirect_uris`, exactly) with
//! `state`, or sees a page. A redirect that is not the client's refuses the whole request.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::auth::origin;
use super::authorize::page;
use crate::audit::{Actor, AuditAction};
use crate::ids::{DeviceId, UserId};
use crate::service::devices::Owner;
use crate::service::{self, Requester};
use crate::state::AppState;
use crate::tokens::id_token;

/// An RP-Initiated Logout request, as a query or a form.
#[derive(Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
pub struct LogoutRequest {
    /// An ID token idbridge issued (expired or not): its device ends
    id_token_hint: Option<String>,
    /// The client; the hint's `aud` when absent
    client_id: Option<String>,
    /// One of the client's `post_logout_redirect_uris`, exactly
    post_logout_redirect_uri: Option<String>,
    /// Returned with the redirect
    state: Option<String>,
}

#[derive(Template)]
#[template(path = "oauth/signed_out.html")]
struct SignedOutPage<'a> {
    heading: &'a str,
    message: &'a str,
}

fn signed_out(status: StatusCode, heading: &str, message: &str) -> HttpResponse {
    page(status, SignedOutPage { heading, message }.render())
}

/// RP-Initiated Logout 1.0
///
/// Ends the device the ID token names and returns to the app (with `state`), or shows a page.
#[utoipa::path(
    get,
    path = "/oauth/logout",
    tag = "oauth",
    params(LogoutRequest),
    responses(super::openapi::answers::LogoutAnswers)
)]
pub async fn logout_get(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<LogoutRequest>,
) -> HttpResponse {
    logout(state, req, query.into_inner()).await
}

/// RP-Initiated Logout 1.0, as a form
///
/// As the GET.
#[utoipa::path(post, path = "/oauth/logout", tag = "oauth",
    request_body(content = LogoutRequest, content_type = "application/x-www-form-urlencoded"),
    responses(super::openapi::answers::LogoutAnswers))]
pub async fn logout_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LogoutRequest>,
) -> HttpResponse {
    logout(state, req, form.into_inner()).await
}

async fn logout(state: web::Data<AppState>, req: HttpRequest, request: LogoutRequest) -> HttpResponse {
    let now = crate::clock::now();
    let hint = request
        .id_token_hint
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(|h| id_token::verify_hint(&state.keys, state.settings.issuer(), h, now));
    let hint = match hint {
        None => None,
        Some(Some(hint)) => Some(hint),
        Some(None) => {
            return signed_out(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "The app sent a sign-out request idbridge cannot check. Go back to the app.",
            )
        }
    };
    let client_id = request.client_id.clone().filter(|c| !c.is_empty());
    if let (Some(hint), Some(client_id)) = (&hint, &client_id) {
        if &hint.aud != client_id {
            return signed_out(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "The sign-out request names two apps.",
            );
        }
    }
    let client =
        client_id.or_else(|| hint.as_ref().map(|h| h.aud.clone())).and_then(|id| state.clients.get(&id));
    let redirect = match request.post_logout_redirect_uri.as_deref().filter(|u| !u.is_empty()) {
        None => None,
        Some(uri) => match &client {
            Some(client) if client.post_logout_redirect_uris.iter().any(|r| r == uri) => {
                Some(uri.to_string())
            }
            _ => {
                return signed_out(
                    StatusCode::BAD_REQUEST,
                    "Sign-out failed",
                    "The app asked to return to an address it has not registered.",
                )
            }
        },
    };
    if let Some(hint) = &hint {
        let (Some(user), Some(device)) = (UserId::parse(&hint.sub), DeviceId::parse(&hint.sid)) else {
            return signed_out(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "The sign-out request is malformed.",
            );
        };
        let by = Requester::new(Actor::Client(hint.aud.clone()), origin(&req));
        let ended = service::devices::end(
            &state.db,
            &device,
            &Owner::User(user),
            &by,
            AuditAction::DeviceRevoke,
            Some("rp-initiated logout"),
        )
        .await;
        if let Err(e) = ended {
            tracing::warn!(error = %e, "cannot end a device at logout");
            return signed_out(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-out failed",
                "idbridge cannot sign you out right now. Try again shortly.",
            );
        }
    }
    match redirect {
        Some(uri) => {
            let mut url = match url::Url::parse(&uri) {
                Ok(url) => url,
                Err(_) => {
                    return signed_out(
                        StatusCode::BAD_REQUEST,
                        "Sign-out failed",
                        "The return address is not valid.",
                    )
                }
            };
            if let Some(s) = request.state.as_deref().filter(|s| !s.is_empty() && s.len() <= 2048) {
                url.query_pairs_mut().append_pair("state", s);
            }
            HttpResponse::Found()
                .insert_header((header::LOCATION, url.to_string()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        None => signed_out(
            StatusCode::OK,
            "Signed out",
            "You are signed out of the app. You can close this page.",
        ),
    }
}
