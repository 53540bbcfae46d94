//! `/events`: what providers push about their accounts (API.md, "Session events"). Each
//! handler checks the provider's signature (`providers::events`), then calls one use case of
//! `service::events`. A refused event changes nothing: `400` with RFC 8935's
//! `{"err", "description"}` (`503` when the provider's keys cannot be fetched).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::auth::origin;
use super::authorize::page;
use crate::providers::events::{EventRefused, FacebookRequest};
use crate::service;
use crate::state::AppState;

/// A refused or failed event (RFC 8935 §2.3).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventError<'a> {
    /// `invalid_request`, `invalid_key`, `invalid_issuer`, `invalid_audience`,
    /// `authentication_failed`, `not_found` or `temporarily_unavailable`
    #[schema(value_type = String)]
    err: &'a str,
    #[schema(value_type = String)]
    description: &'a str,
}

/// A data-deletion request's status.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeletionStatus {
    confirmation_code: String,
    /// `completed`
    status: &'static str,
    /// `deleted` or `unlinked`
    outcome: String,
    /// Unix seconds
    requested_at: i64,
}

/// Where the person sees a data-deletion request's status.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeletionReceipt {
    url: String,
    confirmation_code: String,
}

/// Done; the body is empty JSON.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Done {}

fn refused(state: &AppState, provider: &str, e: EventRefused) -> HttpResponse {
    state.metrics.provider_events.with_label_values(&[provider, "-", "refused"]).inc();
    let status = if e.unavailable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
    tracing::info!(provider, err = e.code, description = %e.description, "a provider event is refused");
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(EventError { err: e.code, description: &e.description })
}

fn failed(e: crate::db::DbError) -> HttpResponse {
    tracing::warn!(error = %e, "cannot act on a provider event");
    HttpResponse::ServiceUnavailable()
        .json(EventError { err: "temporarily_unavailable", description: "try again later" })
}

/// The answer to an event once it was acted on (`ok`), or 503 when it could not be.
fn acted(
    state: &AppState,
    provider: &str,
    outcome: Result<service::events::Applied, crate::db::DbError>,
    ok: HttpResponse,
) -> HttpResponse {
    let label = match outcome {
        Ok(service::events::Applied::Done) => "applied",
        Ok(service::events::Applied::Replayed) => "replayed",
        Err(e) => return failed(e),
    };
    state.metrics.provider_events.with_label_values(&[provider, "-", label]).inc();
    ok
}

/// Google Cross-Account Protection (RISC)
///
/// A Security Event Token (RFC 8417, pushed per RFC 8935) signed with the keys of
/// `{google issuer}/.well-known/risc-configuration`: `aud` one of Google's client_ids, `iat`
/// within the hour, `jti` single use. sessions-revoked, tokens-revoked and account-disabled end
/// the identity's devices (hijacking also refuses its sign-in until account-enabled).
#[utoipa::path(post, path = "/events/google", tag = "events",
    request_body(description = "The SET, a compact JWS (RFC 8935 §2: `application/secevent+jwt`; the body is read whatever its type)",
        content((String = "application/secevent+jwt"), (String = "text/plain"))),
    responses((status = 202, description = "Accepted (a replay too, without a new effect)"),
        super::openapi::answers::EventAnswers))]
pub async fn google(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(risc) = state.providers.risc.as_ref() else {
        return refused(&state, "google", EventRefused::invalid("Google is not configured"));
    };
    let Ok(token) = std::str::from_utf8(&body) else {
        return refused(&state, "google", EventRefused::invalid("the body is not a JWT"));
    };
    let set = match risc.verify(token.trim()).await {
        Ok(set) => set,
        Err(e) => return refused(&state, "google", e),
    };
    let outcome = service::events::google_risc(&state, set, origin(&req)).await;
    acted(&state, "google", outcome, HttpResponse::Accepted().finish())
}

/// Facebook's callback form.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignedRequestForm {
    /// `base64url(signature).base64url(payload)`, HMAC-SHA256 with the app secret
    #[schema(required = true, min_length = 1)]
    signed_request: Option<String>,
}

/// Facebook's `signed_request`, checked.
fn signed_request(state: &AppState, form: &SignedRequestForm) -> Result<FacebookRequest, EventRefused> {
    state.providers.verify_signed_request(form.signed_request.as_deref().unwrap_or_default())
}

/// Facebook's Deauthorize Callback
///
/// The person removed the app: every device of that identity's user ends.
#[utoipa::path(post, path = "/events/facebook/deauthorize", tag = "events",
    request_body(content = SignedRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Done (a replay too, without a new effect)", body = Done),
        super::openapi::answers::EventAnswers))]
pub async fn facebook_deauthorize(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SignedRequestForm>,
) -> HttpResponse {
    let request = match signed_request(&state, &form) {
        Ok(request) => request,
        Err(e) => return refused(&state, "facebook", e),
    };
    let outcome = service::events::facebook_deauthorize(&state, request, origin(&req)).await;
    acted(&state, "facebook", outcome, HttpResponse::Ok().json(Done {}))
}

/// Facebook's Data Deletion Request Callback
///
/// Deletes the person's data: the user when Facebook is their only identity, else the identity
/// is unlinked and the devices end. Answers where they can see the request's status.
#[utoipa::path(post, path = "/events/facebook/data-deletion", tag = "events",
    request_body(content = SignedRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The status page and confirmation code", body = DeletionReceipt),
        super::openapi::answers::EventAnswers))]
pub async fn facebook_data_deletion(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<SignedRequestForm>,
) -> HttpResponse {
    let request = match signed_request(&state, &form) {
        Ok(request) => request,
        Err(e) => return refused(&state, "facebook", e),
    };
    match service::events::facebook_data_deletion(&state, request, origin(&req)).await {
        Ok(code) => {
            let url = format!("{}/events/facebook/data-deletion/{code}", state.settings.issuer());
            let ok = HttpResponse::Ok().json(DeletionReceipt { url, confirmation_code: code });
            acted(&state, "facebook", Ok(service::events::Applied::Done), ok)
        }
        Err(e) => failed(e),
    }
}

#[derive(Template)]
#[template(path = "events/deletion.html")]
struct DeletionPage<'a> {
    code: &'a str,
    outcome: &'a str,
    received: String,
}

/// A data-deletion request's status
///
/// HTML for the person, JSON with `Accept: application/json`.
#[utoipa::path(get, path = "/events/facebook/data-deletion/{code}", tag = "events",
    params(("code" = String, Path, description = "The confirmation code")),
    responses(super::openapi::answers::DeletionStatusAnswers))]
pub async fn deletion_status(
    state: web::Data<AppState>,
    req: HttpRequest,
    code: web::Path<String>,
) -> HttpResponse {
    let code = code.into_inner();
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let found =
        if code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            service::events::deletion_status(&state, code).await
        } else {
            Ok(None)
        };
    let status =
        match found {
            Ok(Some(status)) => status,
            Ok(None) if wants_json => {
                return HttpResponse::NotFound()
                    .json(EventError { err: "not_found", description: "no such request" })
            }
            Ok(None) => return page(
                StatusCode::NOT_FOUND,
                Ok("<!doctype html><title>Not found</title><p>There is no deletion request with this code."
                    .into()),
            ),
            Err(e) => return failed(e),
        };
    if wants_json {
        return HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(DeletionStatus {
            confirmation_code: status.code,
            status: "completed",
            outcome: status.outcome,
            requested_at: status.created_at,
        });
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(status.created_at.max(0) as u64);
    let received = humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', "");
    page(StatusCode::OK, DeletionPage { code: &status.code, outcome: &status.outcome, received }.render())
}

/// Apple's server-to-server notification.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AppleNotification {
    /// The notification, a JWT signed by Apple
    #[schema(required = true, min_length = 1)]
    payload: Option<String>,
}

/// Sign in with Apple's server-to-server notifications
///
/// `{"payload": JWT}` signed by Apple (`iss`, `aud` one of client_ids): consent-revoked ends the
/// devices, account-delete deletes or unlinks, email-disabled/enabled are recorded.
#[utoipa::path(post, path = "/events/apple", tag = "events",
    request_body(content = AppleNotification, content_type = "application/json"),
    responses((status = 200, description = "Done (a replay too, without a new effect)", body = Done),
        super::openapi::answers::EventAnswers))]
pub async fn apple(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<AppleNotification>,
) -> HttpResponse {
    let payload = body.into_inner().payload.unwrap_or_default();
    let notification = match state.providers.verify_apple_notification(&payload).await {
        Ok(notification) => notification,
        Err(e) => return refused(&state, "apple", e),
    };
    let outcome = service::events::apple(&state, notification, origin(&req)).await;
    acted(&state, "apple", outcome, HttpResponse::Ok().json(Done {}))
}
