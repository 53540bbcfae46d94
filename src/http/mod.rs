//! HTTP: the route table, body limits, error mapping and the request log.
//! Each route names its handler; each handler calls one domain function.

pub mod auth;
pub mod dev;
pub mod errors;
pub mod me;
pub mod oauth;
pub mod ops;
pub mod wellknown;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::UrlencodedError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use tracing::Instrument;

use errors::{OAuthError, Problem};

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig, dev_enabled: bool) {
    cfg.app_data(form_config())
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/.well-known/openid-configuration", web::get().to(wellknown::openid_configuration))
        .route("/.well-known/jwks.json", web::get().to(wellknown::jwks))
        .service(
            web::scope("/oauth")
                .route("/token", web::post().to(oauth::token))
                .route("/nonce", web::post().to(oauth::nonce))
                .route("/revoke", web::post().to(oauth::revoke))
                .route("/introspect", web::post().to(oauth::introspect)),
        )
        .service(
            web::scope("/v1")
                .route("/me", web::get().to(me::me))
                .route("/me/devices", web::get().to(me::devices))
                .route("/me/devices/{id}", web::delete().to(me::revoke_device))
                .route("/me/logout-all", web::post().to(me::logout_all)),
        );
    if dev_enabled {
        cfg.route("/dev/id-token", web::post().to(dev::id_token));
    }
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found("no such endpoint"))
}

fn form_config() -> web::FormConfig {
    web::FormConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, _req| {
        let answer = match err {
            UrlencodedError::Overflow { .. } => OAuthError::payload_too_large(),
            UrlencodedError::ContentType => {
                OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
            }
            _ => OAuthError::invalid_request("the form body is malformed or repeats a parameter"),
        };
        answer.into()
    })
}

/// One line per request: method, route pattern (never the raw path or query), status,
/// latency and a request id, which is also returned as `x-request-id`.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let route = response.request().match_pattern().unwrap_or_else(|| "(unmatched)".to_string());
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    span.in_scope(|| tracing::info!(%method, %route, status, latency_us, "request"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
