//! `/events`: what providers push about their accounts (API.md, "Session events"). Each
//! handler checks the provider's signature (`providers::events`), then calls one use case of
//! `service::events`. A refused event changes nothing: `400` with RFC 8935's
//! `{"err", "description"}` (`503` when the provider's keys cannot be fetched).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::auth::origin;
use super::authorize::page;
use crate::providers::events::{EventRefused, FacebookRequest};
use crate::service;
use crate::state::AppState;

fn refused(state: &AppState, provider: &str, e: EventRefused) -> HttpResponse {
    state.metrics.provider_events.with_label_values(&[provider, "-", "refused"]).inc();
    let status = if e.unavailable { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_REQUEST };
    tracing::info!(provider, err = e.code, description = %e.description, "a provider event is refused");
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "err": e.code, "description": e.description }))
}

fn failed(e: crate::db::DbError) -> HttpResponse {
    tracing::warn!(error = %e, "cannot act on a provider event");
    HttpResponse::ServiceUnavailable()
        .json(json!({ "err": "temporarily_unavailable", "description": "try again later" }))
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

/// `POST /events/google`: a RISC Security Event Token (RFC 8935 push). `202`.
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

#[derive(Deserialize)]
pub struct SignedRequestForm {
    signed_request: Option<String>,
}

/// Facebook's `signed_request`, checked.
fn signed_request(state: &AppState, form: &SignedRequestForm) -> Result<FacebookRequest, EventRefused> {
    state.providers.verify_signed_request(form.signed_request.as_deref().unwrap_or_default())
}

/// `POST /events/facebook/deauthorize`: the person removed the app. `200`.
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
    acted(&state, "facebook", outcome, HttpResponse::Ok().json(json!({})))
}

/// `POST /events/facebook/data-deletion`: delete the person's data; answer where they can see
/// the request's status, and its confirmation code.
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
            let ok = HttpResponse::Ok().json(json!({ "url": url, "confirmation_code": code }));
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

/// `GET /events/facebook/data-deletion/{code}`: the request's status, for the person (HTML)
/// or a program (`Accept: application/json`).
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
                    .json(json!({ "err": "not_found", "description": "no such request" }))
            }
            Ok(None) => return page(
                StatusCode::NOT_FOUND,
                Ok("<!doctype html><title>Not found</title><p>There is no deletion request with this code."
                    .into()),
            ),
            Err(e) => return failed(e),
        };
    if wants_json {
        return HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
            "confirmation_code": status.code, "status": "completed", "outcome": status.outcome,
            "requested_at": status.created_at,
        }));
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(status.created_at.max(0) as u64);
    let received = humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', "");
    page(StatusCode::OK, DeletionPage { code: &status.code, outcome: &status.outcome, received }.render())
}

#[derive(Deserialize)]
pub struct AppleNotification {
    payload: Option<String>,
}

/// `POST /events/apple`: Apple's server-to-server notification. `200`.
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
    acted(&state, "apple", outcome, HttpResponse::Ok().json(json!({})))
}
